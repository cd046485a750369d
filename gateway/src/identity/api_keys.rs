//! API keys: created, listed and revoked by `mcp-gateway clients`, stored only as hashes.
//!
//! A key is `mgw_` and 43 characters of base64url (256 random bits). The database holds its
//! SHA-256, so a copy of the database gives no usable key. Lookups are cached for a few seconds
//! so that the hot path does not query the database on every request; a revoked key therefore
//! stops working within [`CACHE_TTL`].

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

use super::{API_KEY_PREFIX, AuthError, AuthMethod, Identity};

/// How long a lookup (found or not) is trusted before the database is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Above this many cached lookups the cache is emptied, so random keys cannot grow it.
const CACHE_LIMIT: usize = 10_000;

/// One stored key, without the key itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyInfo {
    pub client: String,
    pub groups: Vec<String>,
    /// The first characters of the key.
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The API key table, with a short-lived lookup cache.
pub struct ApiKeys {
    pool: AnyPool,
    cache: Mutex<HashMap<[u8; 32], CachedLookup>>,
}

/// A lookup's answer (`None`: no such active key) and when it was made.
type CachedLookup = (Option<Identity>, Instant);

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks a client name: what policies and the audit trail call the client.
pub fn validate_client_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client name `{name}`: use 1 to 128 ASCII letters, digits and `-_.@`"
        ))
    }
}

impl ApiKeys {
    pub fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Creates a key for `client` in `groups` and returns it. This is the only time the key
    /// exists outside the client's hands.
    pub async fn create(&self, client: &str, groups: &[String]) -> Result<String, sqlx::Error> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
        let groups_json = serde_json::to_string(groups).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO api_keys (key_hash, client, groups, prefix, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(hex::encode(hash(&key)))
        .bind(client)
        .bind(groups_json)
        .bind(
            key.chars()
                .take(API_KEY_PREFIX.len() + 6)
                .collect::<String>(),
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<ApiKeyInfo>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT client, groups, prefix, created_at, revoked_at FROM api_keys \
             ORDER BY created_at DESC, client",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ApiKeyInfo {
                    client: row.try_get("client")?,
                    groups: parse_groups(&row.try_get::<String, _>("groups")?),
                    prefix: row.try_get("prefix")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes every key of `client`, or only the one whose prefix is `prefix`. Returns how many
    /// keys were revoked.
    pub async fn revoke(&self, client: &str, prefix: Option<&str>) -> Result<u64, sqlx::Error> {
        let result =
            match prefix {
                Some(prefix) => {
                    sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1 \
                     WHERE client = $2 AND prefix = $3 AND revoked_at IS NULL",
                    )
                    .bind(now())
                    .bind(client)
                    .bind(prefix)
                    .execute(&self.pool)
                    .await?
                }
                None => sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE client = $2 AND revoked_at IS NULL",
                )
                .bind(now())
                .bind(client)
                .execute(&self.pool)
                .await?,
            };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(result.rows_affected())
    }

    /// The identity of the client holding `key`.
    pub async fn identify(&self, key: &str) -> Result<Identity, AuthError> {
        let digest = hash(key);
        if let Some((found, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
            && at.elapsed() < CACHE_TTL
        {
            return found.clone().ok_or(AuthError::UnknownKey);
        }
        let row = sqlx::query(
            "SELECT client, groups FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hex::encode(digest))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let found = match row {
            Some(row) => Some(Identity {
                client: row
                    .try_get("client")
                    .map_err(|e| AuthError::Unavailable(e.to_string()))?,
                groups: parse_groups(
                    &row.try_get::<String, _>("groups")
                        .map_err(|e| AuthError::Unavailable(e.to_string()))?,
                ),
                via: AuthMethod::ApiKey,
            }),
            None => None,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(digest, (found.clone(), Instant::now()));
        found.ok_or(AuthError::UnknownKey)
    }
}

fn parse_groups(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates, finds, lists and revokes a key in the database at `url`. Client names are
    /// unique per run, since a Postgres database outlives the test.
    async fn round_trip(url: &str) {
        let keys = crate::store::Store::open(url).await.unwrap().api_keys();
        let client = format!("alice-{}", uuid::Uuid::new_v4());
        let key = keys.create(&client, &["eng".into()]).await.unwrap();
        assert!(key.starts_with(API_KEY_PREFIX) && key.len() == API_KEY_PREFIX.len() + 43);
        let identity = keys.identify(&key).await.unwrap();
        assert_eq!(identity.client, client);
        assert_eq!(identity.groups, vec!["eng".to_owned()]);
        assert!(matches!(
            keys.identify("mgw_not-a-key").await,
            Err(AuthError::UnknownKey)
        ));

        let listed: Vec<_> = keys
            .list()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.client == client)
            .collect();
        assert_eq!(listed.len(), 1);
        assert!(key.starts_with(&listed[0].prefix));
        // Only the hash is stored.
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE client = $1")
                .bind(&client)
                .fetch_all(&keys.pool)
                .await
                .unwrap();
        assert_eq!(stored, vec![hex::encode(hash(&key))]);

        assert_eq!(keys.revoke(&client, None).await.unwrap(), 1);
        assert!(matches!(
            keys.identify(&key).await,
            Err(AuthError::UnknownKey)
        ));
        assert!(
            keys.list()
                .await
                .unwrap()
                .iter()
                .any(|k| k.client == client && k.revoked_at.is_some())
        );
    }

    #[tokio::test]
    async fn keys_round_trip_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(&format!("sqlite://{}", dir.path().join("k.db").display())).await;
    }

    #[tokio::test]
    async fn keys_round_trip_in_postgres() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!("skipped: TEST_DATABASE_URL is not set");
            return;
        };
        round_trip(&url).await;
    }

    #[test]
    fn client_names_are_checked() {
        assert!(validate_client_name("ci-bot@team.example").is_ok());
        for bad in ["", "a b", "x\"y", &"a".repeat(129)] {
            assert!(validate_client_name(bad).is_err(), "{bad}");
        }
    }
}
