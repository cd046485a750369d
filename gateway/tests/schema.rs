//! The committed JSON Schema of gateway.toml must match the one generated from the Rust types.
//! Regenerate with `UPDATE_SCHEMA=1 cargo test -p mcp-gateway --test schema`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

use std::path::Path;

#[test]
fn committed_config_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/config.schema.json");
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&gateway::config::json_schema()).unwrap()
    );
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/config.schema.json is stale; run `UPDATE_SCHEMA=1 cargo test -p mcp-gateway --test schema`"
    );
}

#[test]
fn example_configs_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            gateway::config::Config::load(&path)
                .unwrap_or_else(|e| panic!("{} is invalid: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no example configs found in {}",
        examples.display()
    );
}
