//! The audit trail against a real database: group commits, then tampering done directly in
//! SQLite and in Postgres, each found and named by `verify`.

use ed25519_dalek::SigningKey;
use sqlx::AnyPool;

use super::{chain::Problem, *};

async fn pool(url: &str) -> AnyPool {
    let store = crate::store::Store::open(url).await.unwrap();
    store.pool().clone()
}

/// A writer with a unique name, so runs against a shared Postgres database never meet.
async fn writer(pool: &AnyPool) -> AuditLog {
    AuditLog::start(
        pool.clone(),
        SigningKey::from_bytes(&[3; 32]),
        format!("test-{}", uuid::Uuid::new_v4()),
        |_| {},
    )
    .await
    .unwrap()
}

fn key() -> ed25519_dalek::VerifyingKey {
    SigningKey::from_bytes(&[3; 32]).verifying_key()
}

/// Writes `n` records, most without waiting, the last waited for.
async fn write(log: &AuditLog, n: i64) {
    write_more(log, 1, n).await;
}

/// The problem `verify` (with `anchors`) finds in the chain of `writer`, if any.
async fn problem_of(pool: &AnyPool, writer: &str, anchors: &[StoredCheckpoint]) -> Option<Problem> {
    verify(pool, &key(), anchors)
        .await
        .unwrap()
        .problems
        .into_iter()
        .find(|p| serde_json::to_value(p).unwrap()["writer"] == writer)
}

async fn exec(pool: &AnyPool, sql: &str, writer: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(writer)
        .execute(pool)
        .await
        .unwrap();
}

async fn tampering_is_found(url: &str) {
    let pool = pool(url).await;
    let w = |log: &AuditLog| log.writer().to_owned();

    let log = writer(&pool).await;
    write(&log, 30).await;
    assert_eq!(problem_of(&pool, log.writer(), &[]).await, None);
    let entries = entries(&pool, None, None).await.unwrap();
    assert_eq!(
        entries.iter().filter(|e| e.writer == log.writer()).count(),
        30
    );

    // Edited.
    exec(
        &pool,
        "UPDATE audit_records SET body = '{\"i\":999}' WHERE writer = $1 AND seq = 10",
        log.writer(),
    )
    .await;
    assert_eq!(
        problem_of(&pool, log.writer(), &[]).await,
        Some(Problem::Modified {
            writer: w(&log),
            seq: 10
        })
    );

    // Deleted.
    let log = writer(&pool).await;
    write(&log, 30).await;
    exec(
        &pool,
        "DELETE FROM audit_records WHERE writer = $1 AND seq = 20",
        log.writer(),
    )
    .await;
    assert_eq!(
        problem_of(&pool, log.writer(), &[]).await,
        Some(Problem::Missing {
            writer: w(&log),
            seq: 20
        })
    );

    // Reordered: records 5 and 6 trade places.
    let log = writer(&pool).await;
    write(&log, 30).await;
    exec(
        &pool,
        "UPDATE audit_records SET seq = -6 WHERE writer = $1 AND seq = 6",
        log.writer(),
    )
    .await;
    exec(
        &pool,
        "UPDATE audit_records SET seq = 6 WHERE writer = $1 AND seq = 5",
        log.writer(),
    )
    .await;
    exec(
        &pool,
        "UPDATE audit_records SET seq = 5 WHERE writer = $1 AND seq = -6",
        log.writer(),
    )
    .await;
    assert_eq!(
        problem_of(&pool, log.writer(), &[]).await,
        Some(Problem::Unlinked {
            writer: w(&log),
            seq: 5
        })
    );

    // Truncated: the newest records removed.
    let log = writer(&pool).await;
    write(&log, 30).await;
    exec(
        &pool,
        "DELETE FROM audit_records WHERE writer = $1 AND seq > 25",
        log.writer(),
    )
    .await;
    assert_eq!(
        problem_of(&pool, log.writer(), &[]).await,
        Some(Problem::Truncated {
            writer: w(&log),
            last: 25,
            seq: 30
        })
    );

    // Forged: record 12 rewritten and every hash after it recomputed, so the chain links; the
    // signed checkpoint at the end disagrees.
    let log = writer(&pool).await;
    write(&log, 30).await;
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, body, hash FROM audit_records WHERE writer = $1 ORDER BY seq")
            .bind(log.writer())
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut prev = chain::unhex::<32>(&rows[10].2).unwrap();
    for (seq, body, _) in rows.iter().skip(11) {
        let body = if *seq == 12 {
            "{\"forged\":true}".to_owned()
        } else {
            body.clone()
        };
        let hash = chain::link(&prev, &body);
        sqlx::query(
            "UPDATE audit_records SET body = $1, prev_hash = $2, hash = $3 WHERE writer = $4 AND seq = $5",
        )
        .bind(&body)
        .bind(hex::encode(prev))
        .bind(hex::encode(hash))
        .bind(log.writer())
        .bind(*seq)
        .execute(&pool)
        .await
        .unwrap();
        prev = hash;
    }
    let found = problem_of(&pool, log.writer(), &[]).await;
    assert!(
        matches!(&found, Some(Problem::Forged { after, seq, .. }) if *after < 12 && *seq >= 12),
        "{found:?}"
    );

    // Appended: a record that links to the last one, with no checkpoint (no key to sign one).
    let log = writer(&pool).await;
    write(&log, 30).await;
    let last: String =
        sqlx::query_scalar("SELECT hash FROM audit_records WHERE writer = $1 AND seq = 30")
            .bind(log.writer())
            .fetch_one(&pool)
            .await
            .unwrap();
    let prev = chain::unhex::<32>(&last).unwrap();
    let body = "{\"kind\":\"forged\"}";
    sqlx::query(
        "INSERT INTO audit_records (writer, seq, at, body, prev_hash, hash) VALUES ($1, 31, 0, $2, $3, $4)",
    )
    .bind(log.writer())
    .bind(body)
    .bind(&last)
    .bind(hex::encode(chain::link(&prev, body)))
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        problem_of(&pool, log.writer(), &[]).await,
        Some(Problem::Unsigned {
            writer: w(&log),
            seq: 31
        })
    );
}

