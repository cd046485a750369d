//! Writing the audit trail: records are appended in group commits, one commit at a time.
//!
//! A caller queues a record and, if it needs to, waits for the commit that contains it. A
//! commit takes every record queued (records nobody waits for wait a few milliseconds for one
//! that somebody does), chains and stores them in one transaction with one signed checkpoint, then
//! tells every waiter. Under load many records share one commit; a call's answer waits for its
//! own commit only. A record acknowledged to a waiter is in the database.
//!
//! On a SQLite file the writer has a connection and a thread of its own ([`Inline`]), and a
//! caller who finds it idle commits on that connection itself, without waking the thread.
//! Through sqlx's pool a commit took a checkout from the pool and a round trip to the
//! connection's worker thread, each a wake-up of another thread: the one-caller wait for a
//! commit measured 238 µs that way, 144 – 157 µs through the writer's own thread (see
//! `docs/benchmarks.md`). Postgres, and SQLite in memory (which only the pool's connections
//! share), go through sqlx, from a task of their own.
//!
//! This module only inserts. The one delete path is `retention`, itself recorded first.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use ed25519_dalek::SigningKey;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, StoredCheckpoint, StoredRecord};

/// How long after the last record nobody waits for the SQLite writer's thread keeps looking at
/// its queue once a [`COMPANY_WINDOW`], rather than sleeping until it is woken.
const STAY_AWAKE: Duration = Duration::from_millis(100);

/// How long after a waited-for record last had to queue behind a commit callers leave the
/// commits to the SQLite writer's thread. Under concurrent calls the thread's commits gather
/// more records each (5.8 records a commit at concurrency 32 through the HTTP front door, against
/// 3.3 when every caller who found the writer idle committed inline), and every commit costs a
/// signature and a WAL write.
const INLINE_AFTER_CONTENTION: Duration = Duration::from_millis(50);

/// Records in one group commit at most (and in one INSERT statement at most `ROWS_PER_INSERT`).
const MAX_BATCH: usize = 4096;
/// Rows per INSERT through sqlx (Postgres). Full chunks reuse one prepared statement. Larger
/// chunks measured slower when SQLite went through sqlx too: sqlx looked up each bound
/// parameter's name, a cost that grows with the square of the parameters in a statement, and
/// every distinct chunk size is a statement prepared anew.
const ROWS_PER_INSERT: usize = 100;

/// How long the writer's own SQLite connection waits for another connection's write.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the writer has SQLite copy its write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How long records that nobody waits for (a call's decision, a session's start) wait for a
/// record that somebody does. A call's decision then goes into the same commit as its outcome
/// when the call is quick: one commit and one signed checkpoint a call instead of two. A
/// waited-for record is never held back, and nothing else is held longer than this (the writer
/// of a SQLite file: twice this; see [`Inline::run`]).
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
    queue: Queue,
    writer: Arc<str>,
}

#[derive(Clone)]
enum Queue {
    /// To the writer task (Postgres, SQLite in memory).
    Task(mpsc::UnboundedSender<Pending>),
    /// Shared with the writer thread of a SQLite file; see [`Inline`].
    Inline(Arc<InlineHandle>),
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
        let chain = Writer {
            sink: (),
            key,
            writer: writer.clone(),
            seq,
            prev,
            on_commit: Box::new(on_commit),
        };
        let queue = match Sink::open(pool).await? {
            Sink::Sqlite { conn, synchronous } => {
                // With `synchronous` at FULL or above each commit waits for the disk (an fsync
                // of the log), too long to hold a runtime's worker: the thread makes every
                // commit then. At NORMAL (the default) a commit in WAL mode only writes to the
                // log.
                let inline = Arc::new(Inline::new(chain.with(conn), synchronous <= 1));
                let thread = inline.clone();
                std::thread::Builder::new()
                    .name("audit-writer".into())
                    .spawn(move || thread.run())?;
                Queue::Inline(Arc::new(InlineHandle(inline)))
            }
            Sink::Pool(pool) => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(chain.with(pool).run(rx));
                Queue::Task(tx)
            }
        };
        Ok(Self {
            queue,
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
        let pending = Pending {
            body: canonical(body)?,
            ack,
        };
        match &self.queue {
            Queue::Task(tx) => tx.send(pending).map_err(|_| AuditError::Stopped),
            Queue::Inline(handle) => handle.0.submit(pending),
        }
    }
}

