//! Audit trail throughput: signed, chained records stored in group commits on SQLite (a file,
//! WAL), and the time to verify a trail of 1,000,000 records.
//!
//! `cargo bench -p mcp-gateway --bench audit`. A plain harness: each figure is one timed run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::time::Instant;

use ed25519_dalek::SigningKey;
use gateway::audit::{self, AuditLog};

/// A record of the size the gateway writes for a decision.
fn record(i: u64) -> serde_json::Value {
    serde_json::json!({
        "kind": "decision", "time": 1_790_000_000_000u64 + i, "client": "alice",
        "groups": ["eng", "ops"], "via": "api-key", "session": "17", "method": "tools/call",
        "server": "files", "tool": "files__read", "local": "read", "verification": "verified",
        "decision": "allow", "policies": ["eng-uses-files"],
        "conditions": {"sandbox": null, "redact": [], "rate_limit": null},
        "argumentsDigest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "arguments": {"path": format!("/srv/data/{i}.txt")},
    })
}

async fn write(log: &AuditLog, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n - 1 {
        log.record_nowait(&record(i)).unwrap();
    }
    log.record(&record(n)).await.unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = gateway::store::Store::open(&url).await.unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);

    let log = AuditLog::start(store.pool().clone(), key.clone(), "bench-a".into(), |_| {})
        .await
        .unwrap();
    let rate = write(&log, 200_000).await;
    println!("write, 200,000 records, one producer: {rate:>10.0} records/s");

    // Eight producers at once, as concurrent calls would be.
    let log = AuditLog::start(store.pool().clone(), key.clone(), "bench-b".into(), |_| {})
        .await
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { write(&log, 25_000).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "write, 200,000 records, 8 producers:  {:>10.0} records/s",
        200_000.0 / start.elapsed().as_secs_f64()
    );

    // One caller waiting for each record's commit in turn: what a lone call's answer waits for.
    let log = AuditLog::start(store.pool().clone(), key.clone(), "bench-e".into(), |_| {})
        .await
        .unwrap();
    let mut waits = Vec::with_capacity(5_000);
    for i in 0..5_000 {
        let start = Instant::now();
        log.record(&record(i)).await.unwrap();
        waits.push(start.elapsed());
    }
    waits.sort();
    println!(
        "write, one caller waiting for each record: p50 {} µs, p99 {} µs",
        waits[waits.len() / 2].as_micros(),
        waits[waits.len() * 99 / 100].as_micros()
    );

    // Waiting for every record (each caller waits for its own commit), 64 callers at once.
    let log = AuditLog::start(store.pool().clone(), key.clone(), "bench-c".into(), |_| {})
        .await
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..1_000 {
                    log.record(&record(t * 1_000 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "write, 64,000 records, 64 callers each waiting: {:>10.0} records/s",
        64_000.0 / start.elapsed().as_secs_f64()
    );

    let log = AuditLog::start(store.pool().clone(), key.clone(), "bench-d".into(), |_| {})
        .await
        .unwrap();
    write(&log, 1_000_000 - 200_000 - 200_000 - 5_000 - 64_000).await;
    // The trail as it is a second after its last write on a running gateway: the write-ahead
    // log copied into the database file (see `store::SQLITE_CHECKPOINTS_BY_THE_WRITER`), outside the timed part.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.pool())
        .await
        .unwrap();
    let checkpoints: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let start = Instant::now();
    let report = audit::verify(store.pool(), &key.verifying_key(), &[])
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert!(report.problems.is_empty());
    println!(
        "verify, {} records in {} chains, {checkpoints} signed checkpoints: {:.2} s",
        report.records,
        report.writers,
        elapsed.as_secs_f64()
    );
}
