//! Writing the audit trail: records go to one task that appends them in group commits.
//!
//! A caller hands a record to the writer task and, if it needs to, waits for the commit that
//! contains it. The task takes every record waiting when it wakes (records nobody waits for
//! wait up to 2 ms for one that somebody does), chains and stores them in one transaction with
//! one signed checkpoint, then tells every waiter. Under load many records share one commit; a call's answer waits for its own commit only. A record acknowledged to a
//! waiter is in the database.
//!
//! This module only inserts. The one delete path is `retention`, itself recorded first.

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

/// How often the writer has SQLite copy its write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How long records that nobody waits for (a call's decision, a session's start) wait for a
/// record that somebody does. A call's decision then goes into the same commit as its outcome
/// when the call is quick: one commit and one signed checkpoint a call instead of two. A
/// waited-for record is never held back, and nothing else is held longer than this.
const COMPANY_WINDOW: Duration = Duration::from_millis(2);

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
                (seq, chain::unhex::<32>(&hash).unwrap_or(chain::GENESIS))
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
        let mut checkpointed = tokio::time::Instant::now();
        // Whether commits were made since the last checkpoint: an idle writer checkpoints
        // them a second later rather than at its next commit.
        let mut dirty = false;
        loop {
            let next = if dirty {
                tokio::time::timeout_at(checkpointed + CHECKPOINT_EVERY, rx.recv())
                    .await
                    .ok()
            } else {
                Some(rx.recv().await)
            };
            match next {
                Some(None) => break,
                Some(Some(first)) => {
                    batch.push(first);
                    let open = collect(&mut rx, &mut batch).await;
                    self.commit(&mut batch).await;
                    dirty = true;
                    if !open {
                        break;
                    }
                }
                // Idle since the last commit, a second after the last checkpoint.
                None => {}
            }
            // Between two commits of this task, so the next one can start SQLite's log over.
            if dirty && checkpointed.elapsed() >= CHECKPOINT_EVERY {
                crate::store::checkpoint_wal(&self.pool).await;
                checkpointed = tokio::time::Instant::now();
                dirty = false;
            }
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
        let started = std::time::Instant::now();
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
        tracing::debug!(
            records = batch.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "committed"
        );
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

/// Adds the records waiting in `rx` to `batch`. While none of them has a waiter, waits up to
/// [`COMPANY_WINDOW`] for one that has. Returns false when the channel has closed.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Pending>, batch: &mut Vec<Pending>) -> bool {
    let deadline = tokio::time::Instant::now() + COMPANY_WINDOW;
    let mut waited = batch.iter().any(|p| p.ack.is_some());
    loop {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => {
                    waited |= pending.ack.is_some();
                    batch.push(pending);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        if waited || batch.len() >= MAX_BATCH {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(pending)) => {
                waited |= pending.ack.is_some();
                batch.push(pending);
            }
            Ok(None) => return false,
            Err(_elapsed) => return true,
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
///
/// On SQLite a batch of one INSERT's rows goes as one multi-statement query (`BEGIN IMMEDIATE`,
/// the rows, the checkpoint, `COMMIT`): sqlx runs each SQLite statement on the connection's
/// worker thread, so this is one round trip instead of four. At low load, where a call waits
/// for a commit of its own record, that round trip is most of what the audit trail adds to the
/// call. Larger batches (and Postgres) use a sqlx transaction, one INSERT per chunk.
async fn store(
    pool: &AnyPool,
    rows: &[StoredRecord],
    checkpoint: &StoredCheckpoint,
    at: i64,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    if rows.len() <= ROWS_PER_INSERT && conn.backend_name() == "SQLite" {
        let mut sql = String::from("BEGIN IMMEDIATE; ");
        insert_records_sql(&mut sql, rows.len());
        sql.push_str("; ");
        insert_checkpoint_sql(&mut sql, rows.len() * 6);
        sql.push_str("; COMMIT");
        let query = bind_checkpoint(
            bind_records(sqlx::query(sqlx::AssertSqlSafe(sql)), rows, at),
            checkpoint,
            at,
        );
        let result = query.execute(&mut *conn).await.map(drop);
        if result.is_err() {
            // A statement failed inside the explicit transaction: end it before the
            // connection goes back to the pool, or drop the connection if even that fails.
            if sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                conn.close_on_drop();
            }
        }
        return result;
    }
    let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::new();
        insert_records_sql(&mut sql, chunk.len());
        bind_records(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk, at)
            .execute(&mut *tx)
            .await?;
    }
    let mut sql = String::new();
    insert_checkpoint_sql(&mut sql, 0);
    bind_checkpoint(sqlx::query(sqlx::AssertSqlSafe(sql)), checkpoint, at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// `INSERT` of `rows` audit records, parameters `$1` to `$(6 * rows)`.
fn insert_records_sql(sql: &mut String, rows: usize) {
    use std::fmt::Write;
    sql.push_str("INSERT INTO audit_records (writer, seq, at, body, prev_hash, hash) VALUES ");
    for i in 0..rows {
        let b = i * 6;
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(
            sql,
            "(${}, ${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6
        );
    }
}

/// `INSERT` of a checkpoint, parameters `$(after + 1)` to `$(after + 5)`.
fn insert_checkpoint_sql(sql: &mut String, after: usize) {
    use std::fmt::Write;
    let _ = write!(
        sql,
        "INSERT INTO audit_checkpoints (writer, seq, hash, at, signature) \
         VALUES (${}, ${}, ${}, ${}, ${})",
        after + 1,
        after + 2,
        after + 3,
        after + 4,
        after + 5
    );
}

fn bind_records<'q>(mut query: Query<'q>, rows: &'q [StoredRecord], at: i64) -> Query<'q> {
    for row in rows {
        query = query
            .bind(row.writer.as_ref())
            .bind(row.seq)
            .bind(at)
            .bind(&row.body)
            .bind(&row.prev_hash)
            .bind(&row.hash);
    }
    query
}

fn bind_checkpoint<'q>(query: Query<'q>, checkpoint: &'q StoredCheckpoint, at: i64) -> Query<'q> {
    query
        .bind(&checkpoint.writer)
        .bind(checkpoint.seq)
        .bind(&checkpoint.hash)
        .bind(at)
        .bind(&checkpoint.signature)
}

#[cfg(test)]
mod tests {
    use tokio::{sync::mpsc, time::Instant};

    use super::{COMPANY_WINDOW, Pending, collect};

    fn record(waited: bool) -> Pending {
        Pending {
            body: String::new(),
            ack: waited.then(|| tokio::sync::oneshot::channel().0),
        }
    }

    // Time is paused: a wait for the window passes at once, and the clock says whether it did.
    #[tokio::test(start_paused = true)]
    async fn records_nobody_waits_for_wait_for_company() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();

        // A waited-for record is not held back.
        let mut batch = vec![record(true)];
        assert!(collect(&mut rx, &mut batch).await);
        assert_eq!((batch.len(), Instant::now()), (1, start));

        // A decision is joined by the outcome that arrives within the window.
        let mut batch = vec![record(false)];
        let sender = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COMPANY_WINDOW / 2).await;
            sender.send(record(true)).ok();
        });
        assert!(collect(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), 2);
        assert_eq!(Instant::now(), start + COMPANY_WINDOW / 2);

        // Alone, it goes after the window.
        let mut batch = vec![record(false)];
        assert!(collect(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), 1);
        assert_eq!(Instant::now(), start + COMPANY_WINDOW / 2 + COMPANY_WINDOW);

        // Records already queued are taken; a closed channel is reported.
        tx.send(record(false)).unwrap();
        drop(tx);
        let mut batch = vec![record(false)];
        assert!(!collect(&mut rx, &mut batch).await);
        assert_eq!(batch.len(), 2);
    }
}
