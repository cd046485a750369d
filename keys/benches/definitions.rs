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

#[divan::bench(sample_count = 10)]
fn record_1000_new_tools(bencher: divan::Bencher) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tools: Vec<String> = (0..1000).map(tool).collect();
    bencher
        .with_inputs(|| {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
            let store = runtime.block_on(async {
                sqlx::any::install_default_drivers();
                let pool = sqlx::any::AnyPoolOptions::new()
                    .max_connections(1)
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
        })
        .bench_local_values(|(_dir, store)| {
            runtime.block_on(async {
                for (i, json) in tools.iter().enumerate() {
                    let hash = verifier::definition_hash(json).unwrap();
                    store
                        .observe("bench", &format!("tool_{i}"), &hash, json)
                        .await
                        .unwrap();
                }
            })
        });
}