#[tokio::test]
async fn tampering_in_sqlite_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    tampering_is_found(&format!("sqlite://{}", dir.path().join("a.db").display())).await;
}

#[tokio::test]
async fn tampering_in_postgres_is_found_and_named() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    };
    tampering_is_found(&url).await;
}

#[tokio::test]
async fn a_waited_record_is_stored_and_a_new_writer_starts_its_own_chain() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&format!("sqlite://{}", dir.path().join("b.db").display())).await;
    let first = writer(&pool).await;
    write(&first, 5).await;
    let second = writer(&pool).await;
    write(&second, 3).await;
    let report = verify(&pool, &key(), &[]).await.unwrap();
    assert_eq!((report.writers, report.records), (2, 8));
    assert!(report.problems.is_empty());
    // Another key does not verify the checkpoints.
    let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
    assert_eq!(verify(&pool, &other, &[]).await.unwrap().problems.len(), 2);
}

async fn anchors_reveal_a_clean_truncation(url: &str) {
    let pool = pool(url).await;
    let log = writer(&pool).await;
    // Each waited-for record ends a group commit: checkpoints at 10 and at 20.
    write(&log, 10).await;
    write_more(&log, 11, 20).await;
    let anchored: Vec<_> = anchors(&pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.writer == log.writer())
        .collect();
    assert_eq!(anchored.len(), 1);
    assert_eq!(anchored[0].seq, 20);
    assert_eq!(problem_of(&pool, log.writer(), &anchored).await, None);
    // More records after the anchor are fine: the trail still reaches it.
    write_more(&log, 21, 25).await;
    assert_eq!(problem_of(&pool, log.writer(), &anchored).await, None);

    // The newest records removed together with their checkpoints, cut at a checkpoint: the
    // trail on its own looks whole, the anchor says how far it reached. Then the whole chain:
    // the anchor still names it.
    for kept in [10, 0] {
        for table in ["audit_checkpoints", "audit_records"] {
            exec(
                &pool,
                &format!("DELETE FROM {table} WHERE writer = $1 AND seq > {kept}"),
                log.writer(),
            )
            .await;
        }
        assert_eq!(problem_of(&pool, log.writer(), &[]).await, None);
        assert_eq!(
            problem_of(&pool, log.writer(), &anchored).await,
            Some(Problem::Truncated {
                writer: log.writer().to_owned(),
                last: kept,
                seq: 20
            })
        );
    }
    // An anchor not signed by the audit key is reported, not trusted.
    let mut forged = anchored[0].clone();
    forged.seq = 999;
    assert_eq!(
        problem_of(&pool, log.writer(), &[forged]).await,
        Some(Problem::BadCheckpoint {
            writer: log.writer().to_owned(),
            seq: 999
        })
    );
}

/// Writes records `from..=to` of `log`, most without waiting, the last waited for.
async fn write_more(log: &AuditLog, from: i64, to: i64) {
    for i in from..to {
        log.record_nowait(&serde_json::json!({"kind": "test", "i": i}))
            .unwrap();
    }
    assert_eq!(
        log.record(&serde_json::json!({"kind": "test", "i": to}))
            .await
            .unwrap(),
        to
    );
}

#[tokio::test]
async fn anchors_reveal_a_clean_truncation_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    anchors_reveal_a_clean_truncation(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await;
}

#[tokio::test]
async fn anchors_reveal_a_clean_truncation_in_postgres() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    };
    anchors_reveal_a_clean_truncation(&url).await;
}

/// An idle writer copies SQLite's write-ahead log into the database file soon after its last
/// commit, so readers in other processes (`audit verify`) read the file, not a long log. Also
/// when the writer's thread, its last checkpoint done, sleeps while callers make every commit
/// themselves (records that are all waited for).
#[tokio::test]
async fn an_idle_writer_checkpoints_the_log_into_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.db");
    let pool = pool(&format!("sqlite://{}", file.display())).await;
    let log = writer(&pool).await;
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    write(&log, 500).await;
    checkpointed(&file, before, "decisions and outcomes").await;
    let before = size();
    for i in 501..=1000 {
        log.record(&serde_json::json!({"kind": "test", "i": i}))
            .await
            .unwrap();
    }
    checkpointed(&file, before, "outcomes only").await;
}

/// Waits until SQLite's log has been copied into `file`, which was `before` bytes.
async fn checkpointed(file: &std::path::Path, before: u64, records: &str) {
    let size = || std::fs::metadata(file).unwrap().len();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the records stayed in the log ({records}): the file is still {before} bytes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn redaction_replaces_only_the_named_paths() {
    let args = serde_json::json!({"user": {"password": "x", "name": "n"}, "token": "t", "n": 1});
    let redacted = redact(
        &args,
        &["user.password".into(), "token".into(), "missing.x".into()],
    );
    assert_eq!(
        redacted,
        serde_json::json!({"user": {"password": "[redacted]", "name": "n"}, "token": "[redacted]", "n": 1})
    );
    assert_eq!(digest(&args), digest(&args.clone()));
    assert_ne!(digest(&args), digest(&redacted));
}
