//! Service tests: a real rmcp client over Streamable HTTP, through the gateway, to demo servers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

mod common;

use std::time::Duration;

use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::*,
    service::{NotificationContext, PeerRequestOptions, RunningService},
    transport::StreamableHttpClientTransport,
};
use tokio::sync::mpsc;

/// A client that forwards the progress and list-change notifications it receives.
#[derive(Clone)]
struct Recorder {
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
    tools_changed: mpsc::UnboundedSender<()>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.tools_changed.send(());
    }
}

struct Client {
    service: RunningService<RoleClient, Recorder>,
    progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    tools_changed: mpsc::UnboundedReceiver<()>,
}

async fn connect(url: &str) -> Client {
    let (progress_tx, progress) = mpsc::unbounded_channel();
    let (changed_tx, tools_changed) = mpsc::unbounded_channel();
    let recorder = Recorder {
        progress: progress_tx,
        tools_changed: changed_tx,
    };
    let service = recorder
        .serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .expect("client connects");
    Client {
        service,
        progress,
        tools_changed,
    }
}

fn call(name: &str, args: serde_json::Value) -> CallToolRequestParams {
    let serde_json::Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(args)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test]
async fn aggregates_prefixed_tools_and_relays_calls() {
    let gw = common::start(&format!(
        "{}{}",
        common::demo_server("alpha"),
        common::demo_server("beta")
    ))
    .await;
    let client = connect(&gw.url()).await;
    let tools = client.service.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "alpha__add",
            "alpha__countdown",
            "alpha__echo",
            "alpha__now",
            "alpha__tally",
            "alpha__text_stats",
            "beta__add",
            "beta__countdown",
            "beta__echo",
            "beta__now",
            "beta__tally",
            "beta__text_stats"
        ]
    );
    let result = client
        .service
        .call_tool(call("beta__add", serde_json::json!({"a": 2, "b": 40})))
        .await
        .unwrap();
    assert_eq!(text(&result), "42");

    // An unknown tool, a tool of an unknown server and a bare upstream name are all unknown.
    for name in ["alpha__nope", "gamma__echo", "echo"] {
        let err = client
            .service
            .call_tool(call(name, serde_json::json!({})))
            .await
            .unwrap_err();
        let rmcp::service::ServiceError::McpError(err) = err else {
            panic!("{name}: expected a JSON-RPC error, got {err:?}")
        };
        assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{name}");
    }
    // A tool's own error is a JSON-RPC error from the upstream, relayed unchanged.
    let err = client
        .service
        .call_tool(call("alpha__countdown", serde_json::json!({"seconds": 61})))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("seconds must be at most 60"),
        "{err:?}"
    );
}

#[tokio::test]
async fn pages_use_gateway_cursors() {
    let gw = common::start(&format!(
        "[routing]\npage_size = 3\n{}{}",
        common::demo_server("alpha"),
        common::demo_server("beta")
    ))
    .await;
    let client = connect(&gw.url()).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = client
            .service
            .list_tools(Some(PaginatedRequestParams::default().with_cursor(cursor)))
            .await
            .unwrap();
        assert!(page.tools.len() <= 3);
        seen.extend(page.tools.into_iter().map(|t| t.name.to_string()));
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 12, "{seen:?}");
    assert_eq!(seen.len(), 12);

    let err = client
        .service
        .list_tools(Some(
            PaginatedRequestParams::default().with_cursor(Some("bogus".into())),
        ))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("invalid cursor"), "{err:?}");
}

