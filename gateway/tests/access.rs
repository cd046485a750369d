//! Service tests of identity, policy, rate limits and argument validation: real rmcp clients
//! with API keys, through the gateway, to the demo server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

mod common;

use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, ErrorCode},
    service::{RunningService, ServiceError},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

const POLICY: &str = r#"
@id("ops-all")
permit(principal in Mcp::Group::"ops", action, resource);

@id("dev-read-only")
permit(principal in Mcp::Group::"dev", action in Mcp::Action::"tools", resource is Mcp::Tool)
when { resource has readOnlyHint && resource.readOnlyHint };

@id("no-secret-echo")
forbid(principal, action == Mcp::Action::"tools/call", resource == Mcp::Tool::"demo__echo")
when { context.arguments has text && context.arguments.text like "*secret*" };
"#;

/// A gateway with authentication on (no anonymous access), the demo server and `extra`.
async fn gateway(extra: &str) -> common::TestGateway {
    common::start(&format!("[auth]\n{extra}\n{}", common::demo_server("demo"))).await
}

/// A gateway whose policy is [`POLICY`], written to `policy.cedar` in its directory.
async fn gateway_with_policy(extra: &str) -> common::TestGateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.cedar"), POLICY).unwrap();
    common::start_in(
        dir,
        "call_secs = 5\nconnect_secs = 10",
        &format!(
            "[auth]\n[policy]\nfile = \"policy.cedar\"\n{extra}\n{}",
            common::demo_server("demo")
        ),
    )
    .await
}

async fn api_key(gw: &common::TestGateway, client: &str, groups: &[&str]) -> String {
    let store = gateway::store::Store::open(&gw.gateway.config.storage.database_url)
        .await
        .unwrap();
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    store.api_keys().create(client, &groups).await.unwrap()
}

async fn connect(gw: &common::TestGateway, key: &str) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(gw.url()).auth_header(key),
    );
    ().serve(transport).await.expect("client connects")
}

async fn tool_names(client: &RunningService<RoleClient, ()>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    name: &str,
    args: serde_json::Value,
) -> Result<String, rmcp::ErrorData> {
    let mut params = CallToolRequestParams::new(name.to_owned());
    params.arguments = args.as_object().cloned();
    match client.call_tool(params).await {
        Ok(result) => Ok(result.content[0].as_text().unwrap().text.clone()),
        Err(ServiceError::McpError(e)) => Err(e),
        Err(other) => panic!("transport error: {other}"),
    }
}

