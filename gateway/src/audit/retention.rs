//! Retention: the one way records leave the trail, and itself a record in it.
//!
//! `retain` cuts the oldest records of each chain (those committed before a time) into an
//! archive file, then records a `retention` record that names the archive's SHA-256 and, for
//! every chain that no longer starts at its first record, its base: the sequence number and
//! hash of the last record removed. Only then are the rows deleted. `verify` starts such a chain
//! from its base, so the remaining records still link and a prefix removed any other way is
//! still reported as missing. Each retention record carries the bases of earlier ones forward,
//! so the newest is enough even after the chains holding the earlier ones are cut too.

use std::{collections::BTreeMap, io::Write, path::Path};

use sqlx::{AnyPool, Row};

use super::{AuditError, AuditLog, chain::Problem};

/// Where a cut chain now starts: its records after `seq` follow a record with `hash`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Base {
    pub writer: String,
    pub seq: i64,
    pub hash: String,
}

/// What one retention did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retained {
    pub records: u64,
    pub checkpoints: u64,
    pub archive_sha256: String,
    /// The base of every chain that does not start at its first record any more.
    pub bases: Vec<Base>,
    /// The sequence number of the retention record, in the chain of `log`.
    pub seq: i64,
}

/// Why a retention was not done. Nothing was deleted in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the trail does not verify, so nothing is removed: {0}")]
    Tampered(Problem),
    #[error("archive {path}: {error}")]
    Archive { path: String, error: std::io::Error },
    #[error("--before is in the future")]
    Future,
}

/// The retention records, newest first. Canonical JSON sorts keys and has no spaces, so a
/// retention record contains exactly this. The WHERE clause is the one of the partial index
/// `audit_records_retention` (migration 0007), word for word: that is what lets the database
/// read the index instead of every record's body.
const RETENTION_RECORDS: &str = "SELECT body FROM audit_records \
     WHERE body LIKE '%\"kind\":\"retention\"%' ORDER BY at DESC, writer DESC, seq DESC";

/// The bases of the newest retention record in the trail, by writer.
pub async fn bases(pool: &AnyPool) -> Result<BTreeMap<String, Base>, AuditError> {
    let rows = sqlx::query(RETENTION_RECORDS).fetch_all(pool).await?;
    for row in rows {
        let body: String = row.try_get(0)?;
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        if record["kind"] != "retention" {
            continue;
        }
        let bases: Vec<Base> = serde_json::from_value(record["bases"].clone()).unwrap_or_default();
        return Ok(bases.into_iter().map(|b| (b.writer.clone(), b)).collect());
    }
    Ok(BTreeMap::new())
}

/// Moves every chain's records committed before `before_ms` (a prefix of each chain: a record
/// after a newer one stays) and their checkpoints into a new archive file at `archive` (JSON
/// lines), recording the retention in `log`'s chain before deleting anything. Refuses a trail
/// that does not verify with `key`.
pub async fn retain(
    pool: &AnyPool,
    key: &ed25519_dalek::VerifyingKey,
    log: &AuditLog,
    before_ms: i64,
    archive: &Path,
    by: &str,
) -> Result<Retained, RetentionError> {
    if before_ms > super::now_ms() {
        return Err(RetentionError::Future);
    }
    let report = super::verify(pool, key, &[]).await?;
    if let Some(problem) = report.problems.into_iter().next() {
        return Err(RetentionError::Tampered(problem));
    }
    // The cut of each chain: the records before its first record at or after the time.
    let writers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT writer FROM audit_records")
        .fetch_all(pool)
        .await?;
    let mut cuts: Vec<Base> = Vec::new();
    for writer in writers {
        let first_kept: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_records WHERE writer = $1 AND at >= $2")
                .bind(&writer)
                .bind(before_ms)
                .fetch_one(pool)
                .await?;
        let last_cut: Option<i64> = match first_kept {
            Some(kept) => Some(kept - 1),
            None => {
                sqlx::query_scalar("SELECT MAX(seq) FROM audit_records WHERE writer = $1")
                    .bind(&writer)
                    .fetch_one(pool)
                    .await?
            }
        };
        let Some(seq) = last_cut.filter(|&s| s > 0) else {
            continue;
        };
        let hash: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_records WHERE writer = $1 AND seq = $2")
                .bind(&writer)
                .bind(seq)
                .fetch_optional(pool)
                .await?;
        // No record at the cut: the chain was already cut there.
        if let Some(hash) = hash {
            cuts.push(Base { writer, seq, hash });
        }
    }

    let (records, checkpoints, sha256) = write_archive(pool, &cuts, archive).await?;

    let mut bases = bases(pool).await?;
    for cut in &cuts {
        bases.insert(cut.writer.clone(), cut.clone());
    }
    let bases: Vec<Base> = bases.into_values().collect();
    let seq = log
        .record(&serde_json::json!({
            "kind": "retention",
            "time": super::now_ms(),
            "by": by,
            "before": before_ms,
            "archive": {
                "file": archive.file_name().map(|n| n.to_string_lossy().into_owned()),
                "sha256": sha256,
                "records": records,
                "checkpoints": checkpoints,
            },
            "bases": bases,
        }))
        .await?;

    let mut tx = pool.begin().await?;
    for cut in &cuts {
        for table in ["audit_records", "audit_checkpoints"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE writer = $1 AND seq <= $2"
            )))
            .bind(&cut.writer)
            .bind(cut.seq)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Retained {
        records,
        checkpoints,
        archive_sha256: sha256,
        bases,
        seq,
    })
}

