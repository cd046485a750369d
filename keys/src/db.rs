//! What the stores in this crate share: the clock they stamp rows with, and (for tests) a
//! migrated database.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A pool on `url` with the gateway's migrations applied.
#[cfg(test)]
pub(crate) async fn migrated_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("the test database opens");
    sqlx::migrate!("../gateway/migrations")
        .run(&pool)
        .await
        .expect("the migrations apply");
    pool
}

/// A SQLite file URL in `dir`.
#[cfg(test)]
pub(crate) fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("keys.db").display())
}