/// Posts an `initialize` with the given Authorization header (if any).
async fn initialize(gw: &common::TestGateway, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            serde_json::json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}
            })
            .to_string(),
        );
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn requests_without_valid_credentials_are_unauthorized() {
    let gw = gateway("").await;
    let key = api_key(&gw, "alice", &[]).await;
    for header in [
        None,
        Some("Bearer mgw_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some("Basic YWxpY2U6cGFzcw=="),
        Some("Bearer "),
        Some("Bearer not.a.jwt"),
        Some(&*format!("Bearer {}", &key[..key.len() - 1])),
    ] {
        let response = initialize(&gw, header).await;
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"mcp-gateway\""
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32001, "{body}");
        assert_eq!(body["error"]["message"], "unauthorized");
    }
    let response = initialize(&gw, Some(&format!("Bearer {key}"))).await;
    assert_eq!(response.status(), 200);
    // The live events say how to authenticate as well.
    let events = reqwest::Client::new()
        .get(gw.url().replace("/mcp", "/admin/events"))
        .header("authorization", "Bearer not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 401);
    assert_eq!(
        events.headers()["www-authenticate"],
        "Bearer realm=\"mcp-gateway\""
    );

    // A revoked key stops working (the lookup cache is bypassed by a fresh key check).
    let store = gateway::store::Store::open(&gw.gateway.config.storage.database_url)
        .await
        .unwrap();
    let other = store.api_keys().create("bob", &[]).await.unwrap();
    store.api_keys().revoke("bob", None).await.unwrap();
    let response = initialize(&gw, Some(&format!("Bearer {other}"))).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn groups_decide_which_tools_a_client_sees_and_calls() {
    let gw = gateway_with_policy("").await;
    let alice = connect(&gw, &api_key(&gw, "alice", &["ops"]).await).await;
    let bob = connect(&gw, &api_key(&gw, "bob", &["dev"]).await).await;
    let carol = connect(&gw, &api_key(&gw, "carol", &[]).await).await;

    let all = tool_names(&alice).await;
    assert!(all.contains(&"demo__tally".to_owned()), "{all:?}");
    let read_only = tool_names(&bob).await;
    assert!(
        read_only.contains(&"demo__echo".to_owned()),
        "{read_only:?}"
    );
    assert!(
        !read_only.contains(&"demo__tally".to_owned()),
        "{read_only:?}"
    );
    assert!(read_only.len() < all.len());
    assert!(tool_names(&carol).await.is_empty());

    // A denied tool answers exactly as a tool that does not exist.
    let denied = call(&bob, "demo__tally", serde_json::json!({}))
        .await
        .unwrap_err();
    let missing = call(&bob, "demo__nope", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(denied.code, missing.code);
    assert_eq!(
        denied.message.replace("tally", "X"),
        missing.message.replace("nope", "X")
    );

    // The denied call never reached the upstream: the shared session's counter went 1, 2.
    assert_eq!(
        call(&alice, "demo__tally", serde_json::json!({}))
            .await
            .unwrap(),
        "1"
    );
    call(&bob, "demo__tally", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        call(&alice, "demo__tally", serde_json::json!({}))
            .await
            .unwrap(),
        "2"
    );

    // A forbid on an argument value.
    assert_eq!(
        call(&bob, "demo__echo", serde_json::json!({"text": "hello"}))
            .await
            .unwrap(),
        "hello"
    );
    call(
        &bob,
        "demo__echo",
        serde_json::json!({"text": "top secret"}),
    )
    .await
    .unwrap_err();
}

#[tokio::test]
async fn arguments_are_validated_before_dispatch() {
    let gw = gateway("anonymous = true").await;
    // Anonymous access, as the loopback demo has it.
    let client = ().serve(StreamableHttpClientTransport::from_uri(gw.url())).await.unwrap();
    let call = |args: serde_json::Value| {
        let mut params = CallToolRequestParams::new("demo__add");
        params.arguments = args.as_object().cloned();
        client.call_tool(params)
    };
    assert!(call(serde_json::json!({"a": 1, "b": 2})).await.is_ok());
    for (args, path, rule) in [
        (serde_json::json!({"a": "one", "b": 2}), "/a", "type"),
        (serde_json::json!({"a": 1}), "", "required"),
    ] {
        let Err(ServiceError::McpError(e)) = call(args.clone()).await else {
            panic!("accepted {args}");
        };
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{args}");
        let data = e.data.unwrap();
        assert_eq!(data["path"], path, "{args}");
        assert_eq!(data["rule"], rule, "{args}");
        assert!(
            e.message.starts_with("invalid arguments: "),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn the_call_past_the_limit_is_refused_with_a_retry_after() {
    let gw = gateway(
        "[[limits.rules]]\nscope = \"client-tool\"\nmethods = [\"tools/call\"]\n\
         requests = 2\nper_secs = 3600\n",
    )
    .await;
    let alice = connect(&gw, &api_key(&gw, "alice", &[]).await).await;
    let bob = connect(&gw, &api_key(&gw, "bob", &[]).await).await;
    for _ in 0..2 {
        call(&alice, "demo__now", serde_json::json!({}))
            .await
            .unwrap();
    }
    let refused = call(&alice, "demo__now", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode(gateway::access::RATE_LIMITED));
    let data = refused.data.unwrap();
    assert!(data["retryAfterSecs"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(data["scope"], "client-tool");
    // Another tool, and another client, have budgets of their own; lists are not counted.
    call(&alice, "demo__echo", serde_json::json!({"text": "x"}))
        .await
        .unwrap();
    call(&bob, "demo__now", serde_json::json!({}))
        .await
        .unwrap();
    assert!(!tool_names(&alice).await.is_empty());
}

#[tokio::test]
async fn a_policy_reload_takes_effect_and_a_broken_file_keeps_the_old_policy() {
    let gw = gateway_with_policy("").await;
    let bob = connect(&gw, &api_key(&gw, "bob", &["dev"]).await).await;
    assert!(tool_names(&bob).await.contains(&"demo__echo".to_owned()));
    let file = gw.gateway.config.policy.file.clone().unwrap();

    // A file with an error: the reload fails with file and line, the old policy stays.
    std::fs::write(
        &file,
        format!("{POLICY}\npermit(principal, action resource);\n"),
    )
    .unwrap();
    let error = gw.gateway.access.policy.reload().unwrap_err();
    assert_eq!(error.file, file);
    assert_eq!(error.line, Some(POLICY.lines().count() + 2), "{error}");
    assert!(tool_names(&bob).await.contains(&"demo__echo".to_owned()));

    // A valid file that drops the dev policy: bob sees nothing from the next request on.
    std::fs::write(
        &file,
        "permit(principal in Mcp::Group::\"ops\", action, resource);\n",
    )
    .unwrap();
    gw.gateway.access.policy.reload().unwrap();
    assert!(tool_names(&bob).await.is_empty());
    call(&bob, "demo__echo", serde_json::json!({"text": "x"}))
        .await
        .unwrap_err();
}

#[tokio::test]
async fn a_session_cannot_be_used_with_another_clients_key() {
    let gw = gateway("").await;
    let alice_key = api_key(&gw, "alice", &[]).await;
    let bob_key = api_key(&gw, "bob", &[]).await;
    let response = initialize(&gw, Some(&format!("Bearer {alice_key}"))).await;
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let list = |key: String| {
        reqwest::Client::new()
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("authorization", format!("Bearer {key}"))
            .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#)
            .send()
    };
    let own = list(alice_key.clone()).await.unwrap().text().await.unwrap();
    assert!(own.contains("demo__echo"), "{own}");
    let other = list(bob_key.clone()).await.unwrap();
    assert_eq!(other.status(), 403);
    let other = other.text().await.unwrap();
    assert!(other.contains("belongs to another client"), "{other}");
    assert!(!other.contains("demo__echo"), "{other}");

    // Nor can another client's key cancel the session's calls, answer its server's requests,
    // read its stream or end it.
    let http = reqwest::Client::new();
    let with = |request: reqwest::RequestBuilder, key: &str| {
        request
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("authorization", format!("Bearer {key}"))
    };
    for body in [
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#,
        r#"{"jsonrpc":"2.0","id":0,"result":{"roots":[]}}"#,
    ] {
        let response = with(http.post(gw.url()), &bob_key)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{body}");
    }
    let stream = with(http.get(gw.url()), &bob_key).send().await.unwrap();
    assert_eq!(stream.status(), 403);
    let end = with(http.delete(gw.url()), &bob_key).send().await.unwrap();
    assert_eq!(end.status(), 403);
    let own = list(alice_key).await.unwrap().text().await.unwrap();
    assert!(own.contains("demo__echo"), "the session survives: {own}");
}

#[tokio::test]
async fn the_policy_file_is_watched() {
    let gw = gateway_with_policy("").await;
    let bob = connect(&gw, &api_key(&gw, "bob", &["dev"]).await).await;
    assert!(!tool_names(&bob).await.is_empty());
    let mut reloads = gw.gateway.access.policy.reloads();
    std::fs::write(
        gw.gateway.config.policy.file.as_ref().unwrap(),
        "permit(principal in Mcp::Group::\"ops\", action, resource);\n",
    )
    .unwrap();
    // The watcher looks every two seconds; this waits for its reload, not for a time.
    tokio::time::timeout(std::time::Duration::from_secs(20), reloads.changed())
        .await
        .expect("the watcher reloads the changed file")
        .unwrap();
    assert!(tool_names(&bob).await.is_empty());
}

#[tokio::test]
async fn limits_reload_from_the_config_file() {
    let rule = |n: u32| {
        format!(
            "[[limits.rules]]\nscope = \"client\"\nmethods = [\"tools/call\"]\nrequests = {n}\nper_secs = 3600\n"
        )
    };
    let gw = gateway(&rule(1)).await;
    let alice = connect(&gw, &api_key(&gw, "alice", &[]).await).await;
    call(&alice, "demo__now", serde_json::json!({}))
        .await
        .unwrap();
    call(&alice, "demo__now", serde_json::json!({}))
        .await
        .unwrap_err();

    // A broken file changes nothing.
    let file = gw.gateway.config.source.clone();
    std::fs::write(&file, format!("[auth]\n{}\nbogus = 1\n", rule(5))).unwrap();
    gw.gateway.access.reload_limits(&file).await;
    call(&alice, "demo__now", serde_json::json!({}))
        .await
        .unwrap_err();

    // New limits are in force from the next call, with fresh counters.
    std::fs::write(&file, format!("[auth]\n{}", rule(5))).unwrap();
    gw.gateway.access.reload_limits(&file).await;
    for _ in 0..5 {
        call(&alice, "demo__now", serde_json::json!({}))
            .await
            .unwrap();
    }
    call(&alice, "demo__now", serde_json::json!({}))
        .await
        .unwrap_err();
}

#[tokio::test]
async fn huge_and_deep_arguments_get_an_answer_and_the_gateway_keeps_serving() {
    let gw = gateway_with_policy("").await;
    let bob = connect(&gw, &api_key(&gw, "bob", &["dev"]).await).await;
    // 50,000 extra keys, a 1 MB string, and arrays nested 100 deep (serde_json's limit is 128).
    let mut wide = serde_json::Map::new();
    for i in 0..50_000 {
        wide.insert(format!("k{i}"), serde_json::json!(i));
    }
    let mut deep = serde_json::json!(1);
    for _ in 0..100 {
        deep = serde_json::json!([deep]);
    }
    for args in [
        serde_json::json!({"text": "x", "extra": wide}),
        serde_json::json!({"text": "y".repeat(1_000_000)}),
        serde_json::json!({"text": deep}),
        serde_json::json!({"text": "z", "nested": deep}),
    ] {
        // Whatever the answer (the schema may refuse, the upstream may accept), there is one.
        let _ = call(&bob, "demo__echo", args).await;
    }
    let refused = call(&bob, "demo__echo", serde_json::json!({"text": deep}))
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::INVALID_PARAMS);
    assert_eq!(
        call(
            &bob,
            "demo__echo",
            serde_json::json!({"text": "still here"})
        )
        .await
        .unwrap(),
        "still here"
    );
}

#[tokio::test]
async fn a_sandbox_condition_is_met_or_the_call_is_refused() {
    let gw = gateway_with_policy("").await;
    let ann = connect(&gw, &api_key(&gw, "ann", &["ops"]).await).await;
    let file = gw.gateway.config.policy.file.clone().unwrap();
    // The demo server runs in the namespaces tier: a call that must run under gVisor is
    // refused, one that may run there goes through, and a per-call sandbox is a fresh server.
    for (tier, allowed) in [("gvisor", false), ("namespaces", true), ("per-call", true)] {
        std::fs::write(
            &file,
            format!("@id(\"ops\")\n@sandbox(\"{tier}\")\npermit(principal in Mcp::Group::\"ops\", action, resource);\n"),
        )
        .unwrap();
        gw.gateway.access.policy.reload().unwrap();
        let answer = call(&ann, "demo__echo", serde_json::json!({"text": tier})).await;
        if allowed {
            assert_eq!(answer.unwrap(), tier);
        } else {
            let error = answer.unwrap_err();
            assert!(error.message.contains("`gvisor` sandbox"), "{error:?}");
        }
    }
}

/// The `tools/call` outcome records and the runner records of the gateway's audit trail.
async fn outcomes_and_runner_records(
    gw: &common::TestGateway,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let store = gateway::store::Store::open(&gw.gateway.config.storage.database_url)
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = gateway::audit::entries(store.pool(), None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.record)
        .collect();
    let of_kind = |kind: &str| -> Vec<serde_json::Value> {
        records
            .iter()
            .filter(|r| r["kind"] == kind && (kind != "outcome" || r["method"] == "tools/call"))
            .cloned()
            .collect()
    };
    (of_kind("outcome"), of_kind("runner"))
}

#[tokio::test]
async fn each_call_names_its_sandbox_whose_runner_records_have_its_usage() {
    let gw = gateway_with_policy("").await;
    let ann = connect(&gw, &api_key(&gw, "ann", &["ops"]).await).await;
    let file = gw.gateway.config.policy.file.clone().unwrap();
    call(&ann, "demo__echo", serde_json::json!({"text": "warm"}))
        .await
        .unwrap();
    std::fs::write(
        &file,
        "@id(\"ops\")\n@sandbox(\"per-call\")\npermit(principal in Mcp::Group::\"ops\", action, resource);\n",
    )
    .unwrap();
    gw.gateway.access.policy.reload().unwrap();
    call(&ann, "demo__echo", serde_json::json!({"text": "fresh"}))
        .await
        .unwrap();

    // The per-call sandbox is torn down after the answer; its runner reports its exit then.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let (outcomes, runner) = loop {
        let (outcomes, runner) = outcomes_and_runner_records(&gw).await;
        let fresh = outcomes
            .last()
            .map(|o| o["sandbox"]["id"].clone())
            .unwrap_or_default();
        if runner
            .iter()
            .any(|r| r["sandbox"] == fresh && r["event"]["event"] == "exited")
        {
            break (outcomes, runner);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exit recorded for {fresh}: {runner:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let [warm, fresh] = &outcomes[..] else {
        panic!("two calls, two outcomes: {outcomes:#?}")
    };
    let events_of = |outcome: &serde_json::Value| -> Vec<serde_json::Value> {
        let id = outcome["sandbox"]["id"].as_str().unwrap();
        runner
            .iter()
            .filter(|r| r["sandbox"] == id)
            .map(|r| r["event"].clone())
            .collect()
    };
    // The warm call ran in the server's long-lived sandbox, started once and still running.
    assert_ne!(warm["sandbox"]["id"], fresh["sandbox"]["id"]);
    assert_eq!(warm["sandbox"]["notices"], serde_json::json!([]));
    let warm_events = events_of(warm);
    assert_eq!(warm_events.len(), 1, "{warm_events:#?}");
    assert_eq!(warm_events[0]["event"], "started");
    assert_eq!(warm_events[0]["tier"], "namespaces");
    // The per-call sandbox started, served the one call and exited, with what it used.
    let fresh_events = events_of(fresh);
    let kinds: Vec<&str> = fresh_events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "exited"]);
    let usage = &fresh_events[1]["usage"];
    assert!(usage["wall_ms"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["peak_memory_bytes"].as_u64().unwrap() > 0, "{usage}");
}

#[tokio::test]
async fn one_client_cannot_take_every_session() {
    let gw = gateway("[listen]\nmax_sessions_per_client = 2").await;
    let alice = format!("Bearer {}", api_key(&gw, "alice", &[]).await);
    let bob = format!("Bearer {}", api_key(&gw, "bob", &[]).await);
    // Sent all at once, only two of alice's `initialize`s get a session.
    let responses = futures::future::join_all((0..8).map(|_| initialize(&gw, Some(&alice)))).await;
    let mut sessions: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == reqwest::StatusCode::OK)
        .map(|r| r.headers()["mcp-session-id"].to_owned())
        .collect();
    assert_eq!(sessions.len(), 2, "{responses:?}");
    assert!(
        responses
            .iter()
            .all(|r| r.status() == reqwest::StatusCode::OK
                || r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "{responses:?}"
    );
    // A third is over alice's share: refused, with a JSON-RPC error and when to retry.
    let refused = initialize(&gw, Some(&alice)).await;
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32000, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_sessions_per_client"),
        "{body}"
    );
    // Another client is not held back by alice's share.
    assert_eq!(
        initialize(&gw, Some(&bob)).await.status(),
        reqwest::StatusCode::OK
    );
    // When alice ends a session she may open another.
    let deleted = reqwest::Client::new()
        .delete(gw.url())
        .header("mcp-session-id", sessions.pop().unwrap())
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::OK);
    assert_eq!(
        initialize(&gw, Some(&alice)).await.status(),
        reqwest::StatusCode::OK
    );
}
