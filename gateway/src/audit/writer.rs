//! Writing the audit trail: records go to one task that appends them in group commits.
//!
//! A caller hands a record to the writer task and, if it needs to, waits for the commit that
//! contains it. The task takes every record waiting when it wakes, chains and stores them in
//! one transaction with one signed checkpoint, then tells every waiter. Under load many records
//! share one commit; a call's answer waits for its own commit only. A record acknowledged to a
//! waiter is in the database.
//!
//! The store has no update or delete path: this module only inserts.

use std::{sync::Arc, time::Duration};

use ed25519_dalek::SigningKey;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, StoredCheckpoint, StoredRecord};

/// Records in one group commit at most (and in one INSERT statement at most `ROWS_PER_INSERT`).
const MAX_BATCH: usize = 4096;
/// Rows per INSERT. Full chunks reuse one prepared statement. Larger chunks measured slower:
/// sqlx looks up each bound parameter's name in SQLite, a cost that grows with the square of
/// the parameters in a statement (at 400 rows it was a third of the writer's time), and every
/// distinct chunk size is a statement prepared anew.
const ROWS_PER_INSERT: usize = 100;

/// Why the trail could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("audit record could not be stored: {0}")]
    NotStored(String),
}

pub(super) struct Pending {
    body: String,
    ack: Option<oneshot::Sender<Result<i64, String>>>,
}

/// The handle callers record through.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Pending>,
    writer: Arc<str>,
}

impl AuditLog {
    /// Starts the writer task for `writer`, continuing its chain where the database ends.
    pub async fn start(
        pool: AnyPool,
        key: SigningKey,
        writer: String,
        on_commit: impl Fn(&[(i64, String)]) + Send + 'static,
    ) -> Result<Self, AuditError> {
        let tail = sqlx::query(
            "SELECT seq, hash FROM audit_records WHERE writer = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(&writer)
        .fetch_optional(&pool)
        .await?;
        let (seq, prev) = match tail {
            Some(row) => {
                let seq: i64 = row.try_get("seq")?;
                let hash: String = row.try_get("hash")?;
                (seq, parse_hash(&hash).unwrap_or(chain::GENESIS))
            }
            None => (0, chain::GENESIS),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Writer {
            pool,
            key,
            writer: writer.clone(),
            seq,
            prev,
            on_commit: Box::new(on_commit),
        };
        tokio::spawn(task.run(rx));
        Ok(Self {
            tx,
            writer: writer.into(),
        })
    }

    /// This writer's id.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Appends `body` and waits until the commit that holds it is done. Returns its sequence
    /// number.
    pub async fn record(&self, body: &serde_json::Value) -> Result<i64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.send(body, Some(ack))?;
        done.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::NotStored)
    }

    /// Appends `body` without waiting for its commit. A later [`Self::record`] of the same
    /// writer returns only after this one is stored too (the chain is in order).
    pub fn record_nowait(&self, body: &serde_json::Value) -> Result<(), AuditError> {
        self.send(body, None)
    }

    /// The queue is unbounded: a record is never dropped for lack of room. It grows only while
    /// the database does not take commits, which the writer logs.
    fn send(
        &self,
        body: &serde_json::Value,
        ack: Option<oneshot::Sender<Result<i64, String>>>,
    ) -> Result<(), AuditError> {
        let body = canonical(body)?;
        self.tx
            .send(Pending { body, ack })
            .map_err(|_| AuditError::Stopped)
    }
}

/// The canonical JSON of a record: the bytes its hash covers.
pub fn canonical(body: &serde_json::Value) -> Result<String, AuditError> {
    verifier::canonical::canonicalize(&body.to_string())
        .map_err(|e| AuditError::NotStored(e.to_string()))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Called with the (sequence number, canonical body) of each record after its commit.
type CommitHook = Box<dyn Fn(&[(i64, String)]) + Send>;

struct Writer {
    pool: AnyPool,
    key: SigningKey,
    writer: String,
    /// The last stored sequence number and hash.
    seq: i64,
    prev: [u8; 32],
    on_commit: CommitHook,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch).await;
        }
    }

    /// Stores `batch` (retrying while the database refuses), then answers its waiters.
    async fn commit(&mut self, batch: &mut Vec<Pending>) {
        let now = now_ms();
        let mut rows = Vec::with_capacity(batch.len());
        let mut prev = self.prev;
        let name: Arc<str> = self.writer.as_str().into();
        for (i, pending) in batch.iter().enumerate() {
            let hash = chain::link(&prev, &pending.body);
            rows.push(StoredRecord {
                writer: name.clone(),
                seq: self.seq + 1 + i as i64,
                body: pending.body.clone(),
                prev_hash: chain::hex(&prev),
                hash: chain::hex(&hash),
            });
            prev = hash;
        }
        let last = self.seq + batch.len() as i64;
        let checkpoint = StoredCheckpoint {
            writer: self.writer.clone(),
            seq: last,
            hash: chain::hex(&prev),
            signature: chain::sign_checkpoint(&self.key, &self.writer, last, &prev),
        };
        let mut attempt = 0u32;
        let result = loop {
            match store(&self.pool, &rows, &checkpoint, now).await {
                Ok(()) => break Ok(()),
                // A database that is restarting or briefly locked gets time to come back; the
                // callers wait (their records are not acknowledged until stored).
                Err(e) if attempt < 8 => {
                    tracing::warn!(error = %e, attempt, "cannot store audit records; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                    attempt += 1;
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        match &result {
            Ok(()) => {
                self.seq = last;
                self.prev = prev;
                let committed: Vec<(i64, String)> =
                    rows.into_iter().map(|r| (r.seq, r.body)).collect();
                (self.on_commit)(&committed);
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit records were not stored");
            }
        }
        let first = last - batch.len() as i64 + 1;
        for (i, pending) in batch.drain(..).enumerate() {
            if let Some(ack) = pending.ack {
                let _ = ack.send(result.clone().map(|()| first + i as i64));
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Inserts the rows and the checkpoint in one transaction.
async fn store(
    pool: &AnyPool,
    rows: &[StoredRecord],
    checkpoint: &StoredCheckpoint,
    at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO audit_records (writer, seq, at, body, prev_hash, hash) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 6;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.writer.as_ref())
                .bind(row.seq)
                .bind(at)
                .bind(&row.body)
                .bind(&row.prev_hash)
                .bind(&row.hash);
        }
        query.execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO audit_checkpoints (writer, seq, hash, at, signature) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&checkpoint.writer)
    .bind(checkpoint.seq)
    .bind(&checkpoint.hash)
    .bind(at)
    .bind(&checkpoint.signature)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