#[tokio::test]
async fn progress_reaches_the_caller_and_cancel_reaches_the_upstream() {
    let gw = common::start(&common::demo_server("demo")).await;
    let mut client = connect(&gw.url()).await;
    let handle = client
        .service
        .send_request_with_option(
            ClientRequest::CallToolRequest(Request::new(call(
                "demo__countdown",
                serde_json::json!({"seconds": 2}),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let token = handle.progress_token.clone();
    let response = handle.await_response().await.unwrap();
    let ServerResult::CallToolResult(result) = response else {
        panic!("expected a tool result, got {response:?}")
    };
    assert_eq!(text(&result), "liftoff");
    let first = client.progress.recv().await.unwrap();
    let second = client.progress.recv().await.unwrap();
    // The client sees its own token, not the one the gateway used upstream.
    assert_eq!(first.progress_token, token);
    assert_eq!((first.progress, second.progress), (0.0, 1.0));
    assert_eq!(first.total, Some(2.0));

    // Cancel a long call: the gateway drops it (nothing stays in flight) and stays usable.
    let handle = client
        .service
        .send_request_with_option(
            ClientRequest::CallToolRequest(Request::new(call(
                "demo__countdown",
                serde_json::json!({"seconds": 30}),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    client.progress.recv().await.unwrap();
    assert_eq!(gw.gateway.sessions.inflight_count(), 1);
    handle.cancel(Some("test".into())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while gw.gateway.sessions.inflight_count() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cancelled call leaves the in-flight table");
    let result = client
        .service
        .call_tool(call(
            "demo__echo",
            serde_json::json!({"text": "still here"}),
        ))
        .await
        .unwrap();
    assert_eq!(text(&result), "still here");
}

#[tokio::test]
async fn an_upstream_killed_mid_call_fails_the_call_and_comes_back() {
    let gw = common::start(&format!(
        "{}{}",
        common::demo_server("doomed"),
        common::demo_server("other")
    ))
    .await;
    let mut client = connect(&gw.url()).await;
    let upstream = gw.gateway.registry.get("doomed").unwrap().clone();
    let pid = upstream.pid().expect("a running process");

    let call_task = {
        let peer = client.service.peer().clone();
        tokio::spawn(async move {
            peer.call_tool(call(
                "doomed__countdown",
                serde_json::json!({"seconds": 30}),
            ))
            .await
        })
    };
    // Once progress arrives the call is in the upstream's hands.
    client.progress.recv().await.unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let err = call_task.await.unwrap().unwrap_err();
    let rmcp::service::ServiceError::McpError(err) = err else {
        panic!("expected a JSON-RPC error, got {err:?}")
    };
    assert_eq!(err.code, ErrorCode::INTERNAL_ERROR);
    assert!(err.message.contains("doomed"), "{}", err.message);

    // Its tools disappear, clients hear about it, the other server keeps working...
    client.tools_changed.recv().await.unwrap();
    let result = client
        .service
        .call_tool(call("other__echo", serde_json::json!({"text": "fine"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "fine");
    // ...and the supervisor restarts it.
    tokio::time::timeout(Duration::from_secs(20), upstream.wait_ready())
        .await
        .unwrap();
    assert_ne!(upstream.pid(), Some(pid));
    let result = client
        .service
        .call_tool(call("doomed__echo", serde_json::json!({"text": "back"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "back");
}

#[tokio::test]
async fn pass_through_serves_upstream_names_and_identity() {
    let gw = common::start(&format!(
        "[routing]\npass_through = true\n{}",
        common::demo_server("only")
    ))
    .await;
    let client = connect(&gw.url()).await;
    let info = client.service.peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("mcp-gateway-demo")
    );
    let result = client
        .service
        .call_tool(call("echo", serde_json::json!({"text": "direct"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "direct");
}

#[tokio::test]
async fn per_client_servers_keep_each_clients_state_apart() {
    let gw = common::start(&format!(
        "{}sessions = \"per-client\"\n{}",
        common::demo_server("mine"),
        common::demo_server("ours")
    ))
    .await;
    let a = connect(&gw.url()).await;
    let b = connect(&gw.url()).await;
    let tally = |client: &Client, name: &str| {
        let peer = client.service.peer().clone();
        let name = name.to_owned();
        async move {
            text(
                &peer
                    .call_tool(call(&name, serde_json::json!({})))
                    .await
                    .unwrap(),
            )
        }
    };
    // Per-client: each client session has its own upstream session, so its own counter.
    assert_eq!(tally(&a, "mine__tally").await, "1");
    assert_eq!(tally(&a, "mine__tally").await, "2");
    assert_eq!(tally(&b, "mine__tally").await, "1");
    // Shared (the default): one upstream session serves both.
    assert_eq!(tally(&a, "ours__tally").await, "1");
    assert_eq!(tally(&b, "ours__tally").await, "2");

    let mine = gw.gateway.registry.get("mine").unwrap().clone();
    assert_eq!(mine.per_client_count().await, 2);
    // Ending a client session ends its upstream session.
    a.service.cancel().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while mine.per_client_count().await != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the ended session's upstream connection is closed");
    assert_eq!(tally(&b, "mine__tally").await, "2");

    // A per-client server that dies is started again by the session's next call, with state
    // of its own from the start (the shared one is restarted by its supervisor meanwhile).
    for pid in descendants_running("demo-server") {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let fresh = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let peer = b.service.peer().clone();
            match peer
                .call_tool(call("mine__tally", serde_json::json!({})))
                .await
            {
                Ok(result) => break text(&result),
                // The call that finds the old connection still open fails; the next ones start
                // a new server.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("a call of the session reaches a new server");
    assert_eq!(fresh, "1");
}

/// The processes below this one whose command line contains `pattern`.
fn descendants_running(pattern: &str) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mine = std::process::id();
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    all.into_iter()
        .filter(|&pid| {
            let mut at = pid;
            while let Some(parent) = parent_of(at) {
                if parent == mine {
                    return true;
                }
                if parent <= 1 {
                    break;
                }
                at = parent;
            }
            false
        })
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(pattern))
        })
        .collect()
}

#[tokio::test]
async fn a_hung_upstream_times_out_calls_and_is_restarted() {
    let gw = common::start_with_timeouts(
        "call_secs = 1\nhealth_secs = 1\nhealth_timeout_secs = 1",
        &format!(
            "{}{}",
            common::demo_server("frozen"),
            common::demo_server("other")
        ),
    )
    .await;
    let mut client = connect(&gw.url()).await;
    let upstream = gw.gateway.registry.get("frozen").unwrap().clone();
    let pid = upstream.pid().expect("a running process");
    // SIGSTOP: the server stays alive but answers nothing, like a server stuck in a loop. The
    // pid is the sandbox's init; the server is its child.
    let status = std::process::Command::new("pkill")
        .args(["-STOP", "-P", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let err = client
        .service
        .call_tool(call("frozen__echo", serde_json::json!({"text": "hello?"})))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("did not answer within"),
        "{err:?}"
    );
    // The other server is unaffected.
    let result = client
        .service
        .call_tool(call("other__echo", serde_json::json!({"text": "fine"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "fine");
    // The health check finds it hung: its tools go away, it is killed and started again.
    // One list change when it goes away, one when it is back.
    client.tools_changed.recv().await.unwrap();
    client.tools_changed.recv().await.unwrap();
    upstream.wait_ready().await;
    assert!(upstream.pid().is_some_and(|p| p != pid));
    let result = client
        .service
        .call_tool(call("frozen__echo", serde_json::json!({"text": "thawed"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "thawed");
}

/// Waits (up to 15 s) until `upstream` is suspended.
async fn until_suspended(upstream: &gateway::upstream::Upstream) {
    let mut state = upstream.watch_state();
    tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| *s == gateway::upstream::UpstreamState::Suspended),
    )
    .await
    .expect("suspended within 15 s")
    .unwrap();
}

#[tokio::test]
async fn an_idle_server_is_stopped_and_started_again_by_the_next_call() {
    let gw = common::start(&format!(
        "{}idle_suspend_secs = 1\n",
        common::demo_server("demo")
    ))
    .await;
    let client = connect(&gw.url()).await;
    let upstream = gw.gateway.registry.get("demo").unwrap().clone();
    let first = upstream.pid().expect("a running process");
    until_suspended(&upstream).await;
    // Its tools stay listed, and a call starts it again.
    let tools = client.service.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "demo__echo"));
    let result = client
        .service
        .call_tool(call("demo__echo", serde_json::json!({"text": "awake"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "awake");
    assert_eq!(upstream.state(), gateway::upstream::UpstreamState::Ready);
    // A new sandbox answered; the idle one was gone before it started.
    assert_ne!(upstream.pid(), Some(first));
    assert!(
        !std::path::Path::new(&format!("/proc/{first}")).exists(),
        "the idle sandbox is gone"
    );
}

#[tokio::test]
async fn a_server_is_terminated_with_its_process_when_the_gateway_stops() {
    let gw = common::start(&common::demo_server("demo")).await;
    let upstream = gw.gateway.registry.get("demo").unwrap().clone();
    assert_eq!(upstream.lifecycle(), "ready");
    let pid = upstream.pid().expect("a running process");
    gw.gateway.stop(Duration::from_secs(15)).await;
    assert_eq!(upstream.lifecycle(), "terminated");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the sandbox is gone"
    );
    let Err(error) = upstream.peer() else {
        panic!("a peer after stop")
    };
    assert!(error.to_string().contains("shutting down"), "{error}");
}

#[tokio::test]
async fn a_lazy_server_runs_for_its_catalog_then_only_once_a_request_needs_it() {
    let gw = common::start(&format!("{}lazy = true\n", common::demo_server("demo"))).await;
    let upstream = gw.gateway.registry.get("demo").unwrap().clone();
    until_suspended(&upstream).await;
    // Its process is gone soon after (the state changes first, so no request is lost).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.pid().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the process stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its verified tools are listed without it running; a call starts it.
    let client = connect(&gw.url()).await;
    let tools = client.service.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "demo__echo"));
    assert_eq!(upstream.lifecycle(), "suspended");
    let result = client
        .service
        .call_tool(call("demo__echo", serde_json::json!({"text": "woken"})))
        .await
        .unwrap();
    assert_eq!(text(&result), "woken");
    assert_eq!(upstream.lifecycle(), "ready");
    assert!(upstream.pid().is_some());
}
