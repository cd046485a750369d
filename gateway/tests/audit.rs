//! The audit trail end to end: what calls record, `mcp-gateway audit verify|query|replay`, and
//! records surviving `kill -9` of a gateway under load, with SQLite and with Postgres.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

const POLICY: &str = r#"
@id("ops")
permit(principal in Mcp::Group::"ops", action, resource);
@id("dev-reads")
permit(principal in Mcp::Group::"dev", action in Mcp::Action::"tools", resource is Mcp::Tool)
when { resource has readOnlyHint && resource.readOnlyHint };
"#;

fn cli(args: &[&str], dir: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn call(
    url: &str,
    key: &str,
    tool: &str,
    args: serde_json::Value,
) -> Result<(), rmcp::service::ServiceError> {
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url).auth_header(key),
        ))
        .await
        .unwrap();
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = args.as_object().cloned();
    client.call_tool(params).await.map(|_| ())
}

#[tokio::test]
async fn calls_are_recorded_verified_queried_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    std::fs::write(path.join("policy.cedar"), POLICY).unwrap();
    // The same state for the CLI as for the gateway under test.
    std::fs::write(
        path.join("gateway.toml"),
        format!(
            "[storage]\ndata_dir = {:?}\n[policy]\nfile = \"policy.cedar\"\n",
            path.display()
        ),
    )
    .unwrap();
    let gw = common::start_in(
        dir,
        "call_secs = 5\nconnect_secs = 10",
        &format!(
            "[auth]\n[policy]\nfile = \"policy.cedar\"\n{}",
            common::demo_server("demo")
        ),
    )
    .await;
    let store = gateway::store::Store::open(&gw.gateway.config.storage.database_url)
        .await
        .unwrap();
    let alice = store
        .api_keys()
        .create("alice", &["ops".into()])
        .await
        .unwrap();
    let bob = store
        .api_keys()
        .create("bob", &["dev".into()])
        .await
        .unwrap();
    let url = gw.url();
    call(&url, &alice, "demo__tally", serde_json::json!({}))
        .await
        .unwrap();
    call(&url, &bob, "demo__echo", serde_json::json!({"text": "hi"}))
        .await
        .unwrap();
    call(&url, &bob, "demo__tally", serde_json::json!({}))
        .await
        .unwrap_err();

    let config = path.join("gateway.toml");
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = cli(&["audit", "verify", "--config", config], &path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("0 chains with problems"), "{stdout}");

    let (_, stdout, _) = cli(
        &[
            "audit",
            "query",
            "--client",
            "bob",
            "--decision",
            "deny",
            "--config",
            config,
        ],
        &path,
    );
    let denied: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(denied.len(), 1, "{stdout}");
    assert_eq!(denied[0]["record"]["tool"], "demo__tally");
    let (_, stdout, _) = cli(&["audit", "export", "--config", config], &path);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<_> = records
        .iter()
        .filter(|e| e["record"]["kind"] == "outcome")
        .map(|e| {
            e["record"]["outcome"]["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["success", "success", "error"], "{stdout}");
    // The demo server's tools were recorded as pinned on first use when it connected.
    assert!(records.iter().any(|e| e["record"]["kind"] == "tool-state"
        && e["record"]["tool"] == "tally"
        && e["record"]["state"] == "pinned"));
    assert!(records.iter().any(|e| {
        e["record"]["definitionHash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
    }));

    // Under the recorded policy nothing differs; under one that drops `dev-reads`, bob's
    // echo would have been denied.
    let (code, stdout, _) = cli(&["audit", "replay", "--json", "--config", config], &path);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["decisions"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["differences"], serde_json::json!([]), "{report}");
    std::fs::write(
        path.join("strict.cedar"),
        "@id(\"ops\")\npermit(principal in Mcp::Group::\"ops\", action, resource);\n",
    )
    .unwrap();
    let (_, stdout, _) = cli(
        &[
            "audit",
            "replay",
            "--json",
            "--policy",
            "strict.cedar",
            "--config",
            config,
        ],
        &path,
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let differences = report["differences"].as_array().unwrap();
    assert!(!differences.is_empty(), "{report}");
    assert!(
        differences
            .iter()
            .all(|d| d["client"] == "bob" && d["now"] == "deny")
    );
    assert!(
        differences
            .iter()
            .any(|d| d["tool"] == "demo__echo" && d["method"] == "tools/call")
    );

    // The public key the CLI prints verifies the trail; another key does not.
    let (_, pem, _) = cli(&["audit", "key", "--config", config], &path);
    std::fs::write(path.join("audit.pub"), pem).unwrap();
    let (code, _, _) = cli(
        &[
            "audit",
            "verify",
            "--public-key",
            "audit.pub",
            "--config",
            config,
        ],
        &path,
    );
    assert_eq!(code, 0);
}

/// Runs the gateway binary under a load of calls, kills it with SIGKILL mid-load, and checks
/// that every call whose answer reached its client has its outcome recorded and that every
/// chain verifies.
async fn survives_kill_9(storage: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(
        path.join("gateway.toml"),
        format!(
            "{storage}\n[auth]\nanonymous = true\n{}",
            common::demo_server("demo")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .args(["serve", "--config", "gateway.toml", "--bind", "127.0.0.1:0"])
        .current_dir(path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(path.join("gateway.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (url, answered, count_tx) = (url.clone(), answered.clone(), count_tx.clone());
        workers.push(tokio::spawn(async move {
            let Ok(client) = ().serve(StreamableHttpClientTransport::from_uri(url)).await else {
                return;
            };
            for i in 0.. {
                let args = serde_json::json!({"text": format!("w{worker}-{i}")});
                let mut params = CallToolRequestParams::new("demo__echo");
                params.arguments = args.as_object().cloned();
                match client.call_tool(params).await {
                    Ok(_) => {
                        answered
                            .lock()
                            .unwrap()
                            .insert(gateway::audit::digest(&args));
                        count_tx.send_modify(|n| *n += 1);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a few hundred calls have been answered, with the rest still in flight.
    tokio::time::timeout(Duration::from_secs(60), count.wait_for(|n| *n >= 300))
        .await
        .expect("the gateway answers calls")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // Every answer that reached a client is in `answered` by now: a worker records its answer
    // before its next await. What the clients do with the dead connection does not matter.
    for worker in &workers {
        worker.abort();
    }
    let answered = answered.lock().unwrap().clone();

    let (code, stdout, stderr) = cli(&["audit", "verify", "--config", "gateway.toml"], path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (_, stdout, _) = cli(&["audit", "export", "--config", "gateway.toml"], path);
    let recorded: BTreeSet<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| {
            e["record"]["kind"] == "outcome" && e["record"]["outcome"]["status"] == "success"
        })
        .map(|e| e["record"]["argumentsDigest"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = answered.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls have no outcome record",
        missing.len(),
        answered.len()
    );
}

#[tokio::test]
async fn answered_calls_survive_kill_9_with_sqlite() {
    survives_kill_9("[storage]\ndata_dir = \"state\"").await;
}

#[tokio::test]
async fn answered_calls_survive_kill_9_with_postgres() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    };
    // A database of its own, so other tests' (deliberately tampered) chains are not in it.
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&url).await.unwrap();
    let name = format!("audit_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let own = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("TEST_DATABASE_URL has no database name: {url}"),
    };
    survives_kill_9(&format!(
        "[storage]\ndata_dir = \"state\"\ndatabase_url = {own:?}"
    ))
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}

/// Reads SSE events from `response` until `done` says so; returns (event, id) pairs.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    done: impl Fn(&[(String, u64)]) -> bool,
) -> Vec<(String, u64)> {
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !done(&events) {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                if let Some(id) = field("id:") {
                    events.push((field("event:").unwrap_or_default(), id.parse().unwrap()));
                }
            }
            if done(&events) {
                break;
            }
            let chunk = response
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the events arrive");
    events
}

#[tokio::test]
async fn a_watcher_that_reconnects_gets_exactly_the_events_it_missed() {
    let gw = common::start(&format!("[auth]\n{}", common::demo_server("demo"))).await;
    let store = gateway::store::Store::open(&gw.gateway.config.storage.database_url)
        .await
        .unwrap();
    let admin = store
        .api_keys()
        .create("sec", &["admin".into()])
        .await
        .unwrap();
    let user = store.api_keys().create("alice", &[]).await.unwrap();
    let events_url = format!("http://{}/admin/events", gw.addr);
    let http = reqwest::Client::new();
    let open = |key: &str, last: Option<u64>| {
        let mut request = http
            .get(&events_url)
            .header("authorization", format!("Bearer {key}"));
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        request.send()
    };
    assert_eq!(http.get(&events_url).send().await.unwrap().status(), 401);
    assert_eq!(open(&user, None).await.unwrap().status(), 403);

    let mut stream = open(&admin, None).await.unwrap();
    assert_eq!(stream.status(), 200);
    let url = gw.url();
    // Each call is a decision record and an outcome record: two events.
    for i in 0..3 {
        call(
            &url,
            &user,
            "demo__echo",
            serde_json::json!({"text": format!("a{i}")}),
        )
        .await
        .unwrap();
    }
    let mut buffer = String::new();
    let seen = read_events(&mut stream, &mut buffer, |e| e.len() >= 6).await;
    assert_eq!(
        seen.iter().map(|e| e.1).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(seen.iter().all(|e| e.0 == "record"));
    drop(stream);

    // While away: two more calls, four more events.
    for i in 0..2 {
        call(
            &url,
            &user,
            "demo__echo",
            serde_json::json!({"text": format!("b{i}")}),
        )
        .await
        .unwrap();
    }
    let mut stream = open(&admin, Some(6)).await.unwrap();
    let mut buffer = String::new();
    let missed = read_events(&mut stream, &mut buffer, |e| e.len() >= 4).await;
    assert_eq!(
        missed.iter().map(|e| e.1).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
    // And then the live ones, with nothing repeated.
    call(&url, &user, "demo__echo", serde_json::json!({"text": "c"}))
        .await
        .unwrap();
    let live = read_events(&mut stream, &mut buffer, |e| e.len() >= 2).await;
    assert_eq!(live.iter().map(|e| e.1).collect::<Vec<_>>(), [11, 12]);
}
