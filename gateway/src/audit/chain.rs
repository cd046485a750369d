//! The integrity of the audit trail, with no I/O: how records are chained and checkpoints
//! signed, and how a stored trail is checked.
//!
//! Each writer (one gateway process, one `writer` id) keeps its own chain. A record's hash is
//! SHA-256 over the previous record's hash (32 zero bytes for the first) followed by the
//! record's canonical JSON, so changing, removing or reordering any record breaks every hash
//! after it. Each group commit ends with a checkpoint: the writer, the sequence number and hash
//! of its last record, signed with the gateway's Ed25519 key. Rewriting records and their hashes
//! (a forged record with a valid-looking hash) then disagrees with a signed checkpoint, and
//! removing the newest records leaves a checkpoint that points past the end.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The hash before a writer's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// What a checkpoint signature covers, after this domain separator.
const CHECKPOINT_CONTEXT: &[u8] = b"mcp-gateway audit checkpoint v1\0";

/// The hash of a record with canonical JSON `body` following a record with hash `prev`.
pub fn link(prev: &[u8; 32], body: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(body.as_bytes());
    hasher.finalize().into()
}

fn checkpoint_message(writer: &str, seq: i64, hash: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + writer.len() + 41);
    message.extend_from_slice(CHECKPOINT_CONTEXT);
    message.extend_from_slice(writer.as_bytes());
    message.push(0);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    message
}

/// Signs the checkpoint of `writer` at `seq`, whose record has `hash`.
pub fn sign_checkpoint(key: &SigningKey, writer: &str, seq: i64, hash: &[u8; 32]) -> String {
    hex::encode(key.sign(&checkpoint_message(writer, seq, hash)).to_bytes())
}

/// `N` bytes from their lowercase hex (a record hash is `unhex::<32>`).
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// One stored record, as read back.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Shared by every record of a chain.
    pub writer: std::sync::Arc<str>,
    pub seq: i64,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// One stored checkpoint; also the form of an anchor (`mcp-gateway audit anchor`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredCheckpoint {
    pub writer: String,
    pub seq: i64,
    pub hash: String,
    pub signature: String,
}

/// The first problem found in one writer's trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// The record's body or hash was changed: its hash is not that of its contents.
    Modified { writer: String, seq: i64 },
    /// A sequence number is missing: the record was deleted.
    Missing { writer: String, seq: i64 },
    /// The record does not follow the one before it (records were reordered, or the one
    /// before was replaced).
    Unlinked { writer: String, seq: i64 },
    /// The records up to `seq` were rewritten with hashes that chain (a forgery): the signed
    /// checkpoint at `seq` names another hash. The forged record is after `after`.
    Forged {
        writer: String,
        after: i64,
        seq: i64,
    },
    /// A checkpoint's signature does not verify with the key.
    BadCheckpoint { writer: String, seq: i64 },
    /// Records after `last` were removed: a checkpoint points to `seq`.
    Truncated { writer: String, last: i64, seq: i64 },
    /// Records from `seq` on are covered by no signed checkpoint. The gateway stores every
    /// record in the same transaction as a checkpoint that covers it, so these were added
    /// by someone else.
    Unsigned { writer: String, seq: i64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Modified { writer, seq } => {
                write!(
                    f,
                    "record {writer}#{seq} was modified: its hash does not match its contents"
                )
            }
            Self::Missing { writer, seq } => {
                write!(f, "record {writer}#{seq} is missing (deleted)")
            }
            Self::Unlinked { writer, seq } => write!(
                f,
                "record {writer}#{seq} does not follow record #{}: records were reordered or replaced",
                seq - 1
            ),
            Self::Forged { writer, after, seq } => write!(
                f,
                "records {writer}#{}..#{seq} were rewritten: the signed checkpoint at #{seq} names another hash",
                after + 1
            ),
            Self::BadCheckpoint { writer, seq } => {
                write!(
                    f,
                    "the checkpoint at {writer}#{seq} is not signed by the audit key"
                )
            }
            Self::Unsigned { writer, seq } => write!(
                f,
                "records {writer}#{seq} and after are covered by no signed checkpoint: they were added by something other than the gateway"
            ),
            Self::Truncated { writer, last, seq } => write!(
                f,
                "the trail of {writer} was truncated: it ends at #{last}, but a checkpoint or anchor names #{seq}"
            ),
        }
    }
}

