//! Writing the audit trail: records go to one task that appends them in group commits.
//!
//! A caller hands a record to the writer task and, if it needs to, waits for the commit that
//! contains it. The task takes every record waiting when it wakes (records nobody waits for
//! wait up to 2 ms for one that somebody does), chains and stores them in one transaction with
//! one signed checkpoint, then tells every waiter. Under load many records share one commit; a
//! call's answer waits for its own commit only. A record acknowledged to a waiter is in the
//! database.
//!
//! On a SQLite file the writer has a connection of its own and a thread of its own, and
//! commits on it directly. Through sqlx's pool a commit took a checkout from the pool and a
//! round trip to the connection's worker thread, each a wake-up of another thread: the
//! one-caller wait for a commit measured 238 µs that way (see `docs/benchmarks.md`).
//! Postgres, and SQLite in memory (which only the pool's connections share), go through sqlx.
//!
//! This module only inserts. The one delete path is `retention`, itself recorded first.

use std::{sync::Arc, time::Duration};

use ed25519_dalek::SigningKey;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, StoredCheckpoint, StoredRecord};

/// Records in one group commit at most (and in one INSERT statement at most `ROWS_PER_INSERT`).
const MAX_BATCH: usize = 4096;
/// Rows per INSERT through sqlx (Postgres). Full chunks reuse one prepared statement. Larger
/// chunks measured slower when SQLite went through sqlx too: sqlx looked up each bound
/// parameter's name, a cost that grows with the square of the parameters in a statement, and
/// every distinct chunk size is a statement prepared anew.
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
    #[error("audit database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("audit writer thread: {0}")]
    Thread(#[from] std::io::Error),
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
        let sink = Sink::open(pool).await?;
        let own_thread = matches!(sink, Sink::Sqlite(_));
        let task = Writer {
            sink,
            key,
            writer: writer.clone(),
            seq,
            prev,
            on_commit: Box::new(on_commit),
        };
        if own_thread {
            // Its commits block: on a runtime of its own they hold up nothing else.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?;
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || runtime.block_on(task.run(rx)))?;
        } else {
            tokio::spawn(task.run(rx));
        }
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

/// Where the writer's commits go.
enum Sink {
    /// A SQLite file, through the writer's own connection.
    Sqlite(rusqlite::Connection),
    /// Postgres, or SQLite in memory: through sqlx's pool.
    Pool(AnyPool),
}

