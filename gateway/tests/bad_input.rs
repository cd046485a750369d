//! Bad input at the HTTP front door: each gets the right answer, and the gateway keeps serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

mod common;

use reqwest::{Client, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

const ACCEPT: &str = "application/json, text/event-stream";

const INITIALIZE: &str = r#"{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {},
    "clientInfo": {"name": "bad-input-test", "version": "1"}}}"#;

#[derive(Clone)]
struct Http {
    client: Client,
    url: String,
}

impl Http {
    fn to(gw: &common::TestGateway) -> Self {
        Self {
            client: Client::new(),
            url: gw.url(),
        }
    }

    async fn post(
        &self,
        session: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(body);
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn initialize(&self) -> String {
        let (status, headers, _) = self.post(None, INITIALIZE.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
        let (status, _, _) = self
            .post(
                Some(&session),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        session
    }
}

/// A gateway with `listen` as its `[listen]` table, in front of the demo server.
async fn gateway(listen: &str) -> common::TestGateway {
    common::start(&format!(
        "[listen]\n{listen}\n{}",
        common::demo_server("demo")
    ))
    .await
}

/// The JSON-RPC message in a JSON or SSE response body.
fn message(body: &str) -> Value {
    let json = body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .find(|data| !data.is_empty())
        .unwrap_or(body);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn error_code(body: &str) -> i64 {
    message(body)["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn each_bad_request_gets_its_answer_and_the_gateway_keeps_serving() {
    let gw =
        gateway("max_body_bytes = 65536\nallowed_origins = [\"http://localhost:6274\"]\n").await;
    let http = Http::to(&gw);
    let session = http.initialize().await;

    // Malformed JSON: parse error.
    let (_, _, body) = http
        .post(Some(&session), "{\"jsonrpc\": \"2.0\", \"id\": 2, ")
        .await;
    assert_eq!(error_code(&body), -32700, "{body}");

    // Valid JSON that is not a JSON-RPC message: invalid request.
    let (_, _, body) = http
        .post(Some(&session), json!({"id": 3, "foo": 1}).to_string())
        .await;
    assert_eq!(error_code(&body), -32600, "{body}");

    // Unknown method: method not found.
    let (_, _, body) = http
        .post(
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/teleport", "params": {}})
                .to_string(),
        )
        .await;
    assert_eq!(error_code(&body), -32601, "{body}");

    // Unknown tool: invalid params.
    let (_, _, body) = http
        .post(
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                   "params": {"name": "demo__teleport", "arguments": {}}})
            .to_string(),
        )
        .await;
    assert_eq!(error_code(&body), -32602, "{body}");

    // JSON-RPC the transport cannot read as a message gets JSON-RPC too, not a plain-text 415:
    // an id beyond 64 bits, a request that carries a result, `_meta` that is not an object.
    for bad in [
        r#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":12,"method":"ping","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":13,"method":"tools/list","params":{"_meta":"x"}}"#,
        // A key given twice, and errors of a shape no JSON-RPC error has: rmcp answered these
        // with 415, as if the Content-Type were wrong.
        r#"{"jsonrpc":"2.0","id":8,"id":9,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":"boom"}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1}}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":"x","message":1}}"#,
    ] {
        let (status, _, body) = http.post(Some(&session), bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), -32600, "{bad}: {body}");
    }

    // A method of the protocol with params that do not fit it: invalid params, not "method not
    // found", which would tell the client that tools/call does not exist.
    for params in [
        json!({"name": 5}),
        json!({"name": "demo__add", "arguments": [1, 2]}),
    ] {
        let (_, _, body) = http
            .post(
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": params})
                    .to_string(),
            )
            .await;
        assert_eq!(error_code(&body), -32602, "{body}");
    }
    // A list cursor that is not a string: invalid params, not the first page again.
    for cursor in [json!(5), json!({})] {
        let (_, _, body) = http
            .post(
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 16, "method": "tools/list",
                       "params": {"cursor": cursor}})
                .to_string(),
            )
            .await;
        assert_eq!(error_code(&body), -32602, "{body}");
    }
    // So is an initialize without its params, instead of a complaint about the session.
    let (_, _, body) = http
        .post(
            None,
            json!({"jsonrpc": "2.0", "id": 15, "method": "initialize"}).to_string(),
        )
        .await;
    assert_eq!(error_code(&body), -32602, "{body}");