/// Checks one writer's records (in `seq` order) against its checkpoints (in `seq` order) and the
/// audit public key. Returns the number of records checked, or the first problem.
///
/// `base` is where a chain cut by retention starts: its records after `base.0` follow a record
/// with hash `base.1` (hex). Records and checkpoints up to the base are not checked (they are
/// in the retention's archive; a failed deletion may have left some).
pub fn verify_writer(
    records: impl IntoIterator<Item = StoredRecord>,
    checkpoints: &[StoredCheckpoint],
    key: &VerifyingKey,
    base: Option<(i64, &str)>,
) -> Result<u64, Problem> {
    let (mut prev, mut expected) = match base {
        Some((seq, hash)) => (unhex::<32>(hash).unwrap_or(GENESIS), seq + 1),
        None => (GENESIS, 1i64),
    };
    let start = expected;
    let mut checkpoints = checkpoints.iter().skip_while(|c| c.seq < start).peekable();
    let mut last_good_checkpoint = start - 1;
    let mut writer_name = String::new();
    for record in records.into_iter().skip_while(|r| r.seq < start) {
        let writer = || record.writer.to_string();
        writer_name = record.writer.to_string();
        if record.seq != expected {
            return Err(if record.seq > expected {
                Problem::Missing {
                    writer: writer(),
                    seq: expected,
                }
            } else {
                Problem::Unlinked {
                    writer: writer(),
                    seq: record.seq,
                }
            });
        }
        if unhex::<32>(&record.prev_hash) != Some(prev) {
            return Err(Problem::Unlinked {
                writer: writer(),
                seq: record.seq,
            });
        }
        let hash = link(&prev, &record.body);
        if unhex::<32>(&record.hash) != Some(hash) {
            return Err(Problem::Modified {
                writer: writer(),
                seq: record.seq,
            });
        }
        while let Some(checkpoint) = checkpoints.next_if(|c| c.seq <= record.seq) {
            check_signature(checkpoint, key)?;
            if checkpoint.seq == record.seq && unhex::<32>(&checkpoint.hash) != Some(hash) {
                return Err(Problem::Forged {
                    writer: writer(),
                    after: last_good_checkpoint,
                    seq: record.seq,
                });
            }
            last_good_checkpoint = checkpoint.seq;
        }
        prev = hash;
        expected += 1;
    }
    // Checkpoints past the last record: the newest one says how far the trail reached.
    let dangling: Vec<&StoredCheckpoint> = checkpoints.collect();
    for checkpoint in &dangling {
        check_signature(checkpoint, key)?;
    }
    if let Some(checkpoint) = dangling.last() {
        return Err(Problem::Truncated {
            writer: if writer_name.is_empty() {
                checkpoint.writer.clone()
            } else {
                writer_name
            },
            last: expected - 1,
            seq: checkpoint.seq,
        });
    }
    if last_good_checkpoint < expected - 1 {
        return Err(Problem::Unsigned {
            writer: writer_name,
            seq: last_good_checkpoint + 1,
        });
    }
    Ok((expected - start) as u64)
}