/// Writes the records and checkpoints up to each cut to a new file, synced; returns their
/// counts and the file's SHA-256.
async fn write_archive(
    pool: &AnyPool,
    cuts: &[Base],
    path: &Path,
) -> Result<(u64, u64, String), RetentionError> {
    use sha2::Digest;
    let io = |error| RetentionError::Archive {
        path: path.display().to_string(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    let mut hasher = sha2::Sha256::new();
    let mut line = |value: serde_json::Value| -> Result<(), RetentionError> {
        let mut text = value.to_string();
        text.push('\n');
        hasher.update(text.as_bytes());
        out.write_all(text.as_bytes()).map_err(io)
    };
    let (mut records, mut checkpoints) = (0u64, 0u64);
    for cut in cuts {
        records += archive_rows(
            pool,
            "SELECT seq, hash, at, body, prev_hash FROM audit_records \
             WHERE writer = $1 AND seq <= $2 ORDER BY seq",
            cut,
            |row, mut json| {
                json["type"] = "record".into();
                json["at"] = row.try_get::<i64, _>(2)?.into();
                json["body"] = row.try_get::<String, _>(3)?.into();
                json["prev_hash"] = row.try_get::<String, _>(4)?.into();
                Ok(json)
            },
            &mut line,
        )
        .await?;
        checkpoints += archive_rows(
            pool,
            "SELECT seq, hash, signature FROM audit_checkpoints \
             WHERE writer = $1 AND seq <= $2 ORDER BY seq",
            cut,
            |row, mut json| {
                json["type"] = "checkpoint".into();
                json["signature"] = row.try_get::<String, _>(2)?.into();
                Ok(json)
            },
            &mut line,
        )
        .await?;
    }
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)?;
    Ok((records, checkpoints, hex::encode(hasher.finalize())))
}

/// Writes the rows of `sql` (whose first two columns are `seq` and `hash`) for `cut` as JSON
/// lines, each completed by `fields`; returns how many.
async fn archive_rows(
    pool: &AnyPool,
    sql: &'static str,
    cut: &Base,
    fields: impl Fn(&sqlx::any::AnyRow, serde_json::Value) -> Result<serde_json::Value, sqlx::Error>,
    line: &mut impl FnMut(serde_json::Value) -> Result<(), RetentionError>,
) -> Result<u64, RetentionError> {
    let rows = sqlx::query(sql)
        .bind(&cut.writer)
        .bind(cut.seq)
        .fetch_all(pool)
        .await?;
    for row in &rows {
        let base = serde_json::json!({
            "writer": cut.writer,
            "seq": row.try_get::<i64, _>(0)?,
            "hash": row.try_get::<String, _>(1)?,
        });
        line(fields(row, base)?)?;
    }
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    /// The lookup of retention records reads the partial index, not every record's body.
    #[tokio::test]
    async fn the_retention_lookup_reads_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::Store::open(&url).await.unwrap();
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            super::RETENTION_RECORDS
        )))
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String, _>(3).unwrap())
        .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("audit_records_retention")),
            "{plan:?}"
        );
    }
}
