//! The trust-on-first-use key pin store, in the gateway's database (SQLite or Postgres).
//!
//! One pin per (tool, publisher domain). A key is pinned only with a [`VerifiedKey`], the proof
//! that a signature made with it verified: SchemaPin's own SDKs pin a key before checking a
//! signature with it, which lets a forged first contact pin the forger's key. After that, the
//! pinned key is the only one accepted for the tool until a person rotates or removes the pin.
//!
//! Every change is logged as an audit event (`target=audit`); the audit issue turns these into
//! signed, chained records.

use sqlx::{AnyPool, Row};
use verifier::signature::{self, VerifiedKey};

/// Why the pin store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    #[error("pin store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("pin store: the key pinned for {tool_id} ({domain}) cannot be encoded")]
    Encode { tool_id: String, domain: String },
}

/// A pinned key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyPin {
    pub tool_id: String,
    pub domain: String,
    pub fingerprint: String,
    pub public_key_pem: String,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds of the last signature that verified with this key.
    pub last_verified: i64,
    /// Who approved the pin: a person (`pins add`/`rotate`), or none for trust on first use.
    pub approved_by: Option<String>,
}

/// What [`PinStore::check_and_pin`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// No key was pinned for this tool and domain; this one now is.
    PinnedNew,
    /// This key was already pinned; its last-verified time is updated.
    Matches,
    /// A different key is pinned; nothing changed. The caller must reject the tool.
    Mismatch { pinned_fingerprint: String },
}

/// The pin store over the gateway's database; its tables come from the gateway's migrations.
#[derive(Clone)]
pub struct PinStore {
    pool: AnyPool,
}

impl PinStore {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// The pin of a tool and domain, if any.
    pub async fn get(&self, tool_id: &str, domain: &str) -> Result<Option<KeyPin>, PinError> {
        let row = sqlx::query(
            "SELECT tool_id, domain, fingerprint, public_key_pem, first_seen, last_verified, approved_by \
             FROM key_pins WHERE tool_id = $1 AND domain = $2",
        )
        .bind(tool_id)
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| pin_from_row(&row)).transpose()
    }

    /// Every pin, ordered by tool and domain.
    pub async fn list(&self) -> Result<Vec<KeyPin>, PinError> {
        let rows = sqlx::query(
            "SELECT tool_id, domain, fingerprint, public_key_pem, first_seen, last_verified, approved_by \
             FROM key_pins ORDER BY tool_id, domain",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pin_from_row).collect()
    }

    /// Trust on first use: pins `verified` if nothing is pinned for this tool and domain, accepts
    /// it if it is the pinned key, and refuses (changing nothing) if another key is pinned.
    pub async fn check_and_pin(
        &self,
        tool_id: &str,
        domain: &str,
        verified: &VerifiedKey,
    ) -> Result<PinOutcome, PinError> {
        let pem = self.pem(tool_id, domain, verified)?;
        let now = crate::db::now();
        // Insert-if-absent is one statement, so two replicas seeing a tool at once cannot both
        // pin different keys: one insert wins and the other reads the winner below.
        let inserted = sqlx::query(
            "INSERT INTO key_pins (tool_id, domain, fingerprint, public_key_pem, first_seen, last_verified, approved_by) \
             VALUES ($1, $2, $3, $4, $5, $5, NULL) ON CONFLICT (tool_id, domain) DO NOTHING",
        )
        .bind(tool_id)
        .bind(domain)
        .bind(verified.fingerprint())
        .bind(&pem)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            audit("pin added", tool_id, domain, verified.fingerprint(), None);
            return Ok(PinOutcome::PinnedNew);
        }
        let Some(pinned) = self.get(tool_id, domain).await? else {
            // Removed between the two statements: try again from the start.
            return Box::pin(self.check_and_pin(tool_id, domain, verified)).await;
        };
        if pinned.fingerprint != verified.fingerprint() {
            return Ok(PinOutcome::Mismatch {
                pinned_fingerprint: pinned.fingerprint,
            });
        }
        sqlx::query("UPDATE key_pins SET last_verified = $1 WHERE tool_id = $2 AND domain = $3")
            .bind(now)
            .bind(tool_id)
            .bind(domain)
            .execute(&self.pool)
            .await?;
        Ok(PinOutcome::Matches)
    }

    /// A person pins (or re-pins) a key for a tool and domain, replacing any pinned key.
    pub async fn set(
        &self,
        tool_id: &str,
        domain: &str,
        verified: &VerifiedKey,
        approved_by: &str,
    ) -> Result<Option<KeyPin>, PinError> {
        let previous = self.get(tool_id, domain).await?;
        let pem = self.pem(tool_id, domain, verified)?;
        let now = crate::db::now();
        sqlx::query(
            "INSERT INTO key_pins (tool_id, domain, fingerprint, public_key_pem, first_seen, last_verified, approved_by) \
             VALUES ($1, $2, $3, $4, $5, $5, $6) \
             ON CONFLICT (tool_id, domain) DO UPDATE SET fingerprint = $3, public_key_pem = $4, \
             first_seen = $5, last_verified = $5, approved_by = $6",
        )
        .bind(tool_id)
        .bind(domain)
        .bind(verified.fingerprint())
        .bind(&pem)
        .bind(now)
        .bind(approved_by)
        .execute(&self.pool)
        .await?;
        let event = if previous.is_some() {
            "pin rotated"
        } else {
            "pin added"
        };
        audit(
            event,
            tool_id,
            domain,
            verified.fingerprint(),
            Some(approved_by),
        );
        Ok(previous)
    }

    /// Removes a pin; returns whether there was one.
    pub async fn remove(
        &self,
        tool_id: &str,
        domain: &str,
        removed_by: &str,
    ) -> Result<bool, PinError> {
        let removed = sqlx::query("DELETE FROM key_pins WHERE tool_id = $1 AND domain = $2")
            .bind(tool_id)
            .bind(domain)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0;
        if removed {
            audit("pin removed", tool_id, domain, "", Some(removed_by));
        }
        Ok(removed)
    }

    fn pem(&self, tool_id: &str, domain: &str, verified: &VerifiedKey) -> Result<String, PinError> {
        signature::public_key_to_pem(verified.key()).map_err(|_| PinError::Encode {
            tool_id: tool_id.to_owned(),
            domain: domain.to_owned(),
        })
    }
}