fn check_signature(checkpoint: &StoredCheckpoint, key: &VerifyingKey) -> Result<(), Problem> {
    let bad = || Problem::BadCheckpoint {
        writer: checkpoint.writer.clone(),
        seq: checkpoint.seq,
    };
    let hash = unhex::<32>(&checkpoint.hash).ok_or_else(bad)?;
    let signature = unhex::<64>(&checkpoint.signature).ok_or_else(bad)?;
    key.verify(
        &checkpoint_message(&checkpoint.writer, checkpoint.seq, &hash),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn unhex_reads_exactly_n_bytes_of_hex_digits() {
        let hash = link(&GENESIS, "{}");
        assert_eq!(unhex::<32>(&hex::encode(hash)), Some(hash));
        assert_eq!(unhex::<2>("0aFf"), Some([0x0a, 0xff]));
        // `u8::from_str_radix` took a sign; a stored hash never has one.
        assert_eq!(unhex::<2>("+a0a"), None);
        assert_eq!(unhex::<2>("0a0"), None);
        assert_eq!(unhex::<2>("0a0a0a"), None);
        assert_eq!(unhex::<1>("zz"), None);
    }

    /// A trail of `n` records, checkpointed after every `every` records and at the end.
    fn trail(n: i64, every: i64) -> (Vec<StoredRecord>, Vec<StoredCheckpoint>) {
        let key = key();
        let mut prev = GENESIS;
        let mut records = Vec::new();
        let mut checkpoints = Vec::new();
        for seq in 1..=n {
            let body = format!("{{\"n\":{seq}}}");
            let hash = link(&prev, &body);
            records.push(StoredRecord {
                writer: "w".into(),
                seq,
                body,
                prev_hash: hex::encode(prev),
                hash: hex::encode(hash),
            });
            if seq % every == 0 || seq == n {
                checkpoints.push(StoredCheckpoint {
                    writer: "w".into(),
                    seq,
                    hash: hex::encode(hash),
                    signature: sign_checkpoint(&key, "w", seq, &hash),
                });
            }
            prev = hash;
        }
        (records, checkpoints)
    }

    fn verify(
        records: Vec<StoredRecord>,
        checkpoints: &[StoredCheckpoint],
    ) -> Result<u64, Problem> {
        verify_writer(records, checkpoints, &key().verifying_key(), None)
    }

    #[test]
    fn an_untouched_trail_verifies() {
        let (records, checkpoints) = trail(10, 3);
        assert_eq!(verify(records, &checkpoints), Ok(10));
        assert_eq!(verify(Vec::new(), &[]), Ok(0));
    }

    #[test]
    fn each_kind_of_tampering_names_its_record() {
        let w = || "w".to_owned();
        let (records, checkpoints) = trail(10, 3);

        let mut edited = records.clone();
        edited[4].body = "{\"n\":500}".into();
        assert_eq!(
            verify(edited, &checkpoints),
            Err(Problem::Modified {
                writer: w(),
                seq: 5
            })
        );

        let mut deleted = records.clone();
        deleted.remove(6);
        assert_eq!(
            verify(deleted, &checkpoints),
            Err(Problem::Missing {
                writer: w(),
                seq: 7
            })
        );

        // Swapping two records' contents (keeping the sequence numbers in place).
        let mut reordered = records.clone();
        let (a, b) = (reordered[3].clone(), reordered[4].clone());
        reordered[3] = StoredRecord { seq: 4, ..b };
        reordered[4] = StoredRecord { seq: 5, ..a };
        assert_eq!(
            verify(reordered, &checkpoints),
            Err(Problem::Unlinked {
                writer: w(),
                seq: 4
            })
        );

        let mut truncated = records.clone();
        truncated.truncate(8);
        assert_eq!(
            verify(truncated, &checkpoints),
            Err(Problem::Truncated {
                writer: w(),
                last: 8,
                seq: 10
            })
        );

        // A forger rewrites record 5 and re-chains every hash after it, but cannot sign.
        let mut forged = records.clone();
        let mut prev = unhex::<32>(&forged[3].hash).unwrap();
        forged[4].body = "{\"n\":\"forged\"}".into();
        for record in forged.iter_mut().skip(4) {
            record.prev_hash = hex::encode(prev);
            prev = link(&prev, &record.body);
            record.hash = hex::encode(prev);
        }
        assert_eq!(
            verify(forged, &checkpoints),
            Err(Problem::Forged {
                writer: w(),
                after: 3,
                seq: 6
            })
        );

        // A forger appends a record that links to the last one, but cannot sign a checkpoint.
        let mut appended = records.clone();
        let prev = unhex::<32>(&appended[9].hash).unwrap();
        let body = "{\"n\":\"appended\"}".to_owned();
        appended.push(StoredRecord {
            writer: "w".into(),
            seq: 11,
            prev_hash: hex::encode(prev),
            hash: hex::encode(link(&prev, &body)),
            body,
        });
        assert_eq!(
            verify(appended, &checkpoints),
            Err(Problem::Unsigned {
                writer: w(),
                seq: 11
            })
        );

        let mut bad_signature = checkpoints.clone();
        bad_signature[1].signature =
            sign_checkpoint(&SigningKey::from_bytes(&[8; 32]), "w", 6, &[1; 32]);
        assert_eq!(
            verify(records, &bad_signature),
            Err(Problem::BadCheckpoint {
                writer: w(),
                seq: 6
            })
        );
    }
}
