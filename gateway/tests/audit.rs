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

    // An anchor kept outside the database catches what the database alone cannot: the newest
    // records removed together with their checkpoints.
    let (code, anchor, _) = cli(&["audit", "anchor", "--config", config], &path);
    assert_eq!(code, 0);
    std::fs::write(path.join("anchor.jsonl"), &anchor).unwrap();
    let newest: serde_json::Value = serde_json::from_str(
        anchor
            .lines()
            .find(|l| l.contains(&format!("\"{}\"", gw.gateway.audit.log.writer())))
            .expect("the gateway's chain is anchored"),
    )
    .unwrap();
    let verify_anchored = || {
        cli(
            &[
                "audit",
                "verify",
                "--anchor",
                "anchor.jsonl",
                "--config",
                config,
            ],
            &path,
        )
    };
    assert_eq!(verify_anchored().0, 0);
    let seq = newest["seq"].as_i64().unwrap();
    // Cut at the checkpoint before the newest, so what is left is all signed.
    let kept: i64 =
        sqlx::query_scalar("SELECT MAX(seq) FROM audit_checkpoints WHERE writer = $1 AND seq < $2")
            .bind(gw.gateway.audit.log.writer())
            .bind(seq)
            .fetch_one(store.pool())
            .await
            .unwrap();
    for table in ["audit_checkpoints", "audit_records"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE writer = $1 AND seq > $2"
        )))
        .bind(gw.gateway.audit.log.writer())
        .bind(kept)
        .execute(store.pool())
        .await
        .unwrap();
    }
    assert_eq!(
        cli(&["audit", "verify", "--config", config], &path).0,
        0,
        "without the anchor the shortened trail looks whole"
    );
    let (code, stdout, _) = verify_anchored();
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "ends at #{kept}, but a checkpoint or anchor names #{seq}"
        )),
        "{stdout}"
    );
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

/// A Postgres database of its own under `TEST_DATABASE_URL` (so other tests' deliberately
/// tampered chains are not in it), given to `test` as a URL and dropped afterwards. `None`
/// when `TEST_DATABASE_URL` is not set.
async fn with_own_postgres<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(String) -> F,
) -> Option<()> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return None;
    };
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
    test(own).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    Some(())
}

#[tokio::test]
async fn answered_calls_survive_kill_9_with_postgres() {
    with_own_postgres(|own| async move {
        survives_kill_9(&format!(
            "[storage]\ndata_dir = \"state\"\ndatabase_url = {own:?}"
        ))
        .await
    })
    .await;
}

/// Appends records `from..=to` to `log` (the body names `i`), waiting for the last.
async fn append(log: &gateway::audit::AuditLog, from: i64, to: i64) {
    for i in from..to {
        log.record_nowait(&serde_json::json!({"kind": "test", "i": i}))
            .unwrap();
    }
    assert_eq!(
        log.record(&serde_json::json!({"kind": "test", "i": to}))
            .await
            .unwrap(),
        to
    );
}

/// Waits for the next whole second (`--before` takes Unix seconds) and returns it.
async fn next_second() -> i64 {
    let now = gateway::audit::now_ms();
    tokio::time::sleep(Duration::from_millis((1000 - now % 1000 + 5) as u64)).await;
    now / 1000 + 1
}

