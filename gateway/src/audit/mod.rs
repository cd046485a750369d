//! The audit trail: one record per decision and per outcome, hash-chained, signed, durable.
//!
//! `chain.rs` says how records are linked and checked (no I/O), `writer.rs` appends them in
//! group commits. This module builds the records the gateway writes and reads the trail back
//! for `mcp-gateway audit ...`.
//!
//! Each gateway process is one writer with a chain of its own (`gw-<uuid>`), so replicas
//! sharing a database never contend for one chain, and a restart starts a new one.

pub mod chain;
pub mod live;
pub mod retention;
pub mod writer;

use std::{collections::BTreeMap, path::Path};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

use self::chain::{Problem, StoredCheckpoint, StoredRecord};
pub use self::writer::{AuditError, AuditLog};
use crate::{
    identity::Identity,
    policy::{Decision, Target},
};

/// Where the audit signing key lives in the data directory.
pub fn key_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("audit_ed25519.pem")
}

/// The audit trail of a running gateway.
pub struct Audit {
    pub log: AuditLog,
    pub public_key: VerifyingKey,
    /// Committed records, live, for `/admin/events`.
    pub live: std::sync::Arc<live::Live>,
}

impl Audit {
    /// Loads (or creates) the signing key in `data_dir` and starts this process's writer.
    pub async fn open(pool: AnyPool, data_dir: &Path) -> Result<Self, String> {
        let key = keys::material::load_or_create_ed25519(&key_path(data_dir))
            .map_err(|e| format!("audit key: {e}"))?;
        let public_key = key.verifying_key();
        let writer = format!("gw-{}", uuid::Uuid::new_v4());
        let live = std::sync::Arc::new(live::Live::default());
        let feed = live.clone();
        let log = AuditLog::start(pool, key, writer, move |records| feed.publish(records))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            log,
            public_key,
            live,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `sha256:<hex>` of the canonical JSON of `arguments`.
pub fn digest(arguments: &serde_json::Value) -> String {
    let canonical = writer::canonical(arguments).unwrap_or_else(|_| arguments.to_string());
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// A request's arguments, taken out of the request once: the value the checks and the records
/// read, and its digest, computed once. `into_request` hands them back for dispatch.
pub struct Arguments {
    value: serde_json::Value,
    digest: String,
    /// Whether the request had an `arguments` member at all.
    present: bool,
}

impl Arguments {
    pub fn new(arguments: Option<serde_json::Map<String, serde_json::Value>>) -> Self {
        let present = arguments.is_some();
        let value = serde_json::Value::Object(arguments.unwrap_or_default());
        Self {
            digest: digest(&value),
            value,
            present,
        }
    }

    /// The arguments, always a JSON object.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    pub fn map(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.value.as_object()
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The arguments as the request had them.
    pub fn into_request(self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match self.value {
            serde_json::Value::Object(map) if self.present => Some(map),
            _ => None,
        }
    }
}

/// `arguments` with the value at each path (`a.b.c`) replaced by `"[redacted]"`.
pub fn redact(arguments: &serde_json::Value, paths: &[String]) -> serde_json::Value {
    let mut out = arguments.clone();
    for path in paths {
        let mut node = &mut out;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let Some(object) = node.as_object_mut() else {
                break;
            };
            if parts.peek().is_none() {
                if let Some(value) = object.get_mut(part) {
                    *value = serde_json::Value::String("[redacted]".into());
                }
                break;
            }
            match object.get_mut(part) {
                Some(next) => node = next,
                None => break,
            }
        }
    }
    out
}

/// The record of a client session's start (an `initialize` handshake completed): who, over
/// which front door, and what the client said it is. Stateless 2026-07-28 requests have no
/// session and no such record.
pub fn session_record(
    who: &Identity,
    session: &str,
    client: Option<&rmcp::model::InitializeRequestParams>,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "session-start",
        "time": now_ms(),
        "client": who.client,
        "groups": who.groups,
        "via": who.via.as_str(),
        "session": session,
        "clientInfo": client.map(|c| serde_json::json!({
            "name": c.client_info.name,
            "version": c.client_info.version,
        })),
        "protocolVersion": client.map(|c| c.protocol_version.to_string()),
    })
}

