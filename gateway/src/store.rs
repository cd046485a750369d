//! The gateway's database: SQLite by default, Postgres by `database_url`, one set of migrations.
//!
//! SQL here is the common subset of both (`$N` placeholders, `ON CONFLICT`, `BIGINT` times) so
//! one migration directory serves both backends through sqlx's `Any` driver.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AnyPool, Row, any::AnyPoolOptions};

use crate::config::{ServerSpec, TransportSpec, raw::RawServer};

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
    /// Opens (creating a SQLite file when needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact_url(url),
                source,
            })?;
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
