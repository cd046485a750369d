//! Latency distribution (p50, p99) of the per-call access checks: a policy decision among
//! 1,000 policies, argument validation of a typical schema, and the two together with a rate
//! limit check, as `Access::admit_call` runs them.
//!
//! `cargo bench -p mcp-gateway --bench access`. A plain harness rather than divan, because the
//! targets are percentiles and divan reports medians and means.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot set up should stop loudly"
)]

use std::{
    hint::black_box,
    num::NonZeroU32,
    path::Path,
    time::{Duration, Instant},
};

use gateway::{
    identity::{AuthMethod, Identity},
    limits::{CallKey, Limits, LimitsConfig, Rule, Scope},
    policy::{PolicyEngine, Target},
    validate::Validators,
};

const SAMPLES: usize = 100_000;

/// 1,000 policies: 990 naming one tool each, for ten groups, and ten general ones.
fn thousand_policies() -> String {
    let mut text = String::new();
    for i in 0..990 {
        text.push_str(&format!(
            "@id(\"p{i}\")\npermit(principal in Mcp::Group::\"g{}\", action == Mcp::Action::\"tools/call\", \
             resource == Mcp::Tool::\"s{}__t{i}\") when {{ context.arguments has path && context.arguments.path like \"/srv/*\" }};\n",
            i % 10,
            i % 20
        ));
    }
    for i in 0..10 {
        text.push_str(&format!(
            "@id(\"general{i}\")\nforbid(principal in Mcp::Group::\"banned{i}\", action, resource);\n"
        ));
    }
    text
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn measure(name: &str, mut f: impl FnMut()) {
    // Warm caches (the per-resource policy set, compiled validators) first.
    for _ in 0..1_000 {
        f();
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        f();
        samples.push(start.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    println!(
        "{name:<48} p50 {:>8.2} µs   p99 {:>8.2} µs",
        us(p50),
        us(p99)
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let engine = PolicyEngine::parse(Path::new("bench.cedar"), &thousand_policies())
        .expect("the benchmark policies are valid");
    assert_eq!(engine.len(), 1_000);
    let who = Identity {
        client: "alice".into(),
        groups: vec!["g7".into(), "eng".into()],
        via: AuthMethod::ApiKey,
    };
    let tool: rmcp::model::Tool = serde_json::from_value(serde_json::json!({
        "name": "t7",
        "inputSchema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 4096},
                "recursive": {"type": "boolean"},
                "depth": {"type": "integer", "minimum": 0, "maximum": 32},
                "exclude": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["path"],
            "additionalProperties": false
        },
        "annotations": {"readOnlyHint": true}
    }))
    .expect("a valid tool");
    let target = Target::tool("s7__t7", "s7", "t7", &tool, None);
    let args = serde_json::json!({"path": "/srv/data", "recursive": true, "depth": 3, "exclude": ["*.tmp"]});
    let args_map = args.as_object().expect("an object");
    let decision = engine.decide(&who, "tools/call", &target, "s", Some(args_map));
    assert!(decision.allowed, "{decision:?}");

    measure("policy decision, 1,000 policies (allow)", || {
        black_box(engine.decide(&who, "tools/call", &target, "s", Some(args_map)));
    });
    let one = PolicyEngine::parse(
        Path::new("one.cedar"),
        "permit(principal, action, resource);",
    )
    .unwrap();
    measure("policy decision, 1 policy (allow)", || {
        black_box(one.decide(&who, "tools/call", &target, "s", Some(args_map)));
    });
    measure("policy decision, 1 policy, no arguments", || {
        black_box(one.decide(&who, "tools/list", &target, "s", None));
    });
    let other = Target::tool("s3__t3", "s3", "t3", &tool, None);
    measure("policy decision, 1,000 policies (deny)", || {
        black_box(engine.decide(&who, "tools/call", &other, "s", Some(args_map)));
    });
    measure("tools/list visibility, 1,000 policies", || {
        black_box(engine.decide(&who, "tools/list", &target, "s", None));
    });

    let validators = Validators::default();
    measure("argument validation, typical schema", || {
        black_box(
            validators
                .check_input("hash", &tool.input_schema, &args)
                .is_ok(),
        );
    });

    let limits = Limits::with_clock(
        LimitsConfig {
            rules: vec![
                Rule::new(Scope::ClientTool, NonZeroU32::MAX, Duration::from_secs(1)),
                Rule::new(Scope::Global, NonZeroU32::MAX, Duration::from_secs(1)),
            ],
            ..LimitsConfig::default()
        },
        governor::clock::DefaultClock::default(),
    );
    let key = CallKey {
        method: "tools/call",
        client: "alice",
        server: "s7",
        tool: Some("s7__t7"),
    };
    measure("rate limits, 2 local rules", || {
        black_box(limits.check_local(&key).is_ok());
    });
    measure("all three, as one call is checked", || {
        black_box(engine.decide(&who, "tools/call", &target, "s", Some(args_map)));
        black_box(limits.check_local(&key).is_ok());
        black_box(
            validators
                .check_input("hash", &tool.input_schema, &args)
                .is_ok(),
        );
    });
}