/// The canonical JSON of a record: the bytes its hash covers. The same bytes as
/// `verifier::canonical::canonicalize(&body.to_string())`, written straight from the value
/// instead of printed and parsed again: that round trip, for a call's two records, was about
/// 3 % of the gateway's CPU through the stdio front door (`docs/benchmarks.md`).
pub fn canonical(body: &serde_json::Value) -> Result<String, AuditError> {
    let mut out = String::with_capacity(512);
    push_canonical(body, 0, &mut out).map_err(|e| AuditError::NotStored(e.to_string()))?;
    Ok(out)
}

fn push_canonical(
    value: &serde_json::Value,
    depth: usize,
    out: &mut String,
) -> Result<(), verifier::canonical::JsonError> {
    use serde_json::Value;
    use verifier::canonical::{push_number, push_string};
    if depth > verifier::canonical::MAX_DEPTH {
        return Err(verifier::canonical::JsonError {
            offset: 0,
            reason: "nested too deeply",
        });
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // A number prints as the literal it was parsed from (or, built in Rust, as serde_json
        // would print it), which is the text the verifier's own parser would have read.
        Value::Number(n) => push_number(&n.to_string(), out)?,
        Value::String(s) => push_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_canonical(item, depth + 1, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Keys by code point, which is byte order in UTF-8 (serde_json may keep insertion
            // order: another crate in the graph turns on `preserve_order`).
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(key, out);
                out.push(':');
                push_canonical(value, depth + 1, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Called with the (sequence number, canonical body) of each record after its commit.
type CommitHook = Box<dyn Fn(&[(i64, String)]) + Send>;

/// Where the writer's commits go.
enum Sink {
    /// A SQLite file, through the writer's own connection, and its `synchronous` setting.
    Sqlite {
        conn: rusqlite::Connection,
        synchronous: i64,
    },
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
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; {}",
            crate::store::SQLITE_CHECKPOINTS_BY_THE_WRITER
        ))?;
        Ok(Self::Sqlite { conn, synchronous })
    }
}

/// The chain of one writer, and where it is stored: sqlx's pool (a task's) or a SQLite
/// connection of its own ([`Inline`]'s).
struct Writer<S> {
    sink: S,
    key: SigningKey,
    writer: String,
    /// The last stored sequence number and hash.
    seq: i64,
    prev: [u8; 32],
    on_commit: CommitHook,
}

/// A batch chained onto the writer's tail, ready to store.
struct Chained {
    rows: Vec<StoredRecord>,
    checkpoint: StoredCheckpoint,
    /// The new tail, once stored.
    last: i64,
    prev: [u8; 32],
    at: i64,
}

impl Writer<()> {
    fn with<S>(self, sink: S) -> Writer<S> {
        Writer {
            sink,
            key: self.key,
            writer: self.writer,
            seq: self.seq,
            prev: self.prev,
            on_commit: self.on_commit,
        }
    }
}

impl Writer<AnyPool> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let open = collect(&mut rx, &mut batch).await;
            self.commit(&mut batch).await;
            if !open {
                break;
            }
        }
    }

    /// Stores `batch` (retrying while the database refuses), then answers its waiters.
    async fn commit(&mut self, batch: &mut Vec<Pending>) {
        let chained = self.chain(batch);
        let mut retry = Retry::default();
        let started = std::time::Instant::now();
        let result = loop {
            match store(&self.sink, &chained.rows, &chained.checkpoint, chained.at).await {
                Ok(()) => break Ok(()),
                Err(e) => match retry.after(&e) {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => break Err(e.to_string()),
                },
            }
        };
        self.finish(batch, chained, result, started);
    }
}

