//! Keys revoked locally by a person (`mcp-gateway revoke`), in the gateway's database. A tool
//! signed with a revoked key is rejected, whatever its publisher's own revocation list says.

use sqlx::{AnyPool, Row};

/// One locally revoked key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revocation {
    pub fingerprint: String,
    pub reason: String,
    pub revoked_at: i64,
    pub revoked_by: String,
}

/// The local revocation list; its table comes from the gateway's migrations.
#[derive(Clone)]
pub struct RevocationStore {
    pool: AnyPool,
}

impl RevocationStore {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Revokes a key; returns whether it was not revoked before. Audit-logged.
    pub async fn revoke(
        &self,
        fingerprint: &str,
        reason: &str,
        by: &str,
    ) -> Result<bool, sqlx::Error> {
        let now = crate::db::now();
        let inserted = sqlx::query(
            "INSERT INTO revoked_keys (fingerprint, reason, revoked_at, revoked_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(fingerprint)
        .bind(reason)
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            tracing::info!(target: "audit", event = "key revoked", fingerprint, reason, by, "key revoked");
        }
        Ok(inserted)
    }

    /// The revocation of a key, if it is revoked.
    pub async fn get(&self, fingerprint: &str) -> Result<Option<Revocation>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT fingerprint, reason, revoked_at, revoked_by FROM revoked_keys WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| revocation_from_row(&row)).transpose()
    }

    /// Every revoked key, oldest first.
    pub async fn list(&self) -> Result<Vec<Revocation>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT fingerprint, reason, revoked_at, revoked_by FROM revoked_keys ORDER BY revoked_at, fingerprint",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revocation_from_row).collect()
    }

    /// How many keys are revoked: it only grows, so a running gateway re-checks its tools when
    /// it changes.
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) AS n FROM revoked_keys")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")
    }
}

fn revocation_from_row(row: &sqlx::any::AnyRow) -> Result<Revocation, sqlx::Error> {
    Ok(Revocation {
        fingerprint: row.try_get("fingerprint")?,
        reason: row.try_get("reason")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocations_are_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::migrated_pool(&crate::db::sqlite_url(dir.path())).await;
        let store = RevocationStore::new(pool);
        assert_eq!(store.count().await.unwrap(), 0);
        assert!(
            store
                .revoke("sha256:aa", "key_compromise", "alice")
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke("sha256:aa", "superseded", "bob")
                .await
                .unwrap()
        );
        let revocation = store.get("sha256:aa").await.unwrap().unwrap();
        assert_eq!(
            (revocation.reason.as_str(), revocation.revoked_by.as_str()),
            ("key_compromise", "alice")
        );
        assert_eq!(store.get("sha256:bb").await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 1);
        assert_eq!(store.list().await.unwrap().len(), 1);
    }
}
