//! The gateway's database: SQLite by default, Postgres by `database_url`, one set of migrations.
//!
//! SQL here is the common subset of both (`$N` placeholders, `ON CONFLICT`, `BIGINT` times) so
//! one migration directory serves both backends through sqlx's `Any` driver.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row, any::AnyPoolOptions};

use crate::config::{
    ServerSpec, TransportSpec,
    raw::{RawServer, SqliteSynchronous},
};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored server `{name}` is not valid JSON: {source}")]
    BadSpec {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A server registered in the database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredServer {
    pub name: String,
    /// `config` (recorded from gateway.toml) or `import` (registered by `import-servers`).
    pub source: String,
    pub spec: serde_json::Value,
    pub updated_at: i64,
}

/// Settings of every connection to a SQLite file, the pool's and the audit writer's own: no
/// connection checkpoints the write-ahead log by itself (with `synchronous = NORMAL` a checkpoint
/// syncs the file, milliseconds that a commit crossing SQLite's size threshold would otherwise
/// wait). The audit writer checkpoints instead, between two of its commits: only a checkpoint
/// that completes before the next write transaction begins lets that transaction start the log
/// over, so a checkpointer running beside a steady writer would let the log grow without end.
/// After the log starts over, its file is cut back to 32 MiB.
pub const SQLITE_CHECKPOINTS_BY_THE_WRITER: &str =
    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 33554432";

/// The file of `pool`'s database when it is SQLite on a file (not in memory), for the work that
/// goes straight to SQLite through a connection of its own: the audit writer's commits and the
/// reads of `audit verify`. Through sqlx each statement, and each row read, is a hand-off to
/// another thread.
pub async fn sqlite_file(pool: &AnyPool) -> Result<Option<String>, sqlx::Error> {
    if pool.connect_options().database_url.scheme() != "sqlite" {
        return Ok(None);
    }
    for row in sqlx::query("PRAGMA database_list").fetch_all(pool).await? {
        if row.try_get::<String, _>(1)? == "main" {
            let file: String = row.try_get(2)?;
            return Ok(Some(file).filter(|f| !f.is_empty()));
        }
    }
    Ok(None)
}

/// The open database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating a SQLite file when needed) and migrates the database at `url`, with
    /// SQLite commits done once they are in the write-ahead log.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, SqliteSynchronous::Normal).await
    }

    /// [`Self::open`] with the given SQLite `synchronous` setting.
    ///
    /// A SQLite database is put in WAL mode: readers do not block the writer, and a commit is
    /// one append to the log rather than a rollback journal written, synced and deleted.
    pub async fn open_with(url: &str, synchronous: SqliteSynchronous) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let connect_url = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(parent) =
                std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
            {
                let _ = std::fs::create_dir_all(parent);
            }
            if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            }
        } else {
            url.to_owned()
        };
        let open_error = |source| StoreError::Open {
            url: redact_url(url),
            source,
        };
        if url.starts_with("sqlite:") {
            // The journal mode belongs to the file: set it once, before the pool's connections.
            let mut conn = AnyConnection::connect(&connect_url)
                .await
                .map_err(open_error)?;
            let mode = sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&mut conn)
                .await
                .and_then(|row| row.map(|r| r.try_get::<String, _>(0)).transpose());
            match mode {
                Ok(Some(mode)) if mode == "wal" || mode == "memory" => {}
                // Another process holding the file in rollback mode keeps it there; the data is
                // as safe, commits are only slower.
                other => tracing::warn!(
                    result = ?other,
                    "the SQLite database could not be put in WAL mode; commits will be slower"
                ),
            }
            conn.close().await.map_err(open_error)?;
        }
        let synchronous = match synchronous {
            SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
            SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // A SQLite connection is a file handle, not a socket that can go stale: testing it
            // would be one more round trip to its worker thread for every query.
            .test_before_acquire(!url.starts_with("sqlite:"))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        conn.execute(synchronous).await?;
                        conn.execute(SQLITE_CHECKPOINTS_BY_THE_WRITER).await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(open_error)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The tool definition store, over the same database.
    pub fn definitions(&self) -> keys::definitions::DefinitionStore {
        keys::definitions::DefinitionStore::new(self.pool.clone())
    }

    /// The local key revocation list, over the same database.
    pub fn revocations(&self) -> keys::revocations::RevocationStore {
        keys::revocations::RevocationStore::new(self.pool.clone())
    }

    /// The connection pool, for the audit trail.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The API keys of clients, over the same database.
    pub fn api_keys(&self) -> crate::identity::api_keys::ApiKeys {
        crate::identity::api_keys::ApiKeys::new(self.pool.clone())
    }

    /// The key pin store, over the same database.
    pub fn pins(&self) -> keys::pins::PinStore {
        keys::pins::PinStore::new(self.pool.clone())
    }

    /// Records the servers of the configuration, without their secrets.
    pub async fn record_config_servers(&self, servers: &[ServerSpec]) -> Result<(), StoreError> {
        for server in servers {
            let spec = match &server.transport {
                TransportSpec::Stdio(s) => serde_json::json!({
                    "command": s.command,
                    "args": s.args,
                    "env": s.env.keys().collect::<Vec<_>>(),
                }),
                TransportSpec::Http(h) => serde_json::json!({
                    "url": h.url,
                    "headers": h.headers.keys().collect::<Vec<_>>(),
                }),
            };
            self.upsert(&server.name, "config", &spec.to_string())
                .await?;
        }
        Ok(())
    }

    /// Registers an imported server, replacing an earlier import of the same name.
    pub async fn put_imported(&self, name: &str, server: &RawServer) -> Result<(), StoreError> {
        let spec = serde_json::to_string(server).map_err(|source| StoreError::BadSpec {
            name: name.to_owned(),
            source,
        })?;
        self.upsert(name, "import", &spec).await
    }

    async fn upsert(&self, name: &str, source: &str, spec: &str) -> Result<(), StoreError> {
        let now = now();
        sqlx::query(
            "INSERT INTO servers (name, source, spec, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET source = $2, spec = $3, updated_at = $4",
        )
        .bind(name)
        .bind(source)
        .bind(spec)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every registered server, by name.
    pub async fn servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        let rows = sqlx::query("SELECT name, source, spec, updated_at FROM servers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let spec: String = row.try_get("spec")?;
                let spec = serde_json::from_str(&spec).map_err(|source| StoreError::BadSpec {
                    name: name.clone(),
                    source,
                })?;
                Ok(StoredServer {
                    name,
                    source: row.try_get("source")?,
                    spec,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// The imported servers, as raw entries to validate like the config's own.
    pub async fn imported(&self) -> Result<Vec<(String, RawServer)>, StoreError> {
        let mut out = Vec::new();
        for server in self.servers().await? {
            if server.source == "import" {
                let raw =
                    serde_json::from_value(server.spec).map_err(|source| StoreError::BadSpec {
                        name: server.name.clone(),
                        source,
                    })?;
                out.push((server.name, raw));
            }
        }
        Ok(out)
    }

    /// Removes a registered server; returns whether it existed.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM servers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// A database URL with any password replaced, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/g.db"), "sqlite://data/g.db");
    }

    async fn round_trip(url: &str) {
        let store = Store::open(url).await.unwrap();
        let raw = RawServer {
            command: Some("uvx".into()),
            args: vec!["mcp-server-time".into()],
            ..RawServer::default()
        };
        store.put_imported("time", &raw).await.unwrap();
        store.put_imported("time", &raw).await.unwrap();
        let imported = store.imported().await.unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].1.args, ["mcp-server-time"]);
        assert!(store.remove("time").await.unwrap());
        assert!(!store.remove("time").await.unwrap());
    }

    #[tokio::test]
    async fn sqlite_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(&format!("sqlite://{}/sub/gateway.db", dir.path().display())).await;
        assert!(dir.path().join("sub/gateway.db").exists());
    }

    /// The file is in WAL mode, and every pooled connection has the configured `synchronous`
    /// (1 = NORMAL, 2 = FULL), including ones opened after the first.
    #[tokio::test]
    async fn sqlite_is_wal_with_the_configured_settings() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/gateway.db", dir.path().display());
        for (setting, expected) in [(SqliteSynchronous::Normal, 1), (SqliteSynchronous::Full, 2)] {
            let store = Store::open_with(&url, setting).await.unwrap();
            let mut held = Vec::new();
            for _ in 0..3 {
                let mut conn = store.pool().acquire().await.unwrap();
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(mode, "wal");
                let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(synchronous, expected, "{setting:?}");
                // Both statements of the shared settings ran.
                let settings: (i64, i64) = (
                    sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                        .fetch_one(&mut *conn)
                        .await
                        .unwrap(),
                    sqlx::query_scalar("PRAGMA journal_size_limit")
                        .fetch_one(&mut *conn)
                        .await
                        .unwrap(),
                );
                assert_eq!(settings, (0, 33_554_432));
                held.push(conn);
            }
            drop(held);
            store.pool().close().await;
        }
    }

    #[tokio::test]
    async fn postgres_round_trip() {
        // Runs when the test command provides a database (it does in CI); the test command
        // prints that it was skipped otherwise.
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!("skipped: TEST_DATABASE_URL is not set");
            return;
        };
        round_trip(&url).await;
    }
}
