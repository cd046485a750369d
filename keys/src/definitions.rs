//! Trust on first use for tool definitions: the first definition of a tool is pinned; a later,
//! different one (any visible field, see `verifier::DEFINITION_MEMBERS`) is quarantined until a
//! person approves or rejects it. This is what stops a server from changing a tool after it was
//! trusted (a "rug pull").

use sqlx::{AnyPool, Row};

/// The state of one tool definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefinitionState {
    /// Approved, on first use or by a person: served.
    Pinned,
    /// A known tool's changed definition: hidden until a person decides.
    Quarantined,
    /// Refused by a person: hidden.
    Rejected,
    /// Pinned once, replaced by the approval of a newer definition.
    Superseded,
}

impl DefinitionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::Quarantined => "quarantined",
            Self::Rejected => "rejected",
            Self::Superseded => "superseded",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pinned" => Self::Pinned,
            "quarantined" => Self::Quarantined,
            "rejected" => Self::Rejected,
            "superseded" => Self::Superseded,
            _ => return None,
        })
    }
}

/// One recorded definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Definition {
    pub server: String,
    pub tool: String,
    pub definition_hash: String,
    /// The definition as the server listed it (JSON).
    pub definition: String,
    pub state: DefinitionState,
    pub first_seen: i64,
    pub decided_at: i64,
    pub decided_by: Option<String>,
}

/// Why the definition store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    #[error("definition store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("definition store: unknown state `{0}` in the database")]
    BadState(String),
    #[error("no quarantined definition of {tool} on {server} to decide on")]
    NothingToDecide { server: String, tool: String },
}

