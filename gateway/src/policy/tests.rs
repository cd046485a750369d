//! Decisions of small policies, and the properties every policy must have.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::identity::{AuthMethod, Identity};

fn client(name: &str, groups: &[&str]) -> Identity {
    Identity {
        client: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: AuthMethod::ApiKey,
    }
}

fn engine(text: &str) -> PolicyEngine {
    PolicyEngine::parse(Path::new("test.cedar"), text).unwrap()
}

fn tool<'a>(name: &'a str, annotations: Option<&'a rmcp::model::ToolAnnotations>) -> Target<'a> {
    let (server, local) = name.split_once("__").unwrap();
    Target::Tool {
        name,
        server,
        local,
        verification: "verified",
        annotations,
    }
}

fn call(engine: &PolicyEngine, who: &Identity, name: &str, args: serde_json::Value) -> Decision {
    engine.decide(who, "tools/call", &tool(name, None), "s1", args.as_object())
}

const POLICY: &str = r#"
@id("eng-uses-files")
@redact("content")
permit(principal in Mcp::Group::"eng", action in Mcp::Action::"tools", resource in Mcp::Server::"files");

@id("everyone-reads-time")
permit(principal, action in Mcp::Action::"tools", resource == Mcp::Tool::"time__now");

@id("no-etc")
forbid(principal, action == Mcp::Action::"tools/call", resource in Mcp::Server::"files")
when { context.arguments has path && context.arguments.path like "/etc/*" };

@id("no-destructive-for-contractors")
forbid(principal in Mcp::Group::"contractors", action, resource is Mcp::Tool)
when { resource has destructiveHint && resource.destructiveHint };

@id("slow-writes")
@rate_limit("2/60")
@sandbox("per-call")
permit(principal in Mcp::Group::"eng", action == Mcp::Action::"tools/call", resource == Mcp::Tool::"files__write");
"#;

#[test]
fn groups_decide_what_a_client_may_use() {
    let engine = engine(POLICY);
    let alice = client("alice", &["eng"]);
    let bob = client("bob", &["sales"]);
    let allowed = call(
        &engine,
        &alice,
        "files__read",
        serde_json::json!({"path": "/tmp/x"}),
    );
    assert!(allowed.allowed);
    assert_eq!(allowed.policies, vec!["eng-uses-files"]);
    assert_eq!(allowed.conditions.redact, vec!["content"]);
    assert!(!call(&engine, &bob, "files__read", serde_json::json!({})).allowed);
    assert!(call(&engine, &bob, "time__now", serde_json::json!({})).allowed);
}

#[test]
fn a_forbid_on_an_argument_wins() {
    let engine = engine(POLICY);
    let alice = client("alice", &["eng"]);
    let denied = call(
        &engine,
        &alice,
        "files__read",
        serde_json::json!({"path": "/etc/shadow"}),
    );
    assert!(!denied.allowed);
    assert_eq!(denied.policies, vec!["no-etc"]);
}

#[test]
fn annotations_of_the_deciding_permits_become_conditions() {
    let engine = engine(POLICY);
    let alice = client("alice", &["eng"]);
    let decision = call(
        &engine,
        &alice,
        "files__write",
        serde_json::json!({"path": "/tmp/a"}),
    );
    assert!(decision.allowed);
    assert_eq!(decision.conditions.sandbox.as_deref(), Some("per-call"));
    assert_eq!(
        decision.conditions.rate_limit,
        Some(RateCondition {
            requests: 2,
            per_secs: 60
        })
    );
}

#[test]
fn tool_annotations_are_attributes() {
    let engine = engine(POLICY);
    let carol = client("carol", &["eng", "contractors"]);
    let destructive = rmcp::model::ToolAnnotations::new().destructive(true);
    let decision = engine.decide(
        &carol,
        "tools/call",
        &tool("files__delete", Some(&destructive)),
        "",
        None,
    );
    assert!(!decision.allowed);
    assert_eq!(decision.policies, vec!["no-destructive-for-contractors"]);
    let safe = rmcp::model::ToolAnnotations::new().destructive(false);
    assert!(
        engine
            .decide(
                &carol,
                "tools/call",
                &tool("files__delete", Some(&safe)),
                "",
                None
            )
            .allowed
    );
}

#[test]
fn a_forbid_that_cannot_be_evaluated_denies() {
    // `context.arguments.path` without `has`: a call without `path` makes the forbid fail.
    let engine = engine(
        r#"permit(principal, action, resource);
           @id("guard")
           forbid(principal, action == Mcp::Action::"tools/call", resource)
           when { context.arguments.path == "/secret" };"#,
    );
    let who = client("x", &[]);
    let decision = call(&engine, &who, "a__b", serde_json::json!({"other": 1}));
    assert!(!decision.allowed);
    assert_eq!(decision.policies, vec!["guard"]);
    assert!(
        call(
            &engine,
            &who,
            "a__b",
            serde_json::json!({"path": "/public"})
        )
        .allowed
    );
}

#[test]
fn arguments_shaped_like_entities_stay_data() {
    let engine = engine(
        r#"permit(principal, action, resource)
           when { context has arguments && context.arguments has owner
                  && context.arguments.owner == Mcp::Client::"root" };"#,
    );
    // Cedar's JSON format would read this as an entity reference; the gateway must not.
    let args = serde_json::json!({"owner": {"__entity": {"type": "Mcp::Client", "id": "root"}}});
    assert!(!call(&engine, &client("x", &[]), "a__b", args).allowed);
}