impl Sink {
    /// A connection of the writer's own when `pool` is a SQLite file, with the `synchronous`
    /// setting the pool's connections have.
    async fn open(pool: AnyPool) -> Result<Self, AuditError> {
        let Some(file) = crate::store::sqlite_file(&pool).await? else {
            return Ok(Self::Pool(pool));
        };
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&pool)
            .await?;
        let conn = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; {}",
            crate::store::SQLITE_CHECKPOINTS_BY_THE_WRITER
        ))?;
        Ok(Self::Sqlite(conn))
    }

    /// Inserts the rows and the checkpoint in one transaction.
    async fn store(
        &mut self,
        rows: &[StoredRecord],
        checkpoint: &StoredCheckpoint,
        at: i64,
    ) -> Result<(), String> {
        match self {
            Self::Sqlite(conn) => {
                store_sqlite(conn, rows, checkpoint, at).map_err(|e| e.to_string())
            }
            Self::Pool(pool) => store(pool, rows, checkpoint, at)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Copies SQLite's write-ahead log into the database file without waiting for readers or
    /// writers (`PASSIVE`); see [`crate::store::SQLITE_CHECKPOINTS_BY_THE_WRITER`]. Postgres has
    /// no such log, and SQLite in memory keeps none.
    fn checkpoint_wal(&mut self) {
        if let Self::Sqlite(conn) = self
            && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}

struct Writer {
    sink: Sink,
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
                self.sink.checkpoint_wal();
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
            match self.sink.store(&rows, &checkpoint, now).await {
                Ok(()) => break Ok(()),
                // A database that is restarting or briefly locked gets time to come back; the
                // callers wait (their records are not acknowledged until stored).
                Err(e) if attempt < 8 => {
                    tracing::warn!(error = %e, attempt, "cannot store audit records; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                    attempt += 1;
                }
                Err(e) => break Err(e),
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

/// [`Sink::store`] on the writer's own SQLite connection. Each statement is prepared once.
fn store_sqlite(
    conn: &mut rusqlite::Connection,
    rows: &[StoredRecord],
    checkpoint: &StoredCheckpoint,
    at: i64,
) -> rusqlite::Result<()> {
    // Dropped without a commit, it rolls back.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_records (writer, seq, at, body, prev_hash, hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for row in rows {
            insert.execute(rusqlite::params![
                row.writer.as_ref(),
                row.seq,
                at,
                row.body,
                row.prev_hash,
                row.hash
            ])?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO audit_checkpoints (writer, seq, hash, at, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(rusqlite::params![
        checkpoint.writer,
        checkpoint.seq,
        checkpoint.hash,
        at,
        checkpoint.signature
    ])?;
    tx.commit()
}

/// [`Sink::store`] through sqlx: one transaction, one INSERT per chunk of rows.
async fn store(
    pool: &AnyPool,
    rows: &[StoredRecord],
    checkpoint: &StoredCheckpoint,
    at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::new();
        insert_records_sql(&mut sql, chunk.len());
        bind_records(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk, at)
            .execute(&mut *tx)
            .await?;
    }
    bind_checkpoint(sqlx::query(INSERT_CHECKPOINT), checkpoint, at)
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

/// `INSERT` of a checkpoint, parameters `$1` to `$5`.
const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints (writer, seq, hash, at, signature) \
     VALUES ($1, $2, $3, $4, $5)";

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

    use super::{COMPANY_WINDOW, Pending, Sink, collect};

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

    /// A SQLite file gets the writer's own connection, set up as the pool's connections are;
    /// SQLite in memory, which only the pool's connections share, stays on the pool. Records
    /// written either way are stored and verify.
    #[tokio::test]
    async fn a_sqlite_file_gets_a_connection_of_its_own() {
        use crate::{config::raw::SqliteSynchronous, store::Store};

        let dir = tempfile::tempdir().unwrap();
        for (setting, expected) in [(SqliteSynchronous::Normal, 1), (SqliteSynchronous::Full, 2)] {
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("{expected}.db")).display()
            );
            let store = Store::open_with(&url, setting).await.unwrap();
            let Ok(Sink::Sqlite(conn)) = Sink::open(store.pool().clone()).await else {
                panic!("{setting:?}: not the writer's own connection");
            };
            let synchronous: i64 = conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap();
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            let autocheckpoint: i64 = conn
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .unwrap();
            assert_eq!(
                (synchronous, mode.as_str(), autocheckpoint),
                (expected, "wal", 0),
                "{setting:?}"
            );
        }

        let file = Store::open(&format!("sqlite://{}", dir.path().join("w.db").display()))
            .await
            .unwrap()
            .pool()
            .clone();
        // One connection: each connection to `:memory:` is a database of its own.
        let memory = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::migrate!("./migrations").run(&memory).await.unwrap();
        for (pool, own) in [(file, true), (memory, false)] {
            let url = pool.connect_options().database_url.to_string();
            let is_own = matches!(Sink::open(pool.clone()).await, Ok(Sink::Sqlite(_)));
            assert_eq!(is_own, own, "{url}");
            let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
            let log = super::AuditLog::start(pool.clone(), key.clone(), "w".into(), |_| {})
                .await
                .unwrap();
            for i in 0..10 {
                log.record_nowait(&serde_json::json!({ "i": i })).unwrap();
            }
            assert_eq!(
                log.record(&serde_json::json!({ "i": 10 })).await.unwrap(),
                11
            );
            let report = crate::audit::verify(&pool, &key.verifying_key(), &[])
                .await
                .unwrap();
            assert_eq!((report.records, report.problems.len()), (11, 0), "{url}");
        }
    }
}