/// Tool definitions in the gateway's database; the tables come from the gateway's migrations.
#[derive(Clone)]
pub struct DefinitionStore {
    pool: AnyPool,
    /// Serializes this process's recording transactions. SQLite cannot upgrade two deferred
    /// transactions from reading to writing at once: one fails with "database is locked" at
    /// once, without waiting. Clones share the lock, so every upstream of a gateway takes turns.
    writing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How often a recording transaction is tried when another process holds the database.
const BUSY_ATTEMPTS: u32 = 8;

/// Whether an error is SQLite's "the database is busy or locked" (codes 5 and 6, and their
/// extended forms), which a retry resolves.
fn is_busy(error: &DefinitionError) -> bool {
    match error {
        DefinitionError::Database(sqlx::Error::Database(e)) => e
            .code()
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

const COLUMNS: &str =
    "server, tool, definition_hash, definition, state, first_seen, decided_at, decided_by";

impl DefinitionStore {
    pub fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            writing: std::sync::Arc::default(),
        }
    }

    /// Records a definition the server lists and returns its state: the state already recorded
    /// for this hash; `pinned` for the first definition of a tool; `quarantined` for a new
    /// definition of a tool that already has a pinned one.
    pub async fn observe(
        &self,
        server: &str,
        tool: &str,
        definition_hash: &str,
        definition: &str,
    ) -> Result<DefinitionState, DefinitionError> {
        if let Some(state) = self.state(server, tool, definition_hash).await? {
            return Ok(state);
        }
        let known = sqlx::query(
            "SELECT COUNT(*) AS n FROM tool_definitions WHERE server = $1 AND tool = $2",
        )
        .bind(server)
        .bind(tool)
        .fetch_one(&self.pool)
        .await?
        .try_get::<i64, _>("n")?
            > 0;
        let state = if known {
            DefinitionState::Quarantined
        } else {
            DefinitionState::Pinned
        };
        let now = crate::db::now();
        // Two replicas may see the same new definition at once; the second insert is a no-op and
        // both read back the one state that was stored.
        sqlx::query(
            "INSERT INTO tool_definitions (server, tool, definition_hash, definition, state, first_seen, decided_at, decided_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, NULL) ON CONFLICT (server, tool, definition_hash) DO NOTHING",
        )
        .bind(server)
        .bind(tool)
        .bind(definition_hash)
        .bind(definition)
        .bind(state.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        let stored = self
            .state(server, tool, definition_hash)
            .await?
            .unwrap_or(state);
        let event = match stored {
            DefinitionState::Pinned => "tool pinned on first use",
            _ => "tool quarantined: its definition changed",
        };
        tracing::info!(target: "audit", event, server, tool, definition_hash, "tool definition recorded");
        Ok(stored)
    }

    /// Records every definition of one server's tool list at once, in one transaction, with the
    /// same rules as [`Self::observe`]; returns the states in the order of `items`
    /// (tool, definition hash, definition JSON).
    pub async fn observe_all(
        &self,
        server: &str,
        items: &[(&str, &str, &str)],
    ) -> Result<Vec<DefinitionState>, DefinitionError> {
        let _turn = self.writing.lock().await;
        let mut attempt = 1;
        loop {
            match self.observe_all_once(server, items).await {
                Err(e) if is_busy(&e) && attempt < BUSY_ATTEMPTS => {
                    // Another process (a second gateway, `mcp-gateway tools approve`) is writing.
                    tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn observe_all_once(
        &self,
        server: &str,
        items: &[(&str, &str, &str)],
    ) -> Result<Vec<DefinitionState>, DefinitionError> {
        use std::collections::HashSet;
        let mut tx = self.pool.begin().await?;
        let mut known = server_states(&mut *tx, server).await?;
        let mut tools: HashSet<String> = known.keys().map(|(tool, _)| tool.clone()).collect();
        let now = crate::db::now();
        let mut inserted = false;
        let mut states = Vec::with_capacity(items.len());
        for (tool, hash, definition) in items {
            if let Some(state) = known.get(&((*tool).to_owned(), (*hash).to_owned())) {
                states.push(*state);
                continue;
            }
            let state = if tools.contains(*tool) {
                DefinitionState::Quarantined
            } else {
                DefinitionState::Pinned
            };
            sqlx::query(
                "INSERT INTO tool_definitions (server, tool, definition_hash, definition, state, first_seen, decided_at, decided_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, NULL) ON CONFLICT (server, tool, definition_hash) DO NOTHING",
            )
            .bind(server)
            .bind(*tool)
            .bind(*hash)
            .bind(*definition)
            .bind(state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            inserted = true;
            tools.insert((*tool).to_owned());
            known.insert(((*tool).to_owned(), (*hash).to_owned()), state);
            let event = match state {
                DefinitionState::Pinned => "tool pinned on first use",
                _ => "tool quarantined: its definition changed",
            };
            tracing::info!(target: "audit", event, server, tool, definition_hash = hash, "tool definition recorded");
            states.push(state);
        }
        tx.commit().await?;
        if inserted {
            // Another replica may have recorded the same new definition first; what is stored
            // wins. One read of the server's rows settles every item.
            let stored = server_states(&self.pool, server).await?;
            for (state, (tool, hash, _)) in states.iter_mut().zip(items) {
                if let Some(s) = stored.get(&((*tool).to_owned(), (*hash).to_owned())) {
                    *state = *s;
                }
            }
        }
        Ok(states)
    }

    /// The recorded state of one definition.
    pub async fn state(
        &self,
        server: &str,
        tool: &str,
        definition_hash: &str,
    ) -> Result<Option<DefinitionState>, DefinitionError> {
        let row = sqlx::query(
            "SELECT state FROM tool_definitions WHERE server = $1 AND tool = $2 AND definition_hash = $3",
        )
        .bind(server)
        .bind(tool)
        .bind(definition_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let state: String = row.try_get("state")?;
            DefinitionState::parse(&state).ok_or(DefinitionError::BadState(state))
        })
        .transpose()
    }

    /// Every recorded definition, optionally only those in one state.
    pub async fn list(
        &self,
        state: Option<DefinitionState>,
    ) -> Result<Vec<Definition>, DefinitionError> {
        let rows = match state {
            Some(state) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tool_definitions WHERE state = $1 ORDER BY server, tool, first_seen"
                )))
                .bind(state.as_str())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM tool_definitions ORDER BY server, tool, first_seen"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(definition_from_row).collect()
    }

    /// The pinned and the quarantined definitions of a tool, for showing what an approval changes.
    pub async fn pending(
        &self,
        server: &str,
        tool: &str,
    ) -> Result<(Option<Definition>, Definition), DefinitionError> {
        let all: Vec<Definition> = self
            .list(None)
            .await?
            .into_iter()
            .filter(|d| d.server == server && d.tool == tool)
            .collect();
        let pinned = all
            .iter()
            .find(|d| d.state == DefinitionState::Pinned)
            .cloned();
        let candidate = all
            .into_iter()
            .filter(|d| d.state == DefinitionState::Quarantined)
            .max_by_key(|d| d.first_seen)
            .ok_or_else(|| DefinitionError::NothingToDecide {
                server: server.to_owned(),
                tool: tool.to_owned(),
            })?;
        Ok((pinned, candidate))
    }

    /// A person approves the quarantined definition of a tool: it becomes the pinned one, and the
    /// one pinned before is superseded.
    pub async fn approve(
        &self,
        server: &str,
        tool: &str,
        by: &str,
    ) -> Result<Definition, DefinitionError> {
        let (_, candidate) = self.pending(server, tool).await?;
        let now = crate::db::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE tool_definitions SET state = 'superseded', decided_at = $1, decided_by = $2 \
             WHERE server = $3 AND tool = $4 AND state = 'pinned'",
        )
        .bind(now)
        .bind(by)
        .bind(server)
        .bind(tool)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tool_definitions SET state = 'pinned', decided_at = $1, decided_by = $2 \
             WHERE server = $3 AND tool = $4 AND definition_hash = $5",
        )
        .bind(now)
        .bind(by)
        .bind(server)
        .bind(tool)
        .bind(&candidate.definition_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(target: "audit", event = "tool approved", server, tool, definition_hash = %candidate.definition_hash, by, "tool definition decided");
        Ok(candidate)
    }

    /// A person rejects the quarantined definition of a tool; it stays hidden.
    pub async fn reject(
        &self,
        server: &str,
        tool: &str,
        by: &str,
    ) -> Result<Definition, DefinitionError> {
        let (_, candidate) = self.pending(server, tool).await?;
        sqlx::query(
            "UPDATE tool_definitions SET state = 'rejected', decided_at = $1, decided_by = $2 \
             WHERE server = $3 AND tool = $4 AND definition_hash = $5",
        )
        .bind(crate::db::now())
        .bind(by)
        .bind(server)
        .bind(tool)
        .bind(&candidate.definition_hash)
        .execute(&self.pool)
        .await?;
        tracing::info!(target: "audit", event = "tool rejected", server, tool, definition_hash = %candidate.definition_hash, by, "tool definition decided");
        Ok(candidate)
    }
}

/// Every recorded state of one server's tools, by (tool, definition hash).
async fn server_states<'e, E>(
    executor: E,
    server: &str,
) -> Result<std::collections::HashMap<(String, String), DefinitionState>, DefinitionError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows =
        sqlx::query("SELECT tool, definition_hash, state FROM tool_definitions WHERE server = $1")
            .bind(server)
            .fetch_all(executor)
            .await?;
    let mut states = std::collections::HashMap::new();
    for row in rows {
        let state: String = row.try_get("state")?;
        let state = DefinitionState::parse(&state).ok_or(DefinitionError::BadState(state))?;
        states.insert(
            (row.try_get("tool")?, row.try_get("definition_hash")?),
            state,
        );
    }
    Ok(states)
}

fn definition_from_row(row: &sqlx::any::AnyRow) -> Result<Definition, DefinitionError> {
    let state: String = row.try_get("state")?;
    Ok(Definition {
        server: row.try_get("server")?,
        tool: row.try_get("tool")?,
        definition_hash: row.try_get("definition_hash")?,
        definition: row.try_get("definition")?,
        state: DefinitionState::parse(&state).ok_or(DefinitionError::BadState(state))?,
        first_seen: row.try_get("first_seen")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(url: &str) -> DefinitionStore {
        DefinitionStore::new(crate::db::migrated_pool(url).await)
    }

    #[tokio::test]
    async fn two_writers_on_one_sqlite_file_both_record() {
        // Two stores with pools of their own act like two processes: neither waits for the
        // other's lock, so only the retry on "database is locked" lets both succeed.
        let dir = tempfile::tempdir().unwrap();
        let url = crate::db::sqlite_url(dir.path());
        let (a, b) = (store(&url).await, store(&url).await);
        for round in 0..20 {
            let items: Vec<(String, String)> = (0..20)
                .map(|i| (format!("t{i}"), format!("h{round}-{i}")))
                .collect();
            let items: Vec<(&str, &str, &str)> = items
                .iter()
                .map(|(t, h)| (t.as_str(), h.as_str(), "{}"))
                .collect();
            let (server_a, server_b) = (format!("a{round}"), format!("b{round}"));
            let (ra, rb) = tokio::join!(
                a.observe_all(&server_a, &items),
                b.observe_all(&server_b, &items)
            );
            assert_eq!(ra.unwrap().len(), 20);
            assert_eq!(rb.unwrap().len(), 20);
        }
    }

    async fn rug_pull_is_quarantined(store: DefinitionStore, server: &str) {
        use DefinitionState::*;
        let observe = |hash: &'static str| {
            let store = store.clone();
            let server = server.to_owned();
            async move {
                store
                    .observe(&server, "add", hash, &format!("{{\"h\":\"{hash}\"}}"))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(observe("h1").await, Pinned);
        assert_eq!(observe("h1").await, Pinned);
        assert_eq!(observe("h2").await, Quarantined);
        assert_eq!(observe("h2").await, Quarantined);
        let (pinned, candidate) = store.pending(server, "add").await.unwrap();
        assert_eq!(pinned.unwrap().definition_hash, "h1");
        assert_eq!(candidate.definition_hash, "h2");

        let approved = store.approve(server, "add", "alice").await.unwrap();
        assert_eq!(approved.definition_hash, "h2");
        assert_eq!(observe("h2").await, Pinned);
        // The old definition does not come back silently.
        assert_eq!(observe("h1").await, Superseded);
        assert_eq!(observe("h3").await, Quarantined);
        store.reject(server, "add", "bob").await.unwrap();
        assert_eq!(observe("h3").await, Rejected);
        assert!(matches!(
            store.approve(server, "add", "alice").await,
            Err(DefinitionError::NothingToDecide { .. })
        ));
        let quarantined = store.list(Some(Quarantined)).await.unwrap();
        assert!(quarantined.iter().all(|d| d.server != server));
    }

    #[tokio::test]
    async fn a_whole_list_is_recorded_with_the_same_rules() {
        use DefinitionState::*;
        let dir = tempfile::tempdir().unwrap();
        let store = store(&crate::db::sqlite_url(dir.path())).await;
        let first = store
            .observe_all("s", &[("a", "a1", "{}"), ("b", "b1", "{}")])
            .await
            .unwrap();
        assert_eq!(first, [Pinned, Pinned]);
        let second = store
            .observe_all(
                "s",
                &[("a", "a1", "{}"), ("b", "b2", "{}"), ("c", "c1", "{}")],
            )
            .await
            .unwrap();
        assert_eq!(second, [Pinned, Quarantined, Pinned]);
        assert_eq!(
            store.observe("s", "b", "b2", "{}").await.unwrap(),
            Quarantined
        );
    }

    #[tokio::test]
    async fn sqlite_rug_pull_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("defs.db").display());
        rug_pull_is_quarantined(store(&url).await, "demo").await;
    }

    #[tokio::test]
    async fn postgres_rug_pull_is_quarantined() {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!("skipped: TEST_DATABASE_URL is not set");
            return;
        };
        rug_pull_is_quarantined(
            store(&url).await,
            &format!("defs-test-{}", std::process::id()),
        )
        .await;
    }
}