impl Writer<rusqlite::Connection> {
    /// Stores `batch` on the calling thread, then answers its waiters. With `retry`, it waits
    /// for SQLite's lock and sleeps between attempts; without, a database another connection is
    /// writing refuses at once (a caller committing inline must not hold up its runtime) and the
    /// batch is handed back untouched: nothing acknowledged, the tail unchanged.
    fn commit_blocking(&mut self, batch: &mut Vec<Pending>, retry: bool) -> Result<(), ()> {
        let chained = self.chain(batch);
        let mut retries = Retry::default();
        let started = std::time::Instant::now();
        let wait = if retry { BUSY_TIMEOUT } else { Duration::ZERO };
        let result = loop {
            let stored = self.sink.busy_timeout(wait).and_then(|()| {
                store_sqlite(
                    &mut self.sink,
                    &chained.rows,
                    &chained.checkpoint,
                    chained.at,
                )
            });
            match stored {
                Ok(()) => break Ok(()),
                Err(e) if !retry => {
                    tracing::debug!(error = %e, "inline audit commit refused; the writer retries");
                    return Err(());
                }
                Err(e) => match retries.after(&e) {
                    Some(delay) => std::thread::sleep(delay),
                    None => break Err(e.to_string()),
                },
            }
        };
        self.finish(batch, chained, result, started);
        Ok(())
    }

    /// Copies SQLite's write-ahead log into the database file without waiting for readers or
    /// writers (`PASSIVE`); see [`crate::store::SQLITE_CHECKPOINTS_BY_THE_WRITER`].
    fn checkpoint_wal(&mut self) {
        if let Err(e) = self
            .sink
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}

impl<S> Writer<S> {
    /// Links `batch` onto the tail and signs the checkpoint that covers it.
    fn chain(&self, batch: &[Pending]) -> Chained {
        let mut rows = Vec::with_capacity(batch.len());
        let mut prev = self.prev;
        let name: Arc<str> = self.writer.as_str().into();
        for (i, pending) in batch.iter().enumerate() {
            let hash = chain::link(&prev, &pending.body);
            rows.push(StoredRecord {
                writer: name.clone(),
                seq: self.seq + 1 + i as i64,
                body: pending.body.clone(),
                prev_hash: hex::encode(prev),
                hash: hex::encode(hash),
            });
            prev = hash;
        }
        let last = self.seq + batch.len() as i64;
        let checkpoint = StoredCheckpoint {
            writer: self.writer.clone(),
            seq: last,
            hash: hex::encode(prev),
            signature: chain::sign_checkpoint(&self.key, &self.writer, last, &prev),
        };
        Chained {
            rows,
            checkpoint,
            last,
            prev,
            at: now_ms(),
        }
    }