/// `audit retain` moves a chain's old records into an archive, the rest still verifies (twice,
/// the second time cutting the chain that holds the first retention), a live writer goes on
/// after the cut, and a record removed any other way is still found.
async fn retention_is_audited_and_the_rest_verifies(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let database = database_url
        .as_ref()
        .map(|u| format!("database_url = {u:?}\n"))
        .unwrap_or_default();
    std::fs::write(
        path.join("gateway.toml"),
        format!("[storage]\ndata_dir = \"state\"\n{database}"),
    )
    .unwrap();
    let config = gateway::config::Config::load(&path.join("gateway.toml")).unwrap();
    let store = gateway::store::Store::open(&config.storage.database_url)
        .await
        .unwrap();
    let trail = gateway::audit::Audit::open(store.pool().clone(), &config.storage.data_dir)
        .await
        .unwrap();
    let log = &trail.log;
    let verify = || cli(&["audit", "verify"], path);
    let retain = |before: i64, archive: &str| {
        cli(
            &[
                "audit",
                "retain",
                "--before",
                &before.to_string(),
                "--archive",
                archive,
                "--by",
                "sec",
                "--json",
            ],
            path,
        )
    };
    let remaining = || async {
        sqlx::query_scalar::<_, i64>("SELECT seq FROM audit_records WHERE writer = $1 ORDER BY seq")
            .bind(log.writer())
            .fetch_all(store.pool())
            .await
            .unwrap()
    };

    append(log, 1, 10).await;
    let first = next_second().await;
    append(log, 11, 20).await;
    let (code, stdout, stderr) = retain(first, "first.jsonl");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let done: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(done["records"], 10, "{done}");
    assert_eq!(remaining().await, (11..=20).collect::<Vec<_>>());
    // The archive holds the ten records, and its SHA-256 is the one recorded.
    let archive = std::fs::read(path.join("first.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = archive
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let seqs: Vec<i64> = lines
        .iter()
        .filter(|l| l["type"] == "record" && l["writer"] == log.writer())
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&archive)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(done["archive_sha256"], sha.as_str());
    let (code, stdout, _) = verify();
    assert_eq!(code, 0, "{stdout}");

    // The retention is itself a record, naming who, the archive and where the chain starts.
    let (_, export, _) = cli(&["audit", "export"], path);
    let retention: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["record"]["kind"] == "retention")
        .expect("a retention record")["record"]
        .clone();
    assert_eq!(retention["by"], "sec");
    assert_eq!(retention["archive"]["sha256"], sha.as_str());
    assert!(
        retention["bases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["writer"] == log.writer() && b["seq"] == 10),
        "{retention}"
    );

    // Later, a second retention also takes the whole chain that recorded the first one: its
    // record carries the first one's bases forward, and everything left still verifies.
    let second = next_second().await;
    append(log, 21, 25).await;
    let (code, stdout, stderr) = retain(second, "second.jsonl");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(remaining().await, (21..=25).collect::<Vec<_>>());
    let (_, export, _) = cli(&["audit", "export"], path);
    let retentions: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["record"]["kind"] == "retention")
        .collect();
    assert_eq!(retentions.len(), 1, "the first retention's chain was cut");
    assert_ne!(retentions[0]["record"]["archive"]["sha256"], sha.as_str());
    let (code, stdout, _) = verify();
    assert_eq!(code, 0, "{stdout}");
    // The writer that was cut goes on; its chain still links.
    append(log, 26, 27).await;
    let (code, stdout, _) = verify();
    assert_eq!(code, 0, "{stdout}");

    // A record removed without a retention is still missing, and retention then refuses,
    // creating no archive.
    sqlx::query("DELETE FROM audit_records WHERE writer = $1 AND seq = 21")
        .bind(log.writer())
        .execute(store.pool())
        .await
        .unwrap();
    let (code, stdout, _) = verify();
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!("record {}#21 is missing", log.writer())),
        "{stdout}"
    );
    let (code, _, stderr) = retain(next_second().await, "third.jsonl");
    assert_ne!(code, 0);
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(!path.join("third.jsonl").exists());
}

#[tokio::test]
async fn retention_is_audited_and_the_rest_verifies_with_sqlite() {
    retention_is_audited_and_the_rest_verifies(None).await;
}