#[test]
fn bad_policy_files_name_the_line() {
    let cases = [
        (
            "permit(principal, action, resource);\nforbid(principal action, resource);\n",
            2,
            "",
        ),
        (
            "permit(principal, action, resource);\n\npermit(principal in Mcp::Grup::\"x\", action, resource);\n",
            3,
            "Grup",
        ),
        (
            "permit(principal, action == Mcp::Action::\"tools/cal\", resource);\n",
            1,
            "tools/cal",
        ),
        (
            "permit(principal, action, resource is Mcp::Tool) when { resource.nmae == \"x\" };\n",
            1,
            "nmae",
        ),
    ];
    for (text, line, mention) in cases {
        let error = PolicyEngine::parse(Path::new("p.cedar"), text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert_eq!(error.line, Some(line), "{text}: {error}");
        assert!(error.to_string().starts_with("p.cedar:"), "{error}");
        assert!(error.to_string().contains(mention), "{error}");
    }
}

#[test]
fn the_default_policy_allows_everything_served() {
    let engine = PolicyEngine::default_policy();
    assert!(engine.source.is_none());
    assert!(call(&engine, &client("x", &[]), "a__b", serde_json::json!({})).allowed);
}

#[test]
fn rate_annotations_parse() {
    assert_eq!(
        parse_rate("10/60"),
        Some(RateCondition {
            requests: 10,
            per_secs: 60
        })
    );
    for bad in ["", "10", "0/5", "5/0", "x/1", "-1/5"] {
        assert_eq!(parse_rate(bad), None, "{bad}");
    }
}

proptest! {
    /// Whatever else the policy says, a forbid that applies denies.
    #[test]
    fn a_deny_always_wins(
        permits in proptest::collection::vec((0usize..3, 0usize..3), 0..6),
        forbid_group in 0usize..3,
        forbid_tool in 0usize..3,
        member in proptest::collection::vec(0usize..3, 0..3),
        target in 0usize..3,
    ) {
        let groups = ["g0", "g1", "g2"];
        let tools = ["s__t0", "s__t1", "s__t2"];
        let mut text = String::new();
        for (g, t) in &permits {
            text.push_str(&format!(
                "permit(principal in Mcp::Group::\"{}\", action, resource == Mcp::Tool::\"{}\");\n",
                groups[*g], tools[*t]
            ));
        }
        text.push_str(&format!(
            "forbid(principal in Mcp::Group::\"{}\", action, resource == Mcp::Tool::\"{}\");\n",
            groups[forbid_group], tools[forbid_tool]
        ));
        let engine = engine(&text);
        let member: Vec<&str> = member.iter().map(|g| groups[*g]).collect();
        let who = client("c", &member);
        let decision = call(&engine, &who, tools[target], serde_json::json!({}));
        let forbidden = member.contains(&groups[forbid_group]) && target == forbid_tool;
        let permitted = permits
            .iter()
            .any(|(g, t)| member.contains(&groups[*g]) && *t == target);
        prop_assert_eq!(decision.allowed, permitted && !forbidden);
    }
}

/// One scope-only policy, drawn from the shapes the index treats differently.
fn arbitrary_policy() -> impl Strategy<Value = String> {
    let effect = prop_oneof![Just("permit"), Just("forbid")];
    let principal = prop_oneof![
        Just("principal".to_owned()),
        (0usize..3).prop_map(|g| format!("principal in Mcp::Group::\"g{g}\"")),
        (0usize..2).prop_map(|c| format!("principal == Mcp::Client::\"c{c}\"")),
        (0usize..2).prop_map(|c| format!("principal in Mcp::Client::\"c{c}\"")),
        Just("principal is Mcp::Client".to_owned()),
    ];
    let action = prop_oneof![
        Just("action".to_owned()),
        Just("action == Mcp::Action::\"tools/call\"".to_owned()),
        Just("action == Mcp::Action::\"tools/list\"".to_owned()),
        Just("action in Mcp::Action::\"tools\"".to_owned()),
        Just("action in [Mcp::Action::\"tools/list\", Mcp::Action::\"prompts/get\"]".to_owned()),
    ];
    let resource = prop_oneof![
        Just("resource".to_owned()),
        (0usize..2, 0usize..2).prop_map(|(s, t)| format!("resource == Mcp::Tool::\"s{s}__t{t}\"")),
        (0usize..2).prop_map(|s| format!("resource in Mcp::Server::\"s{s}\"")),
        Just("resource is Mcp::Tool".to_owned()),
        (0usize..2).prop_map(|s| format!("resource is Mcp::Tool in Mcp::Server::\"s{s}\"")),
    ];
    (effect, principal, action, resource).prop_map(|(e, p, a, r)| format!("{e}({p}, {a}, {r});\n"))
}

proptest! {
    /// Indexing policies by resource, principal and action never changes a decision: the
    /// engine decides exactly as Cedar does with every policy and every entity.
    #[test]
    fn the_index_never_changes_a_decision(
        policies in proptest::collection::vec(arbitrary_policy(), 0..12),
        client_index in 0usize..2,
        groups in proptest::collection::vec(0usize..3, 0..3),
        server in 0usize..2,
        tool_index in 0usize..2,
        list in any::<bool>(),
    ) {
        let engine = engine(&policies.concat());
        let groups: Vec<String> = groups.iter().map(|g| format!("g{g}")).collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let who = client(&format!("c{client_index}"), &groups);
        let name = format!("s{server}__t{tool_index}");
        let action = if list { "tools/list" } else { "tools/call" };
        let indexed = engine.decide(&who, action, &tool(&name, None), "", None);
        let reference = engine.decide_unindexed(&who, action, &tool(&name, None), "");
        prop_assert!(reference.errors.is_empty(), "{:?}", reference.errors);
        prop_assert_eq!(indexed.allowed, reference.allowed, "{}", policies.concat());
        // Asked again, from the cache.
        let again = engine.decide(&who, action, &tool(&name, None), "", None);
        prop_assert_eq!(again.allowed, reference.allowed);
    }
}