    /// After the store of `batch`: moves the tail, publishes, answers every waiter.
    fn finish(
        &mut self,
        batch: &mut Vec<Pending>,
        chained: Chained,
        result: Result<(), String>,
        started: std::time::Instant,
    ) {
        tracing::debug!(
            records = batch.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "committed"
        );
        let last = chained.last;
        match &result {
            Ok(()) => {
                self.seq = last;
                self.prev = chained.prev;
                let committed: Vec<(i64, String)> =
                    chained.rows.into_iter().map(|r| (r.seq, r.body)).collect();
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

/// Failed attempts at storing one batch. A database that is restarting or briefly locked gets
/// time to come back; the callers wait (their records are not acknowledged until stored).
#[derive(Default)]
struct Retry(u32);

impl Retry {
    /// How long to wait before the next attempt after `error`, or `None` after the ninth
    /// (about 13 s in all): the batch is given up.
    fn after(&mut self, error: &dyn std::fmt::Display) -> Option<Duration> {
        if self.0 >= 8 {
            return None;
        }
        tracing::warn!(error = %error, attempt = self.0, "cannot store audit records; retrying");
        let delay = Duration::from_millis(50 << self.0.min(6));
        self.0 += 1;
        Some(delay)
    }
}

/// The writer of a SQLite file, shared by the callers and the writer's own thread.
///
/// A caller whose record is waited for and who finds the writer idle commits the queue itself,
/// on its own thread (unless each commit waits for the disk, see [`Inline::new`], or callers
/// have lately had to queue behind commits, see [`INLINE_AFTER_CONTENTION`]): at concurrency 1 a call's outcome is stored without waking another thread
/// and being woken back (the two wake-ups were about half of the wait; see
/// `docs/benchmarks.md`). Whoever holds `busy` commits; nobody else touches the connection,
/// so commits stay one at a time and in the order of the queue. A caller commits one batch, the
/// one holding its own record; what arrived meanwhile, and a batch the database refused, it
/// hands to the thread, which commits until the queue is empty, retrying with back-off. The
/// thread also commits records nobody waits for after [`COMPANY_WINDOW`] (looking for them
/// once a window while they keep coming, so their callers need not wake it each time), and
/// checkpoints the write-ahead log between commits.
struct Inline {
    state: Mutex<State>,
    wake: Condvar,
    /// Locked only by the holder of `State::busy`, so never contended.
    writer: Mutex<Writer<rusqlite::Connection>>,
    /// Whether callers may commit (see [`Inline::new`]).
    inline: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Somebody is committing: a caller, or the thread.
    busy: bool,
    /// A caller has passed `busy` to the thread.
    handoff: bool,
    /// Commits were made since the last checkpoint of the log.
    dirty: bool,
    /// Every [`AuditLog`] is gone: the thread commits what is left and ends.
    closed: bool,
    /// The thread looks at the queue at least once a [`COMPANY_WINDOW`] for now.
    polling: bool,
    /// When the last record nobody waits for was queued.
    last_unwaited: Option<std::time::Instant>,
    /// A waited-for record is queued for the thread to commit now.
    urgent: bool,
    /// When a waited-for record last found a commit in progress.
    contended: Option<std::time::Instant>,
    /// A commit panicked: the writer's state cannot be trusted, and every record is refused.
    broken: bool,
}

impl State {
    /// Whether a waited-for record had to queue behind a commit less than
    /// [`INLINE_AFTER_CONTENTION`] before `now`.
    fn contended_lately(&self, now: std::time::Instant) -> bool {
        self.contended
            .is_some_and(|at| now.saturating_duration_since(at) < INLINE_AFTER_CONTENTION)
    }
}

struct Queued {
    pending: Pending,
    since: std::time::Instant,
}

/// Held while committing: if the commit unwinds, the writer stops for good, with every queued
/// record refused (their waiters get [`AuditError::Stopped`]) instead of `busy` staying taken and
/// every later caller waiting forever.
struct Committing<'a>(&'a Inline);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = self.0.lock_state();
            state.broken = true;
            state.busy = false;
            state.queue.clear();
            self.0.wake.notify_one();
        }
    }
}

/// Closes the queue when the last [`AuditLog`] goes.
struct InlineHandle(Arc<Inline>);

impl Drop for InlineHandle {
    fn drop(&mut self) {
        self.0.lock_state().closed = true;
        self.0.wake.notify_one();
    }
}

impl Inline {
    fn new(writer: Writer<rusqlite::Connection>, inline: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            writer: Mutex::new(writer),
            inline,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer<rusqlite::Connection>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `pending`; when it is waited for and nobody is committing, commits it here.
    fn submit(&self, pending: Pending) -> Result<(), AuditError> {
        let waited = pending.ack.is_some();
        let lead = {
            let mut state = self.lock_state();
            if state.broken {
                return Err(AuditError::Stopped);
            }
            let now = std::time::Instant::now();
            state.queue.push_back(Queued {
                pending,
                since: now,
            });
            let contended = state.contended_lately(now);
            if state.busy {
                if waited {
                    state.contended = Some(now);
                }
                false
            } else if waited && self.inline && !contended {
                state.busy = true;
                true
            } else if waited {
                state.urgent = true;
                self.wake.notify_one();
                false
            } else {
                state.last_unwaited = Some(now);
                // A thread that is not looking at the queue once a window has to be told.
                if !state.polling {
                    self.wake.notify_one();
                }
                false
            }
        };
        if lead {
            self.lead();
        }
        Ok(())
    }

    /// Commits the queue once, as a caller holding `busy`.
    fn lead(&self) {
        let mut batch: Vec<Pending> = {
            let mut state = self.lock_state();
            let n = state.queue.len().min(MAX_BATCH);
            state.queue.drain(..n).map(|q| q.pending).collect()
        };
        let guard = Committing(self);
        let committed = self.lock_writer().commit_blocking(&mut batch, false);
        drop(guard);
        let mut state = self.lock_state();
        if committed.is_ok() {
            // A thread asleep with nothing to do learns that a checkpoint is now due in a
            // second; once per checkpoint, not per commit.
            if !state.dirty && !state.polling {
                self.wake.notify_one();
            }
            state.dirty = true;
        } else {
            for pending in batch.into_iter().rev() {
                state.queue.push_front(Queued {
                    pending,
                    since: std::time::Instant::now(),
                });
            }
        }
        if state.queue.is_empty() {
            state.busy = false;
        } else {
            state.handoff = true;
            self.wake.notify_one();
        }
    }

    /// The writer's thread.
    fn run(&self) {
        let mut checkpointed = std::time::Instant::now();
        let mut state = self.lock_state();
        loop {
            let now = std::time::Instant::now();
            state.polling = false;
            let due = state.urgent
                || state
                    .queue
                    .front()
                    .is_some_and(|q| state.closed || now >= q.since + COMPANY_WINDOW);
            if state.broken {
                break;
            } else if state.handoff {
                // `busy` is this thread's now.
                state.handoff = false;
            } else if !state.busy && due {
                state.busy = true;
            } else if !state.busy && state.closed && state.queue.is_empty() {
                break;
            } else if !state.busy && state.dirty && now >= checkpointed + CHECKPOINT_EVERY {
                state.busy = true;
                state.dirty = false;
                drop(state);
                let guard = Committing(self);
                self.lock_writer().checkpoint_wal();
                drop(guard);
                checkpointed = std::time::Instant::now();
                // Then whatever queued during the checkpoint.
                self.drain();
                state = self.lock_state();
                continue;
            } else {
                // While records nobody waits for are queued, or were a moment ago, look at the
                // queue once a window instead of being woken for each of them: at a call's
                // pace that is far fewer wake-ups. Such a record waits one to two windows.
                let active = !state.queue.is_empty()
                    || state
                        .last_unwaited
                        .is_some_and(|at| now.duration_since(at) < STAY_AWAKE);
                let checkpoint_in = state
                    .dirty
                    .then(|| (checkpointed + CHECKPOINT_EVERY).saturating_duration_since(now));
                let timeout = match (active.then_some(COMPANY_WINDOW), checkpoint_in) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                state.polling = active;
                state = self.wait(state, timeout);
                continue;
            }
            drop(state);
            self.drain();
            state = self.lock_state();
        }
    }

    /// As the holder of `busy`: commits until the queue is empty, then lets `busy` go.
    fn drain(&self) {
        loop {
            let mut batch = {
                let mut state = self.lock_state();
                if state.queue.is_empty() {
                    state.busy = false;
                    return;
                }
                state.dirty = true;
                state.urgent = false;
                let n = state.queue.len().min(MAX_BATCH);
                state.queue.drain(..n).map(|q| q.pending).collect()
            };
            let guard = Committing(self);
            let _ = self.lock_writer().commit_blocking(&mut batch, true);
            drop(guard);
        }
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        match timeout {
            Some(timeout) => {
                self.wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
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

/// Inserts the rows and the checkpoint in one transaction on the writer's own SQLite
/// connection. Each statement is prepared once.
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

/// Inserts the rows and the checkpoint in one transaction through sqlx, one INSERT per chunk of
/// rows.
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
    use std::sync::{Arc, Mutex};

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
            let Ok(Sink::Sqlite { conn, .. }) = Sink::open(store.pool().clone()).await else {
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
            let is_own = matches!(Sink::open(pool.clone()).await, Ok(Sink::Sqlite { .. }));
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

    async fn sqlite_pool(dir: &std::path::Path) -> sqlx::AnyPool {
        let url = format!("sqlite://{}", dir.join("a.db").display());
        crate::store::Store::open(&url)
            .await
            .unwrap()
            .pool()
            .clone()
    }

    /// The names of the threads that made a log's commits, one a commit.
    type Committers = Arc<Mutex<Vec<Option<String>>>>;

    /// A log on `pool` whose commits note the thread that made them.
    async fn log_noting_committers(pool: &sqlx::AnyPool) -> (super::AuditLog, Committers) {
        let committers = Committers::default();
        let seen = committers.clone();
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let log = super::AuditLog::start(pool.clone(), key, "w".into(), move |_| {
            let name = std::thread::current().name().map(str::to_owned);
            seen.lock().unwrap().push(name);
        })
        .await
        .unwrap();
        (log, committers)
    }

    async fn sqlite_log(dir: &std::path::Path) -> (sqlx::AnyPool, super::AuditLog) {
        let pool = sqlite_pool(dir).await;
        let (log, _) = log_noting_committers(&pool).await;
        (pool, log)
    }

    async fn stored(pool: &sqlx::AnyPool) -> Vec<(i64, serde_json::Value)> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, body FROM audit_records ORDER BY seq")
                .fetch_all(pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(seq, body)| (seq, serde_json::from_str(&body).unwrap()))
            .collect()
    }

    /// Callers on two threads commit inline and hand over to the writer's thread in turn; the
    /// chain holds every record once, each caller's records in the order it sent them, and it
    /// verifies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_keep_one_chain_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, log) = sqlite_log(dir.path()).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16 {
            let log = log.clone();
            tasks.spawn(async move {
                for k in 0..25 {
                    log.record_nowait(&serde_json::json!({ "t": t, "i": 2 * k }))
                        .unwrap();
                    log.record(&serde_json::json!({ "t": t, "i": 2 * k + 1 }))
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let rows = stored(&pool).await;
        assert_eq!(rows.len(), 800);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, (seq, _))| *seq == i as i64 + 1)
        );
        for t in 0..16 {
            let order: Vec<i64> = rows
                .iter()
                .filter(|(_, body)| body["t"] == t)
                .map(|(_, body)| body["i"].as_i64().unwrap())
                .collect();
            assert_eq!(order, (0..50).collect::<Vec<_>>(), "caller {t}");
        }
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        let report = crate::audit::verify(&pool, &key, &[]).await.unwrap();
        assert_eq!((report.records, report.problems.len()), (800, 0));
    }

    /// Records nobody waits for are committed by the writer's thread on their own, and what is
    /// queued when the last handle goes is committed before the thread ends.
    #[tokio::test]
    async fn records_nobody_waits_for_are_committed_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, log) = sqlite_log(dir.path()).await;
        log.record_nowait(&serde_json::json!({ "i": 1 })).unwrap();
        wait_for_rows(&pool, 1).await;
        for i in 2..=4 {
            log.record_nowait(&serde_json::json!({ "i": i })).unwrap();
        }
        drop(log);
        wait_for_rows(&pool, 4).await;
    }

    async fn wait_for_rows(pool: &sqlx::AnyPool, n: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while stored(pool).await.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} records not stored"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A commit made inline does not wait for SQLite's lock: while another connection holds
    /// it, the attempt is refused at once (the connection's busy timeout is 0 for it), and the
    /// batch comes back untouched.
    #[tokio::test]
    async fn an_inline_commit_does_not_wait_for_sqlites_lock() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(Sink::Sqlite { conn, .. }) = Sink::open(sqlite_pool(dir.path()).await).await else {
            panic!("not the writer's own connection");
        };
        let mut writer = super::Writer {
            sink: (),
            key: ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
            writer: "w".into(),
            seq: 0,
            prev: crate::audit::chain::GENESIS,
            on_commit: Box::new(|_| {}),
        }
        .with(conn);
        let busy_timeout = |w: &super::Writer<rusqlite::Connection>| -> i64 {
            w.sink
                .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
                .unwrap()
        };
        let blocker = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut batch = vec![record(true)];
        assert!(writer.commit_blocking(&mut batch, false).is_err());
        assert_eq!((batch.len(), writer.seq, busy_timeout(&writer)), (1, 0, 0));

        blocker.execute_batch("COMMIT").unwrap();
        assert!(writer.commit_blocking(&mut batch, true).is_ok());
        assert_eq!((batch.len(), writer.seq), (0, 1));
        assert_eq!(
            busy_timeout(&writer),
            super::BUSY_TIMEOUT.as_millis() as i64
        );
    }