    // A body over the limit: 413, whatever Content-Length says.
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/call\",\"params\":{{\"name\":\"demo__echo\",\"arguments\":{{\"text\":\"{}\"}}}}}}",
        "x".repeat(70_000)
    );
    let (status, _, _) = http.post(Some(&session), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A request without a session after initialization: 400. An unknown session: 404.
    let list = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string();
    let response = http
        .client
        .post(&http.url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2025-11-25")
        .body(list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, _, _) = http.post(Some("no-such-session"), list.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An unsupported protocol version header: 400.
    let response = http
        .client
        .post(&http.url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "1999-01-01")
        .body(list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A foreign Host (DNS rebinding) and an unlisted browser Origin: refused.
    let response = http
        .client
        .post(&http.url)
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = http
        .client
        .post(&http.url)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The endpoints beside MCP check the Host as well: `/readyz` names the upstreams and the
    // policy file. `/healthz` says only "ok", to any Host.
    let base = http.url.trim_end_matches("/mcp").to_owned();
    for path in ["/readyz", "/admin/events"] {
        let response = http
            .client
            .get(format!("{base}{path}"))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(!response.text().await.unwrap().contains("demo"), "{path}");
    }
    let response = http
        .client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("demo"));
    let response = http
        .client
        .get(format!("{base}/healthz"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // After all that, the same session still works.
    let (status, _, body) = http
        .post(
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                   "params": {"name": "demo__echo", "arguments": {"text": "alive"}}})
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        message(&body)["result"]["content"][0]["text"],
        "alive",
        "{body}"
    );

    // DELETE ends the session; it is unknown afterwards.
    let response = http
        .client
        .delete(&http.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let (status, _, _) = http.post(Some(&session), list).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Sends `head` (and `body`) on a raw connection, half-closes it, and returns what came back.
async fn raw_exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bodies_that_cannot_arrive_are_answered_at_once() {
    let gw = gateway("max_body_bytes = 65536\n").await;
    let head = |length: usize| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Accept: {ACCEPT}\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // A declared length over the limit is refused before any of the body is read.
    let answer = raw_exchange(gw.addr, &head(100_000_000), b"").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A body shorter than its Content-Length, then the end of the stream: 400, not 413.
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let answer = raw_exchange(gw.addr, &head(1000), body).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A request that names its host twice, in ways that disagree, is refused before any Host
    // check reads the first: two Host headers, or an absolute-form target for another host.
    for head in [
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n".to_owned(),
        "GET http://evil.example/readyz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
    ] {
        let answer = raw_exchange(gw.addr, &head, b"").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head}: {answer}");
    }
    // One Host, or an absolute-form target for the same host, is fine.
    let answer = raw_exchange(
        gw.addr,
        &format!(
            "GET http://{0}/healthz HTTP/1.1\r\nHost: {0}\r\n\r\n",
            gw.addr
        ),
        b"",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn connections_that_send_nothing_are_closed_and_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway("max_connections = 3\n").await;
    let health = format!("http://{}/healthz", gw.addr);
    // Three connections that never make a request take every slot: one that never finishes its
    // headers, an HTTP/2 one that opens no stream (and answers no ping), and one that sends
    // nothing at all. A fourth client waits.
    let mut settings = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut idle = Vec::new();
    for opening in [&b"POST /mcp HTTP/1.1\r\nHost: 127.0.0"[..], &settings, b""] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        idle.push(stream);
    }
    let client = Client::new();
    let waiting = tokio::spawn({
        let client = client.clone();
        let health = health.clone();
        async move { client.get(&health).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served beyond max_connections");
    // The gateway closes each of them (after 30 s without a request), which frees their slots.
    for (which, mut stream) in idle.into_iter().enumerate() {
        let mut rest = Vec::new();
        // Closed: the read ends (with the end of the stream, or a reset) instead of waiting on.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(90),
            stream.read_to_end(&mut rest),
        )
        .await
        .unwrap_or_else(|_| panic!("the gateway closes idle connection {which}"));
    }
    let status = tokio::time::timeout(std::time::Duration::from_secs(90), waiting)
        .await
        .expect("the waiting client is served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_are_capped_and_an_id_in_flight_is_not_taken_twice() {
    let gw = gateway("max_sessions = 2\nsession_idle_secs = 5\n").await;
    let http = Http::to(&gw);
    let first = http.initialize().await;
    let second = http.initialize().await;

    // A third session would be over the cap: 503, a JSON-RPC error, and when to come back.
    let (status, headers, body) = http.post(None, INITIALIZE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(error_code(&body), -32000, "{body}");
    assert_eq!(message(&body)["id"], 1, "{body}");
    // Sessions already open keep working.
    let (status, _, body) = http
        .post(
            Some(&first),
            json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A DELETE makes room; a DELETE of a session that is gone is 404.
    let delete = |session: &str| {
        http.client
            .delete(&http.url)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
    };
    assert_eq!(delete(&second).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        delete(&second).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let third = http.initialize().await;

    // A request that reuses the id of one still in flight is refused; the first gets its answer.
    let slow = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "demo__countdown", "arguments": {"seconds": 1}}})
    .to_string();
    let in_flight = tokio::spawn({
        let (http, third) = (http.clone(), third.clone());
        async move { http.post(Some(&third), slow).await.2 }
    });
    let reused = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a reused id in flight was never refused"
        );
        let (_, _, body) = http.post(Some(&third), reused.clone()).await;
        let answer = message(&body);
        // The countdown may not have reached the session yet: then the list is answered.
        if answer.get("error").is_some() {
            break answer;
        }
        assert!(!in_flight.is_finished(), "the id was never seen in flight");
    };
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert_eq!(refused["id"], 7, "{refused}");
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), in_flight)
        .await
        .expect("the first request with the id is answered")
        .unwrap();
    let answer = answered
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str::<Value>(data.trim()).unwrap_or(Value::Null))
        .find(|m| m.get("result").is_some())
        .unwrap_or_else(|| panic!("no result for the first request: {answered}"));
    assert_eq!(answer["id"], 7, "{answered}");
    // Once answered, the id is free again.
    let (_, _, body) = http.post(Some(&third), reused).await;
    assert!(message(&body).get("result").is_some(), "{body}");

    // A session that sits idle ends, and makes room.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let (status, _, body) = http
        .post(
            Some(&first),
            json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    http.initialize().await;
    http.initialize().await;
}

#[tokio::test]
async fn a_session_is_initialized_once_and_the_2026_07_28_era_refuses_what_it_removed() {
    let gw = gateway("").await;
    let http = Http::to(&gw);
    let session = http.initialize().await;

    // `initialize` again on a live session would start it over with another version.
    let (status, headers, body) = http.post(Some(&session), INITIALIZE.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), -32600, "{body}");
    assert!(!headers.contains_key("mcp-session-id"));

    // Requests of the 2026-07-28 era for methods it removed: 404 and -32601. An `initialize`
    // among them opens no session.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}});
    for (method, params) in [
        (
            "initialize",
            json!({"protocolVersion": "2026-07-28", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}, "_meta": meta}),
        ),
        ("logging/setLevel", json!({"level": "info", "_meta": meta})),
    ] {
        let response = http
            .client
            .post(&http.url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .body(
                json!({"jsonrpc": "2.0", "id": 21, "method": method, "params": params}).to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
        assert!(
            !response.headers().contains_key("mcp-session-id"),
            "{method}"
        );
        let body = response.text().await.unwrap();
        assert_eq!(error_code(&body), -32601, "{method}: {body}");
    }

    // The legacy session, and its `logging/setLevel`, go on.
    let (status, _, body) = http
        .post(
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 22, "method": "logging/setLevel",
                   "params": {"level": "info"}})
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(message(&body)["result"].is_object(), "{body}");
}