fn pin_from_row(row: &sqlx::any::AnyRow) -> Result<KeyPin, PinError> {
    Ok(KeyPin {
        tool_id: row.try_get("tool_id")?,
        domain: row.try_get("domain")?,
        fingerprint: row.try_get("fingerprint")?,
        public_key_pem: row.try_get("public_key_pem")?,
        first_seen: row.try_get("first_seen")?,
        last_verified: row.try_get("last_verified")?,
        approved_by: row.try_get("approved_by")?,
    })
}

fn audit(event: &str, tool_id: &str, domain: &str, fingerprint: &str, by: Option<&str>) {
    tracing::info!(target: "audit", event, tool_id, domain, fingerprint, by, "key pin changed");
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;

    use super::*;

    fn verified(seed: u8) -> VerifiedKey {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        let key = SigningKey::from_slice(&bytes).unwrap();
        let hash = signature::schema_hash("{}");
        let sig = signature::sign(&hash, &key);
        signature::verify_proof(&hash, &sig, key.verifying_key(), false).unwrap()
    }

    async fn store(url: &str) -> PinStore {
        PinStore::new(crate::db::migrated_pool(url).await)
    }

    async fn trust_on_first_use(store: PinStore, tool: &str) {
        let (first, other) = (verified(1), verified(2));
        assert_eq!(store.get(tool, "example.com").await.unwrap(), None);
        assert_eq!(
            store
                .check_and_pin(tool, "example.com", &first)
                .await
                .unwrap(),
            PinOutcome::PinnedNew
        );
        assert_eq!(
            store
                .check_and_pin(tool, "example.com", &first)
                .await
                .unwrap(),
            PinOutcome::Matches
        );
        // A different key for the same tool and domain changes nothing.
        assert_eq!(
            store
                .check_and_pin(tool, "example.com", &other)
                .await
                .unwrap(),
            PinOutcome::Mismatch {
                pinned_fingerprint: first.fingerprint().to_owned()
            }
        );
        let pin = store.get(tool, "example.com").await.unwrap().unwrap();
        assert_eq!(pin.fingerprint, first.fingerprint());
        assert_eq!(pin.approved_by, None);
        // The same tool under another domain is another pin.
        assert_eq!(
            store
                .check_and_pin(tool, "other.example", &other)
                .await
                .unwrap(),
            PinOutcome::PinnedNew
        );
        // A person rotates the key; the old one is refused from then on.
        let previous = store
            .set(tool, "example.com", &other, "alice")
            .await
            .unwrap();
        assert_eq!(
            previous.map(|p| p.fingerprint),
            Some(first.fingerprint().to_owned())
        );
        assert!(matches!(
            store
                .check_and_pin(tool, "example.com", &first)
                .await
                .unwrap(),
            PinOutcome::Mismatch { .. }
        ));
        assert_eq!(
            store
                .get(tool, "example.com")
                .await
                .unwrap()
                .unwrap()
                .approved_by
                .as_deref(),
            Some("alice")
        );
        assert!(store.remove(tool, "example.com", "alice").await.unwrap());
        assert!(!store.remove(tool, "example.com", "alice").await.unwrap());
        assert!(store.remove(tool, "other.example", "alice").await.unwrap());
    }

    #[tokio::test]
    async fn sqlite_trust_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("pins.db").display());
        trust_on_first_use(store(&url).await, "calculate_sum").await;
    }

    #[tokio::test]
    async fn postgres_trust_on_first_use() {
        // Runs when the test command provides a database (it does in CI).
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!("skipped: TEST_DATABASE_URL is not set");
            return;
        };
        // A tool id of its own, so concurrent runs against one database do not collide.
        let tool = format!("pins-test-{}", std::process::id());
        trust_on_first_use(store(&url).await, &tool).await;
    }
}