/// The record of a list (`tools/list`, `resources/list`, `prompts/list`) answered while some
/// servers were unavailable: the client was shown part of what it may use. The outcome's
/// degradation is `partial-result`, and `unavailable` names the servers left out.
pub fn partial_list_record(
    who: &Identity,
    session: &str,
    method: &str,
    unavailable: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "kind": "outcome",
        "time": now_ms(),
        "client": who.client,
        "session": session,
        "method": method,
        "unavailable": unavailable,
        "outcome": {"status": "success", "degradation": "partial-result"},
    })
}

/// The record of a policy decision on a call: everything `audit replay` needs to decide it
/// again (the client and groups, the tool and its attributes, the arguments as the policy lets
/// them be recorded) and what was decided.
pub fn decision_record(
    who: &Identity,
    session: &str,
    method: &str,
    target: &Target<'_>,
    arguments: &Arguments,
    decision: &Decision,
) -> serde_json::Value {
    let mut record = serde_json::json!({
        "kind": "decision",
        "time": now_ms(),
        "client": who.client,
        "groups": who.groups,
        "via": who.via.as_str(),
        "session": session,
        "method": method,
        "server": target.server(),
        "decision": if decision.allowed { "allow" } else { "deny" },
        "policies": decision.policies,
        "conditions": decision.conditions,
        "argumentsDigest": arguments.digest(),
        "arguments": redact(arguments.value(), &decision.conditions.redact),
    });
    let fields = match target {
        Target::Tool {
            name,
            local,
            verification,
            annotations,
            ..
        } => serde_json::json!({
            "tool": name, "local": local, "verification": verification,
            "annotations": annotations,
        }),
        Target::Resource { uri, .. } => serde_json::json!({ "resource": uri }),
        Target::Prompt { name, local, .. } => serde_json::json!({ "prompt": name, "local": local }),
    };
    if let (Some(record), serde_json::Value::Object(fields)) = (record.as_object_mut(), fields) {
        record.extend(fields);
    }
    record
}

/// The outcome of a call, for the record that follows its decision.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `success`, `tool-error` (the tool answered `isError`), `error` (a JSON-RPC error) or
    /// `refused` (stopped by the gateway before dispatch).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_us: u64,
    pub result_bytes: u64,
    /// `timeout`, `rate-limited`, `upstream-unavailable`, `invalid-arguments`, ... or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degradation: Option<&'static str>,
}

/// What identifies a call, read or prompt in its outcome record.
pub struct CallFacts<'a> {
    /// `tools/call`, `resources/read` or `prompts/get`.
    pub method: &'a str,
    pub who: &'a Identity,
    pub session: &'a str,
    /// `digest` of the arguments, as in the decision record.
    pub arguments_digest: &'a str,
    /// The tool, resource or prompt as the client named it.
    pub target: &'a str,
    pub server: &'a str,
    /// The definition hash of a tool (empty for resources and prompts).
    pub definition_hash: &'a str,
    /// The isolation tier the server ran in, and the one its config asked for.
    pub tier: &'a str,
    pub tier_requested: &'a str,
    /// The sandbox that served it, for a stdio server.
    pub sandbox: Option<&'a SandboxFacts>,
}

/// The sandbox a call ran in: its id, which the runner's records (`kind: runner`) carry with
/// the sandbox's start, limit hits, denials, resource usage and exit, and what its runner
/// stopped or refused while the call ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SandboxFacts {
    pub id: String,
    pub notices: Vec<crate::upstream::launch::Notice>,
}

impl SandboxFacts {
    /// The degradation the notices amount to, the most telling first: a limit hit, a refusal,
    /// a timeout.
    pub fn degradation(&self) -> Option<&'static str> {
        ["limit-hit", "denied", "timed-out"]
            .into_iter()
            .find(|kind| self.notices.iter().any(|n| n.kind == *kind))
            .map(|kind| match kind {
                "denied" => "sandbox-denied",
                "timed-out" => "timeout",
                other => other,
            })
    }
}

/// The record of an outcome. The target is under `tool`, `resource` or `prompt`, as in the
/// decision record.
pub fn outcome_record(call: &CallFacts<'_>, outcome: &Outcome) -> serde_json::Value {
    let target_key = match call.method {
        "resources/read" => "resource",
        "prompts/get" => "prompt",
        _ => "tool",
    };
    serde_json::json!({
        "kind": "outcome",
        "time": now_ms(),
        "client": call.who.client,
        "session": call.session,
        "method": call.method,
        "argumentsDigest": call.arguments_digest,
        target_key: call.target,
        "server": call.server,
        "definitionHash": call.definition_hash,
        "tier": { "requested": call.tier_requested, "used": call.tier },
        "sandbox": call.sandbox,
        "outcome": outcome,
    })
}

