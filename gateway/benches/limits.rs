//! Local rate limit checks with the real clock and limits too high to refuse anything: one
//! client's calls over and over, and the calls of 10,000 clients in turn, each with one rule
//! (per client) and with three (per client, global, per client and tool), on one thread and on
//! two. `cargo bench -p mcp-gateway --bench limits`.

use std::{cell::Cell, num::NonZeroU32, time::Duration};

use divan::{Bencher, counter::ItemsCount};
use gateway::limits::{CallKey, Limits, LimitsConfig, Rule, Scope};

// A fixed sample size: left to itself, divan times single iterations when several threads run,
// and a single check is too short for the timer.
fn main() {
    divan::main();
}

/// A limit no benchmark reaches, so that every check does the full work: one call a second, but
/// bursts of a billion. Each check moves its bucket a second ahead, so buckets stay live (and
/// are not swept) for the whole run, as those of active clients would.
fn roomy(scope: Scope) -> Rule {
    Rule {
        methods: vec!["tools/call".to_owned()],
        burst: NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MAX),
        ..Rule::new(scope, NonZeroU32::MIN, Duration::from_secs(1))
    }
}

/// Limits with a single per-client rule, or with a global, a per-client and a per-client-tool rule.
fn limits(rules: usize) -> Limits {
    let all = [Scope::Client, Scope::Global, Scope::ClientTool];
    let config = LimitsConfig {
        rules: all.into_iter().take(rules).map(roomy).collect(),
        ..LimitsConfig::default()
    };
    Limits::with_clock(config, governor::clock::DefaultClock::default())
}

fn key(client: &str) -> CallKey<'_> {
    CallKey {
        method: "tools/call",
        client,
        server: "files",
        tool: Some("read_file"),
    }
}

/// Checks the same client's calls over and over.
#[divan::bench(args = [1, 3], threads = [1, 2], sample_size = 1000)]
fn one_key(bencher: Bencher, rules: usize) {
    let limits = limits(rules);
    bencher
        .counter(ItemsCount::new(1usize))
        .bench(|| limits.check_local(divan::black_box(&key("alice"))));
}

/// Checks calls of 10,000 clients in turn, so that every check looks up a different bucket.
#[divan::bench(args = [1, 3], threads = [1, 2], sample_size = 1000)]
fn ten_thousand_keys(bencher: Bencher, rules: usize) {
    let limits = limits(rules);
    let clients: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
    bencher.counter(ItemsCount::new(1usize)).bench(|| {
        // Each thread walks the clients on its own, so that the benchmark adds no contention of
        // its own between threads.
        thread_local!(static NEXT: Cell<usize> = const { Cell::new(0) });
        let i = NEXT.replace(NEXT.get().wrapping_add(7919)) % clients.len();
        limits.check_local(divan::black_box(&key(&clients[i])))
    });
}
