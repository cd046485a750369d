//! Recording a 1,000-tool list cold: what the gateway's supervisor does per tool on first
//! contact (definition hash, then a trust-on-first-use insert in SQLite), without the signature
//! check, which `verifier`'s benchmark measures. `cargo bench -p mcp-gateway-keys`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark panics on broken fixtures"
)]

use keys::definitions::DefinitionStore;

fn main() {
    divan::main();
}

fn tool(i: usize) -> String {
    format!(
        r#"{{"name":"tool_{i}","description":"Tool number {i}.","inputSchema":{{"type":"object","properties":{{"q":{{"type":"string"}},"n":{{"type":"integer","default":{i}}}}},"required":["q"]}}}}"#
    )
}

/// A fresh database with the gateway's schema and SQLite settings (WAL, `synchronous=NORMAL`).
fn fresh_store(runtime: &tokio::runtime::Runtime) -> (tempfile::TempDir, DefinitionStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
    let store = runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .unwrap();
        sqlx::migrate!("../gateway/migrations")
            .run(&pool)
            .await
            .unwrap();
        DefinitionStore::new(pool)
    });
    (dir, store)
}

/// What the supervisor does on first contact with a 1,000-tool server: hash every definition,
/// then record them all with one `observe_all`.
#[divan::bench(sample_count = 10)]
fn record_1000_new_tools(bencher: divan::Bencher) {
    let runtime = runtime();
    let tools: Vec<String> = (0..1000).map(tool).collect();
    let names: Vec<String> = (0..1000).map(|i| format!("tool_{i}")).collect();
    bencher
        .with_inputs(|| fresh_store(&runtime))
        .bench_local_values(|(_dir, store)| {
            runtime.block_on(async {
                let hashes: Vec<String> = tools
                    .iter()
                    .map(|json| verifier::definition_hash(json).unwrap())
                    .collect();
                record(&store, &names, &hashes, &tools).await;
            })
        });
}

/// The same list, each tool signed: for each, canonicalize, hash, check the ECDSA P-256
/// signature (one after another, as the supervisor does) and hash the definition; then record
/// them all. A 1,000-tool list verified cold, end to end but for the network.
#[divan::bench(sample_count = 10)]
fn verify_and_record_1000_signed_tools(bencher: divan::Bencher) {
    use verifier::{canonical, signature};
    let runtime = runtime();
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let public = *key.verifying_key();
    let tools: Vec<String> = (0..1000).map(tool).collect();
    let signatures: Vec<String> = tools
        .iter()
        .map(|t| {
            signature::sign(
                &signature::schema_hash(&canonical::canonicalize(t).unwrap()),
                &key,
            )
        })
        .collect();
    let names: Vec<String> = (0..1000).map(|i| format!("tool_{i}")).collect();
    bencher
        .with_inputs(|| fresh_store(&runtime))
        .bench_local_values(|(_dir, store)| {
            runtime.block_on(async {
                let hashes: Vec<String> = tools
                    .iter()
                    .zip(&signatures)
                    .map(|(json, sig)| {
                        let hash = signature::schema_hash(&canonical::canonicalize(json).unwrap());
                        // With the key's fingerprint, for the pin, as the supervisor checks.
                        signature::verify_proof(&hash, sig, &public, false).unwrap();
                        verifier::definition_hash(json).unwrap()
                    })
                    .collect();
                record(&store, &names, &hashes, &tools).await;
            })
        });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Records each tool's definition hash in one transaction, as the supervisor does.
async fn record(store: &DefinitionStore, names: &[String], hashes: &[String], tools: &[String]) {
    let items: Vec<(&str, &str, &str)> = names
        .iter()
        .zip(hashes)
        .zip(tools)
        .map(|((n, h), t)| (n.as_str(), h.as_str(), t.as_str()))
        .collect();
    let states = store.observe_all("bench", &items).await.unwrap();
    assert_eq!(states.len(), tools.len());
}