/// One record as read back, with its position.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub writer: String,
    pub seq: i64,
    pub at: i64,
    pub hash: String,
    pub record: serde_json::Value,
}

/// The result of checking every writer's chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub writers: usize,
    pub records: u64,
    pub problems: Vec<Problem>,
}

/// The newest signed checkpoint of every writer: what `mcp-gateway audit anchor` prints, to be
/// kept outside the database. A trail whose newest records were removed together with their
/// checkpoints still verifies on its own; against an anchor taken before, it does not.
pub async fn anchors(pool: &AnyPool) -> Result<Vec<StoredCheckpoint>, AuditError> {
    let rows = sqlx::query(
        "SELECT c.writer, c.seq, c.hash, c.signature FROM audit_checkpoints c \
         JOIN (SELECT writer, MAX(seq) AS seq FROM audit_checkpoints GROUP BY writer) n \
         ON c.writer = n.writer AND c.seq = n.seq ORDER BY c.writer",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(checkpoint_of)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(AuditError::from)
}

/// A checkpoint from a row with its `writer`, `seq`, `hash` and `signature` columns.
fn checkpoint_of(row: &sqlx::any::AnyRow) -> Result<StoredCheckpoint, sqlx::Error> {
    Ok(StoredCheckpoint {
        writer: row.try_get("writer")?,
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        signature: row.try_get("signature")?,
    })
}

/// Checks the whole trail against `key`: every writer's chain, in full. `anchors` (signed
/// checkpoints kept elsewhere, from [`anchors`]) count as checkpoints of their writers: each
/// must be signed by `key`, and the trail must still reach it with the same hash.
pub async fn verify(
    pool: &AnyPool,
    key: &VerifyingKey,
    anchors: &[StoredCheckpoint],
) -> Result<Verification, AuditError> {
    let mut checkpoints: BTreeMap<String, Vec<StoredCheckpoint>> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT writer, seq, hash, signature FROM audit_checkpoints ORDER BY writer, seq",
    )
    .fetch_all(pool)
    .await?
    {
        let checkpoint = checkpoint_of(&row)?;
        checkpoints
            .entry(checkpoint.writer.clone())
            .or_default()
            .push(checkpoint);
    }
    for anchor in anchors {
        let list = checkpoints.entry(anchor.writer.clone()).or_default();
        list.push(anchor.clone());
        list.sort_by_key(|c| c.seq);
    }
    let mut writers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT writer FROM audit_records")
        .fetch_all(pool)
        .await?;
    for writer in checkpoints.keys() {
        if !writers.contains(writer) {
            writers.push(writer.clone());
        }
    }
    writers.sort();
    let bases = retention::bases(pool).await?;
    let mut report = Verification {
        writers: writers.len(),
        records: 0,
        problems: Vec::new(),
    };
    let file = crate::store::sqlite_file(pool).await?;
    // Chains are independent: each is read and checked on its own task, so several chains use
    // several cores (hashing is CPU work; it runs off the async threads).
    let checks = writers.into_iter().map(|writer| {
        let pool = pool.clone();
        let mut checkpoints = checkpoints.remove(&writer).unwrap_or_default();
        let base = bases.get(&writer).map(|b| (b.seq, b.hash.clone()));
        let key = *key;
        let file = file.clone();
        async move {
            if let Some(file) = file {
                return tokio::task::spawn_blocking(move || {
                    verify_sqlite_chain(&file, &writer, checkpoints, &key, base)
                })
                .await
                .map_err(|e| AuditError::NotStored(e.to_string()))?;
            }
            // Streamed and read by column position: a million rows are a million of each
            // allocation and lookup saved.
            let name: std::sync::Arc<str> = writer.as_str().into();
            let mut rows = sqlx::query(
                "SELECT seq, body, prev_hash, hash FROM audit_records WHERE writer = $1 ORDER BY seq",
            )
            .bind(&writer)
            .fetch(&pool);
            let mut records = Vec::new();
            while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
                records.push(StoredRecord {
                    writer: name.clone(),
                    seq: row.try_get(0)?,
                    body: row.try_get(1)?,
                    prev_hash: row.try_get(2)?,
                    hash: row.try_get(3)?,
                });
            }
            drop(rows);
            // A commit stores its records and their checkpoint together, so a checkpoint for
            // every record read here exists by now; one committed after the first read of the
            // checkpoints is read again (not past the last record read, or a commit after
            // that read would look like a truncation).
            let covered = checkpoints.last().map_or(0, |c| c.seq);
            if let Some(last) = records.last().map(|r| r.seq).filter(|&s| s > covered) {
                let rows = sqlx::query(
                    "SELECT writer, seq, hash, signature FROM audit_checkpoints \
                     WHERE writer = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                )
                .bind(&writer)
                .bind(covered)
                .bind(last)
                .fetch_all(&pool)
                .await?;
                for row in &rows {
                    checkpoints.push(checkpoint_of(row)?);
                }
            }
            let result = tokio::task::spawn_blocking(move || {
                chain::verify_writer(
                    records,
                    &checkpoints,
                    &key,
                    base.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
                )
            })
            .await
            .map_err(|e| AuditError::NotStored(e.to_string()))?;
            Ok::<_, AuditError>(result)
        }
    });
    for outcome in futures::future::join_all(checks).await {
        match outcome? {
            Ok(checked) => report.records += checked,
            Err(problem) => report.problems.push(problem),
        }
    }
    Ok(report)
}

