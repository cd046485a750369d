//! Resumability at the HTTP front door (2025 era): a client whose SSE response stream breaks
//! mid-call reconnects with `Last-Event-ID` and still receives the rest, including the result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

const ACCEPT: &str = "application/json, text/event-stream";

/// Reads SSE events (id, data) from a response until `stop` says so.
async fn read_events(
    response: reqwest::Response,
    mut stop: impl FnMut(&str, &serde_json::Value) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            if data.is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&data).unwrap();
            let done = stop(&id, &value);
            events.push((id, value));
            if done {
                return events;
            }
        }
    }
    events
}

#[tokio::test]
async fn a_broken_stream_resumes_with_last_event_id() {
    let gw = common::start(&common::demo_server("demo")).await;
    let client = reqwest::Client::new();
    let post = |session: Option<&str>, body: serde_json::Value| {
        let mut request = client
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(body.to_string());
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send()
    };
    let response = post(
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "resume-test", "version": "1"}}}),
    )
    .await
    .unwrap();
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    post(
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await
    .unwrap();

    // Start a two-second call and break its stream after the first progress notification.
    let response = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "demo__countdown", "arguments": {"seconds": 2},
            "_meta": {"progressToken": "p"}}}),
    )
    .await
    .unwrap();
    let before = read_events(response, |_, v| v["method"] == "notifications/progress").await;
    let (last_id, _) = before.last().unwrap().clone();
    assert!(!last_id.is_empty(), "events carry ids");

    let resumed = client
        .get(gw.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert!(resumed.status().is_success(), "{}", resumed.status());
    let after = tokio::time::timeout(
        Duration::from_secs(20),
        read_events(resumed, |_, v| v["id"] == 2),
    )
    .await
    .expect("the resumed stream delivers the result");
    let (_, result) = after.last().unwrap();
    assert_eq!(
        result["result"]["content"][0]["text"], "liftoff",
        "{after:?}"
    );
    // Progress the client had not yet seen arrives on the resumed stream.
    assert!(
        after
            .iter()
            .any(|(_, v)| v["method"] == "notifications/progress" && v["params"]["progress"] == 1.0),
        "{after:?}"
    );
}