#[tokio::test]
async fn retention_is_audited_and_the_rest_verifies_with_postgres() {
    with_own_postgres(|own| retention_is_audited_and_the_rest_verifies(Some(own))).await;
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
                    // A record's kind stands for its event type.
                    let kind = field("data:")
                        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                        .and_then(|d| d["kind"].as_str().map(str::to_owned));
                    let event = field("event:").unwrap_or_default();
                    assert!(kind.is_some() || event != "record", "{block}");
                    events.push((kind.unwrap_or(event), id.parse().unwrap()));
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
    // Each call here is a session of its own: a session-start record, a decision record and an
    // outcome record, three events.
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
    // The stream also carries the gateway's own records (the demo server's runner events and
    // tool states, from its start), so the calls' events are counted by kind, and the ids of
    // everything are checked for gaps and repeats.
    let calls = |n: usize| {
        move |events: &[(String, u64)]| {
            events
                .iter()
                .filter(|e| matches!(e.0.as_str(), "session-start" | "decision" | "outcome"))
                .count()
                >= 3 * n
        }
    };
    let consecutive = |events: &[(String, u64)], after: u64| {
        assert_eq!(
            events.iter().map(|e| e.1).collect::<Vec<_>>(),
            (after + 1..=after + events.len() as u64).collect::<Vec<_>>(),
            "{events:?}"
        );
    };
    let mut buffer = String::new();
    let seen = read_events(&mut stream, &mut buffer, calls(3)).await;
    consecutive(&seen, 0);
    let mut kinds: Vec<&str> = seen
        .iter()
        .map(|e| e.0.as_str())
        .filter(|k| matches!(*k, "session-start" | "decision" | "outcome"))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "decision",
            "decision",
            "decision",
            "outcome",
            "outcome",
            "outcome",
            "session-start",
            "session-start",
            "session-start"
        ]
    );
    // Who started each session, over which door, and what the client said it was.
    let bodies: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM audit_records WHERE body LIKE '%\"kind\":\"session-start\"%' ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(bodies.len(), 3);
    for body in &bodies {
        let record: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(record["client"], "alice", "{record}");
        assert_eq!(record["via"], "api-key", "{record}");
        assert_eq!(record["clientInfo"]["name"], "rmcp", "{record}");
        assert!(record["protocolVersion"].as_str().is_some(), "{record}");
        assert!(record["session"].as_str().is_some(), "{record}");
    }
    let last = seen.last().map_or(0, |e| e.1);
    drop(stream);

    // While away: two more calls, six more events of theirs.
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
    let mut stream = open(&admin, Some(last)).await.unwrap();
    let mut buffer = String::new();
    let missed = read_events(&mut stream, &mut buffer, calls(2)).await;
    consecutive(&missed, last);
    let last = missed.last().map_or(last, |e| e.1);
    // And then the live ones, with nothing repeated.
    call(&url, &user, "demo__echo", serde_json::json!({"text": "c"}))
        .await
        .unwrap();
    let live = read_events(&mut stream, &mut buffer, calls(1)).await;
    consecutive(&live, last);
}

#[tokio::test]
async fn a_list_that_leaves_out_a_server_that_is_down_is_recorded_as_partial() {
    let gw = common::start_serving(
        tempfile::tempdir().unwrap(),
        "call_secs = 5\nconnect_secs = 10",
        &format!(
            "{}[servers.broken]\ncommand = \"/nonexistent/mcp-server\"\n",
            common::demo_server("demo")
        ),
    )
    .await;
    gw.gateway.registry.get("demo").unwrap().wait_ready().await;
    let broken = gw.gateway.registry.get("broken").unwrap().clone();
    let mut state = broken.watch_state();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| matches!(s, gateway::upstream::UpstreamState::Failed(_))),
    )
    .await
    .expect("the broken server fails")
    .unwrap();
    let client = ().serve(StreamableHttpClientTransport::from_uri(gw.url())).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "demo__echo"), "{tools:?}");
    client.list_all_prompts().await.unwrap();

    let store = gateway::store::Store::open(&gw.gateway.config.storage.database_url)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let partial = loop {
        let partial: Vec<serde_json::Value> = gateway::audit::entries(store.pool(), None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.record)
            .filter(|r| r["outcome"]["degradation"] == "partial-result")
            .collect();
        if partial.len() >= 2 || tokio::time::Instant::now() > deadline {
            break partial;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let methods: Vec<&str> = partial
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["tools/list", "prompts/list"], "{partial:#?}");
    for record in &partial {
        assert_eq!(record["unavailable"], serde_json::json!(["broken"]));
        assert_eq!(record["client"], "anonymous");
    }
}