/// One chain of a SQLite file checked as it is read, on a connection of its own (a blocking
/// call). Read through sqlx, each row was a hand-off between threads and the whole chain was
/// held in memory; here a row is checked and dropped. The chain's newer checkpoints are read
/// in the same snapshot as its records, so they agree.
fn verify_sqlite_chain(
    file: &str,
    writer: &str,
    mut checkpoints: Vec<StoredCheckpoint>,
    key: &VerifyingKey,
    base: Option<(i64, String)>,
) -> Result<Result<u64, Problem>, AuditError> {
    let mut conn = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let snapshot = conn.transaction()?;
    let covered = checkpoints.last().map_or(0, |c| c.seq);
    let mut newer = snapshot.prepare(
        "SELECT writer, seq, hash, signature FROM audit_checkpoints \
         WHERE writer = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    for checkpoint in newer.query_map(rusqlite::params![writer, covered], |row| {
        Ok(StoredCheckpoint {
            writer: row.get(0)?,
            seq: row.get(1)?,
            hash: row.get(2)?,
            signature: row.get(3)?,
        })
    })? {
        checkpoints.push(checkpoint?);
    }
    let mut records = snapshot.prepare(
        "SELECT seq, body, prev_hash, hash FROM audit_records WHERE writer = ?1 ORDER BY seq",
    )?;
    let name: std::sync::Arc<str> = writer.into();
    let mut failure = None;
    let stream = records
        .query_map([writer], |row| {
            Ok(StoredRecord {
                writer: name.clone(),
                seq: row.get(0)?,
                body: row.get(1)?,
                prev_hash: row.get(2)?,
                hash: row.get(3)?,
            })
        })?
        // A read that fails ends the stream; the error is reported instead of the result.
        .map_while(|record| record.map_err(|e| failure = Some(e)).ok());
    let result = chain::verify_writer(
        stream,
        &checkpoints,
        key,
        base.as_ref().map(|(seq, hash)| (*seq, hash.as_str())),
    );
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(result),
    }
}

/// Records committed in `[since, until)` (Unix milliseconds), in commit order.
pub async fn entries(
    pool: &AnyPool,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Vec<Entry>, AuditError> {
    let rows = sqlx::query(
        "SELECT writer, seq, at, body, hash FROM audit_records WHERE at >= $1 AND at < $2 \
         ORDER BY at, writer, seq",
    )
    .bind(since.unwrap_or(i64::MIN))
    .bind(until.unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let body: String = row.try_get("body")?;
            Ok(Entry {
                writer: row.try_get("writer")?,
                seq: row.try_get("seq")?,
                at: row.try_get("at")?,
                hash: row.try_get("hash")?,
                record: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(AuditError::from)
}

#[cfg(test)]
mod tests;
