//! The call path's trust decision: resolving a client-visible tool name to a served tool of a
//! 1,000-tool server. Verification happened when the server listed its tools; a call looks the
//! decision and the definition up (`Registry::lookup_tool`).
//! `cargo bench -p mcp-gateway --bench catalog`; figures in docs/benchmarks.md.

#![allow(clippy::unwrap_used, reason = "a benchmark panics on broken fixtures")]

use std::sync::Arc;

use gateway::registry::{Registry, test_registry};
use rmcp::model::Tool;

fn main() {
    divan::main();
}

fn thousand_tools() -> Registry {
    let tools = (0..1000)
        .map(|i| {
            Tool::new(
                format!("tool_{i}"),
                "A tool among a thousand.",
                Arc::new(serde_json::Map::new()),
            )
        })
        .collect();
    test_registry(vec![tools], 100)
}

/// The decision and the definition the call's checks use: split the name, find the server,
/// look the tool's trust state up, take the definition at the position kept with it.
#[divan::bench(args = ["s0__tool_0", "s0__tool_999", "s0__unknown"])]
fn lookup_tool(bencher: divan::Bencher, name: &str) {
    let registry = thousand_tools();
    bencher.bench(|| registry.lookup_tool(divan::black_box(name)).is_some());
}