    /// Through the log: the caller's refused batch goes to the writer's thread, which stores it
    /// once the lock is free. Nothing is acknowledged before.
    #[tokio::test(flavor = "current_thread")]
    async fn a_locked_database_is_waited_for_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let pool = sqlite_pool(dir.path()).await;
        let (log, committers) = log_noting_committers(&pool).await;
        let blocker = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.record(&serde_json::json!({ "i": 1 })).await }
        });
        // The spawned task queues its record and waits for it before this one goes on.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());

        blocker.execute_batch("COMMIT").unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 1);
        assert_eq!(
            *committers.lock().unwrap(),
            [Some("audit-writer".to_owned())]
        );
        assert_eq!(stored(&pool).await.len(), 1);
    }

    /// At `synchronous = NORMAL` a caller who finds the writer idle commits its record on its own
    /// thread; at FULL, where a commit waits for an fsync, the writer's thread commits it.
    #[tokio::test(flavor = "current_thread")]
    async fn who_commits_depends_on_whether_a_commit_waits_for_the_disk() {
        use crate::{config::raw::SqliteSynchronous, store::Store};

        let dir = tempfile::tempdir().unwrap();
        for (setting, committer) in [
            (SqliteSynchronous::Normal, "caller"),
            (SqliteSynchronous::Full, "audit-writer"),
        ] {
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("{setting:?}.db")).display()
            );
            let pool = Store::open_with(&url, setting)
                .await
                .unwrap()
                .pool()
                .clone();
            let (log, committers) = log_noting_committers(&pool).await;
            for i in 1..=3 {
                assert_eq!(log.record(&serde_json::json!({ "i": i })).await.unwrap(), i);
            }
            let caller = std::thread::current().name().map(str::to_owned);
            let expected = if committer == "caller" {
                caller
            } else {
                Some(committer.to_owned())
            };
            assert_eq!(
                *committers.lock().unwrap(),
                vec![expected; 3],
                "{setting:?}"
            );
        }
    }

    /// Callers commit inline again once no waited-for record has queued behind a commit for
    /// [`super::INLINE_AFTER_CONTENTION`].
    #[test]
    fn contention_hands_commits_to_the_thread_for_a_while() {
        let t0 = std::time::Instant::now();
        let mut state = super::State::default();
        assert!(!state.contended_lately(t0));
        state.contended = Some(t0);
        assert!(state.contended_lately(t0));
        assert!(state.contended_lately(t0 + super::INLINE_AFTER_CONTENTION / 2));
        assert!(!state.contended_lately(t0 + super::INLINE_AFTER_CONTENTION));
    }

    /// A commit that panics stops the writer for good: the call whose commit it was fails,
    /// and every later record is refused at once instead of waiting forever.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_commit_stops_the_writer_instead_of_hanging_it() {
        let dir = tempfile::tempdir().unwrap();
        let pool = sqlite_pool(dir.path()).await;
        let commits = Arc::new(Mutex::new(0));
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let log = super::AuditLog::start(pool, key, "w".into(), move |_| {
            let mut n = commits.lock().unwrap();
            *n += 1;
            assert!(*n < 2, "the second commit's hook panics");
        })
        .await
        .unwrap();
        assert_eq!(log.record(&serde_json::json!({ "i": 1 })).await.unwrap(), 1);
        let second = tokio::spawn({
            let log = log.clone();
            async move { log.record(&serde_json::json!({ "i": 2 })).await }
        });
        assert!(second.await.unwrap_err().is_panic());
        assert!(matches!(
            log.record(&serde_json::json!({ "i": 3 })).await,
            Err(super::AuditError::Stopped)
        ));
        assert!(matches!(
            log.record_nowait(&serde_json::json!({ "i": 4 })),
            Err(super::AuditError::Stopped)
        ));
    }

    fn json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            // Any characters, control characters and non-ASCII included.
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        // The hash of a record covers these bytes, and `audit verify` recomputes them from the
        // stored text with the verifier's parser: both ways must agree on every value.
        #[test]
        fn canonical_bytes_match_the_verifiers_canonical_text(value in json()) {
            let text = verifier::canonical::canonicalize(&value.to_string()).unwrap();
            proptest::prop_assert_eq!(super::canonical(&value).unwrap(), text);
        }
    }

    #[test]
    fn canonical_bytes_refuse_what_the_verifier_refuses_as_too_deep() {
        for depth in [127, 128, 129, 130] {
            let mut value = serde_json::json!(1);
            for _ in 0..depth {
                value = serde_json::json!([value]);
            }
            assert_eq!(
                super::canonical(&value).is_ok(),
                verifier::canonical::canonicalize(&value.to_string()).is_ok(),
                "{depth} levels"
            );
        }
        let mut value = serde_json::json!([]);
        for _ in 0..128 {
            value = serde_json::json!({ "k": value });
        }
        assert!(super::canonical(&value).is_ok());
        assert!(super::canonical(&serde_json::json!([value])).is_err());
    }
}
