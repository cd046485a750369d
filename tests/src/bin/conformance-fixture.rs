//! The conformance fixture: an MCP server with everything the official conformance suite's server scenarios call.
//!
//! It serves stdio (`conformance-fixture stdio`) or Streamable HTTP (`conformance-fixture http`). The suite (`@modelcontextprotocol/conformance`) ships its reference "everything server" only in its
//! source repository, so the gateway's end-to-end tests use this fixture instead: once directly over
//! HTTP, to prove the fixture itself conforms, and once behind the gateway (which reaches it over
//! stdio), to prove the gateway passes everything through. Names, texts and behaviours follow the
//! scenario descriptions of the suite, for both protocol eras: the session era (`2025-11-25`, with
//! server-to-client requests and `initialize`) and the stateless era (`2026-07-28`, with
//! `server/discover`, per-request `_meta` and input-required results instead of server-to-client
//! requests).

// Logging, sampling and roots are deprecated by SEP-2577 in rmcp, but the 2025-11-25 scenarios
// still exercise them, so this fixture has to keep using them.
#![allow(deprecated)]

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hasher, RandomState},
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt as _,
    model::*,
    service::{RequestContext, SubscriptionContext, SubscriptionSink},
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

// ───────────────────────────── command line ─────────────────────────────

#[derive(Debug, Parser)]
#[command(about = "MCP server implementing the conformance suite's server scenarios")]
struct Cli {
    #[command(subcommand)]
    transport: Transport,
}

#[derive(Debug, Subcommand)]
enum Transport {
    /// Serve one client over stdin/stdout (how the gateway runs its upstreams).
    Stdio,
    /// Serve Streamable HTTP at `http://127.0.0.1:<port>/mcp`.
    Http {
        /// Port to bind on 127.0.0.1; 0 picks a free one. The URL is printed on stdout's first line
        /// so a script can start the fixture without racing for a port.
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: in stdio mode stdout carries the MCP stream, in HTTP mode its first line
    // carries the URL.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    match Cli::parse().transport {
        Transport::Stdio => serve_stdio().await,
        Transport::Http { port } => serve_http(port).await,
    }
}

async fn serve_stdio() -> anyhow::Result<()> {
    let running = Fixture::new()
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the stdio server")?;
    running.waiting().await.context("serving stdio")?;
    Ok(())
}

async fn serve_http(port: u16) -> anyhow::Result<()> {
    // Loopback only: the fixture is a test server and must never be reachable from elsewhere.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;

    // Every session's handler derives from this one, so that `subscriptions/listen` streams opened
    // by one request see the list changes triggered by another, as the 2026-07-28 scenarios expect.
    let fixture = Fixture::new();
    // The defaults are what the suite tests: sessions for the 2025 era (the service serves
    // 2026-07-28 requests statelessly on the same endpoint whatever this says), loopback-only
    // Host validation for the DNS-rebinding scenario, and SSE priming events with a retry hint
    // for the SSE polling scenario.
    let config = StreamableHttpServerConfig::default();
    let service = StreamableHttpService::new(
        move || Ok(fixture.for_new_session()),
        LocalSessionManager::default().into(),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);

    println!("http://{addr}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            // Ctrl-C ends the fixture cleanly; the runner script's SIGTERM simply ends the process,
            // which is as good for a server that keeps nothing.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving http")?;
    Ok(())
}

// ───────────────────────────── fixture data ─────────────────────────────

/// A 1x1 red PNG, the image every image-bearing scenario expects.
const TEST_IMAGE_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file, for the audio content scenario.
const TEST_AUDIO_WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
/// How long clients may cache list and read results (SEP-2549 caching hints).
const CACHE_TTL_MS: u64 = 300_000;

/// Turns a `json!` object literal into the map type rmcp uses for schemas; anything else (which
/// would be a bug in this file) becomes an empty object rather than a panic.
fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

fn no_arguments() -> JsonObject {
    object(json!({ "type": "object", "properties": {} }))
}

fn text_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text.into())])
}

fn internal(error: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(error.to_string(), None)
}

/// Every tool the scenarios call, in one table: name, description, input schema.
fn tool_catalogue() -> Vec<Tool> {
    let plain: &[(&str, &str)] = &[
        ("test_simple_text", "Returns simple text content"),
        ("test_image_content", "Returns image content"),
        ("test_audio_content", "Returns audio content"),
        (
            "test_embedded_resource",
            "Returns embedded resource content",
        ),
        (
            "test_multiple_content_types",
            "Returns text, image and resource content together",
        ),
        (
            "test_tool_with_logging",
            "Sends logging notifications during execution",
        ),
        ("test_error_handling", "Always returns a tool error"),
        (
            "test_tool_with_progress",
            "Reports progress notifications when given a progress token",
        ),
        (
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose fields all have defaults (SEP-1034)",
        ),
        (
            "test_elicitation_sep1330_enums",
            "Elicits every enum schema variant (SEP-1330)",
        ),
        (
            "test_reconnection",
            "Answers after a short delay (SSE reconnection, SEP-1699)",
        ),
        (
            "test_trigger_tool_change",
            "Sends tools/list_changed to matching subscriptions",
        ),
        (
            "test_trigger_prompt_change",
            "Sends prompts/list_changed to matching subscriptions",
        ),
        (
            "test_missing_capability",
            "Requires the sampling client capability",
        ),
        (
            "test_streaming_elicitation",
            "Returns an input-required result with an elicitation request",
        ),
        (
            "test_logging_tool",
            "Logs only when the request asks for a log level",
        ),
        (
            "test_input_required_result_elicitation",
            "Requires an elicitation input (SEP-2322)",
        ),
        (
            "test_input_required_result_sampling",
            "Requires a sampling input (SEP-2322)",
        ),
        (
            "test_input_required_result_list_roots",
            "Requires a roots/list input (SEP-2322)",
        ),
        (
            "test_input_required_result_request_state",
            "Round-trips an integrity-protected requestState (SEP-2322)",
        ),
        (
            "test_input_required_result_multiple_inputs",
            "Requires elicitation, sampling and roots inputs in one round (SEP-2322)",
        ),
        (
            "test_input_required_result_multi_round",
            "Asks for input over several rounds (SEP-2322)",
        ),
        (
            "test_input_required_result_tampered_state",
            "Rejects a tampered requestState (SEP-2322)",
        ),
        (
            "test_input_required_result_capabilities",
            "Requests only inputs the client declared support for (SEP-2322)",
        ),
    ];
    let mut tools: Vec<Tool> = plain
        .iter()
        .map(|(name, description)| Tool::new(*name, *description, no_arguments()))
        .collect();
    tools.push(Tool::new(
        "test_sampling",
        "Requests LLM sampling from the client",
        object(json!({
            "type": "object",
            "properties": { "prompt": { "type": "string", "description": "The prompt to send" } },
            "required": ["prompt"]
        })),
    ));
    tools.push(Tool::new(
        "test_elicitation",
        "Requests user input from the client",
        object(json!({
            "type": "object",
            "properties": { "message": { "type": "string", "description": "The message to show" } },
            "required": ["message"]
        })),
    ));
    tools.push(custom_header_tool());
    // SEP-1613 and SEP-2106: the full 2020-12 vocabulary must survive tools/list untouched.
    tools.push(Tool::new(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features (SEP-1613)",
        object(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "$anchor": "addressDef",
                    "type": "object",
                    "properties": {
                        "street": { "type": "string" },
                        "city": { "type": "string" }
                    }
                }
            },
            "properties": {
                "name": { "type": "string" },
                "address": { "$ref": "#/$defs/address" },
                "contactMethod": { "type": "string", "enum": ["phone", "email"] },
                "phone": { "type": "string" },
                "email": { "type": "string" }
            },
            "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
            "if": {
                "properties": { "contactMethod": { "const": "phone" } },
                "required": ["contactMethod"]
            },
            "then": { "required": ["phone"] },
            "else": { "required": ["email"] },
            "additionalProperties": false
        })),
    ));
    tools
}

/// SEP-2243: a parameter marked `x-mcp-header` is mirrored into an `Mcp-Param-Value` HTTP header,
/// which the server must check against the body. rmcp does the checking when the handler's
/// `get_tool` returns the tool, so this tool is both listed and returned from there.
fn custom_header_tool() -> Tool {
    Tool::new(
        "test_custom_header",
        "Echoes a value that is also sent as a custom Mcp-Param header (SEP-2243)",
        object(json!({
            "type": "object",
            "properties": { "value": { "type": "string", "x-mcp-header": "Value" } },
            "required": ["value"]
        })),
    )
}

fn prompt_catalogue() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A simple prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt with required arguments"),
            Some(vec![
                PromptArgument::new("arg1")
                    .with_description("First test argument")
                    .with_required(true),
                PromptArgument::new("arg2")
                    .with_description("Second test argument")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt that includes an embedded resource"),
            Some(vec![
                PromptArgument::new("resourceUri")
                    .with_description("URI of the resource to embed")
                    .with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt that includes image content"),
            None,
        ),
        Prompt::new(
            "test_input_required_result_prompt",
            Some("A prompt that requires elicitation input (SEP-2322)"),
            None,
        ),
    ]
}

// ───────────────────────────── requestState sealing ─────────────────────────────

/// Seals and opens SEP-2322 `requestState` strings.
///
/// The client echoes `requestState` back, so it is untrusted input and the tampered-state scenario
/// checks that the server notices changes. A keyed SipHash (std's `RandomState` draws a random key
/// per process) is a short MAC that needs no extra crate; a fixture lives for one test run, so a
/// per-process key is enough, and 64 bits are plenty against a test harness.
#[derive(Clone)]
struct StateSealer {
    key: RandomState,
}

impl StateSealer {
    fn new() -> Self {
        Self {
            key: RandomState::new(),
        }
    }

    fn tag(&self, payload: &str) -> String {
        let mut hasher = self.key.build_hasher();
        hasher.write(payload.as_bytes());
        format!("{:016x}", hasher.finish())
    }

    fn seal(&self, state: &Value) -> String {
        let payload = state.to_string();
        format!("{}.{payload}", self.tag(&payload))
    }

    /// The sealed state, or an invalid-params error when the string was not sealed by this process.
    fn open(&self, sealed: &str) -> Result<Value, ErrorData> {
        let rejected =
            || ErrorData::invalid_params("requestState failed integrity verification", None);
        let (tag, payload) = sealed.split_once('.').ok_or_else(rejected)?;
        if tag != self.tag(payload) {
            return Err(rejected());
        }
        serde_json::from_str(payload).map_err(|_| rejected())
    }
}

// ───────────────────────────── input-required helpers ─────────────────────────────

fn elicitation_input(
    message: &str,
    properties: Value,
    required: Value,
) -> Result<InputRequest, ErrorData> {
    let schema: ElicitationSchema = serde_json::from_value(json!({
        "type": "object",
        "properties": properties,
        "required": required,
    }))
    .map_err(internal)?;
    Ok(InputRequest::Elicitation(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.into(),
            requested_schema: schema,
        },
    )))
}

fn sampling_input(prompt: &str, max_tokens: u32) -> InputRequest {
    InputRequest::CreateMessage(CreateMessageRequest::new(CreateMessageRequestParams::new(
        vec![SamplingMessage::user_text(prompt)],
        max_tokens,
    )))
}

fn roots_input() -> InputRequest {
    InputRequest::ListRoots(ListRootsRequest::default())
}

/// The client's answer for one input key, if it is an object (an elicit, sampling or roots result).
/// Anything else counts as missing, so the server asks again, as SEP-2322 recommends.
fn input_response<'a>(responses: Option<&'a InputResponses>, key: &str) -> Option<&'a JsonObject> {
    responses
        .and_then(|r| r.get(key))
        .and_then(Value::as_object)
}

/// `content.<field>` of an elicitation response, as text.
fn elicited_text<'a>(response: &'a JsonObject, field: &str) -> Option<&'a str> {
    response.get("content")?.get(field)?.as_str()
}

/// What asking the client for input gave: its answer, or the result that asks for it (2026-07-28).
enum Asked {
    Answer(Result<Value, ErrorData>),
    NeedInput(CallToolResponse),
}

fn input_required(requests: InputRequests, state: Option<String>) -> CallToolResponse {
    InputRequiredResult::new(Some(requests), state).into()
}

// ───────────────────────────── the server ─────────────────────────────

/// One handler per session (HTTP creates one per session, stdio has exactly one).
///
/// What a client sets for itself (log level, resource subscriptions) lives per session, so one
/// client's settings never show up in another's session; that is the leak a shared upstream
/// connection in the gateway must not introduce either. What the 2026-07-28 scenarios expect to
/// cross requests (list-change fan-out to open `subscriptions/listen` streams, and the key that
/// seals `requestState`) is shared by every session of the process.
#[derive(Clone)]
struct Fixture {
    /// URIs this session subscribed to with the 2025-era `resources/subscribe`.
    resource_subscriptions: Arc<Mutex<HashSet<String>>>,
    /// The minimum level of `notifications/message` this session asked for with `logging/setLevel`.
    log_level: Arc<Mutex<LoggingLevel>>,
    /// Open 2026-era `subscriptions/listen` streams, by a local key.
    listeners: Arc<Mutex<HashMap<u64, SubscriptionSink>>>,
    next_listener: Arc<AtomicU64>,
    sealer: StateSealer,
}

impl Fixture {
    fn new() -> Self {
        Self {
            resource_subscriptions: Arc::default(),
            log_level: Arc::new(Mutex::new(LoggingLevel::Debug)),
            listeners: Arc::default(),
            next_listener: Arc::new(AtomicU64::new(0)),
            sealer: StateSealer::new(),
        }
    }

    /// A handler for a new session: fresh per-session settings, shared process-wide state.
    fn for_new_session(&self) -> Self {
        Self {
            resource_subscriptions: Arc::default(),
            log_level: Arc::new(Mutex::new(LoggingLevel::Debug)),
            ..self.clone()
        }
    }

    async fn log(&self, cx: &RequestContext<RoleServer>, message: &str) {
        // `LoggingLevel` lists levels from least to most severe, so declaration order ranks them.
        if (LoggingLevel::Info as u8) < (*self.log_level.lock().await as u8) {
            return;
        }
        // A failed notification only means the client went away; the tool result still matters.
        let _ = cx
            .peer
            .notify_logging_message(
                LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(message))
                    .with_logger("conformance-fixture"),
            )
            .await;
    }

    async fn notify_listeners(&self, prompts: bool) {
        let sinks: Vec<SubscriptionSink> = self.listeners.lock().await.values().cloned().collect();
        for sink in sinks {
            // A sink whose filter did not ask for this kind of change refuses it; that is the point.
            let _ = if prompts {
                sink.notify_prompt_list_changed().await
            } else {
                sink.notify_tool_list_changed().await
            };
        }
    }

    /// Asks the client for input the way its protocol era does it: a server-to-client request
    /// inside the call (2025 era), or an input-required result that the client answers by
    /// retrying the call with `inputResponses` (2026-07-28), as a real dual-era server would.
    async fn ask(
        &self,
        cx: &RequestContext<RoleServer>,
        responses: Option<&InputResponses>,
        request: InputRequest,
    ) -> Result<Asked, ErrorData> {
        const KEY: &str = "input";
        let modern = cx
            .protocol_version()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        if modern {
            return Ok(match responses.and_then(|r| r.get(KEY)) {
                Some(answer) => Asked::Answer(Ok(answer.clone())),
                None => {
                    let mut requests = InputRequests::new();
                    requests.insert(KEY.into(), request);
                    Asked::NeedInput(input_required(requests, None))
                }
            });
        }
        let request = match request {
            InputRequest::CreateMessage(r) => ServerRequest::CreateMessageRequest(r),
            InputRequest::Elicitation(r) => ServerRequest::ElicitRequest(r),
            InputRequest::ListRoots(r) => ServerRequest::ListRootsRequest(r),
            _ => return Err(internal("unknown input request kind")),
        };
        Ok(Asked::Answer(match cx.peer.send_request(request).await {
            Ok(ClientResult::CreateMessageResult(result)) => {
                serde_json::to_value(result).map_err(internal)
            }
            Ok(ClientResult::ElicitResult(result)) => {
                serde_json::to_value(result).map_err(internal)
            }
            Ok(ClientResult::ListRootsResult(result)) => {
                serde_json::to_value(result).map_err(internal)
            }
            Ok(other) => Err(internal(format!("unexpected answer: {other:?}"))),
            Err(error) => Err(internal(error)),
        }))
    }

    /// Asks the client to fill a form and describes its answer.
    async fn elicit(
        &self,
        cx: &RequestContext<RoleServer>,
        responses: Option<&InputResponses>,
        message: &str,
        schema: Value,
        label: &str,
    ) -> Result<Result<CallToolResult, CallToolResponse>, ErrorData> {
        let params: ElicitRequestParams = serde_json::from_value(json!({
            "mode": "form",
            "message": message,
            "requestedSchema": schema,
        }))
        .map_err(internal)?;
        // rmcp's typed `create_elicitation` sits behind its `elicitation` feature; the raw request
        // needs no extra feature and carries the same message.
        let request = InputRequest::Elicitation(ElicitRequest::new(params));
        let answer = match self.ask(cx, responses, request).await? {
            Asked::Answer(answer) => answer,
            Asked::NeedInput(response) => return Ok(Err(response)),
        };
        Ok(Ok(match answer {
            Ok(result) => {
                let action = result.get("action").cloned().unwrap_or(Value::Null);
                let content = result.get("content").cloned().unwrap_or_else(|| json!({}));
                text_result(format!(
                    "{label}: action={}, content={content}",
                    action.as_str().unwrap_or("unknown")
                ))
            }
            Err(error) => CallToolResult::error(vec![ContentBlock::text(format!(
                "Elicitation not supported or error: {}",
                error.message
            ))]),
        }))
    }

    async fn call_plain_tool(
        &self,
        name: &str,
        args: JsonObject,
        responses: Option<&InputResponses>,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = match name {
            "test_simple_text" => text_result("This is a simple text response for testing."),
            "test_image_content" => {
                CallToolResult::success(vec![ContentBlock::image(TEST_IMAGE_PNG, "image/png")])
            }
            "test_audio_content" => CallToolResult::success(vec![ContentBlock::Audio(
                AudioContent::new(TEST_AUDIO_WAV, "audio/wav"),
            )]),
            "test_embedded_resource" => CallToolResult::success(vec![ContentBlock::resource(
                ResourceContents::TextResourceContents {
                    uri: "test://embedded-resource".into(),
                    mime_type: Some("text/plain".into()),
                    text: "This is an embedded resource content.".into(),
                    meta: None,
                },
            )]),
            "test_multiple_content_types" => CallToolResult::success(vec![
                ContentBlock::text("Multiple content types test:"),
                ContentBlock::image(TEST_IMAGE_PNG, "image/png"),
                ContentBlock::resource(ResourceContents::TextResourceContents {
                    uri: "test://mixed-content-resource".into(),
                    mime_type: Some("application/json".into()),
                    text: json!({ "test": "data", "value": 123 }).to_string(),
                    meta: None,
                }),
            ]),
            "test_tool_with_logging" => {
                // The scenario counts the notifications that arrive before the result; the pauses
                // make them distinct events on the stream, as the reference server does.
                for message in [
                    "Tool execution started",
                    "Tool processing data",
                    "Tool execution completed",
                ] {
                    self.log(cx, message).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                text_result("Tool with logging executed successfully")
            }
            "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
                "This tool intentionally returns an error for testing",
            )]),
            "test_tool_with_progress" => {
                let token = cx.meta.get_progress_token();
                for progress in [0.0, 50.0, 100.0] {
                    if let Some(token) = &token {
                        let _ = cx
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), progress)
                                    .with_total(100.0)
                                    .with_message(format!("Completed step {progress} of 100")),
                            )
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                text_result("Progress test completed")
            }
            "test_sampling" => {
                let prompt = args
                    .get("prompt")
                    .and_then(Value::as_str)
                    .unwrap_or("Hello");
                let answer = match self.ask(cx, responses, sampling_input(prompt, 100)).await? {
                    Asked::Answer(answer) => answer,
                    Asked::NeedInput(response) => return Ok(response),
                };
                match answer {
                    Ok(result) => {
                        let text = result
                            .get("content")
                            .and_then(|c| c.get("text"))
                            .and_then(Value::as_str)
                            .unwrap_or("No response")
                            .to_owned();
                        text_result(format!("LLM response: {text}"))
                    }
                    Err(error) => CallToolResult::error(vec![ContentBlock::text(format!(
                        "Sampling not supported or error: {error}"
                    ))]),
                }
            }
            "test_elicitation" => {
                let message = args
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("Please provide your information");
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "response": { "type": "string", "description": "User's response" }
                    },
                    "required": ["response"]
                });
                match self
                    .elicit(cx, responses, message, schema, "User response")
                    .await?
                {
                    Ok(result) => result,
                    Err(response) => return Ok(response),
                }
            }
            "test_elicitation_sep1034_defaults" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "name": { "type": "string", "description": "User name", "default": "John Doe" },
                        "age": { "type": "integer", "description": "User age", "default": 30 },
                        "score": { "type": "number", "description": "User score", "default": 95.5 },
                        "status": {
                            "type": "string",
                            "description": "User status",
                            "enum": ["active", "inactive", "pending"],
                            "default": "active"
                        },
                        "verified": { "type": "boolean", "description": "Verification status", "default": true }
                    },
                    "required": []
                });
                match self
                    .elicit(
                        cx,
                        responses,
                        "Please review and update the form fields with defaults",
                        schema,
                        "Elicitation completed",
                    )
                    .await?
                {
                    Ok(result) => result,
                    Err(response) => return Ok(response),
                }
            }
            "test_elicitation_sep1330_enums" => {
                let schema = json!({
                    "type": "object",
                    "properties": {
                        "untitledSingle": {
                            "type": "string",
                            "description": "Select one option",
                            "enum": ["option1", "option2", "option3"]
                        },
                        "titledSingle": {
                            "type": "string",
                            "description": "Select one option with titles",
                            "oneOf": [
                                { "const": "value1", "title": "First Option" },
                                { "const": "value2", "title": "Second Option" },
                                { "const": "value3", "title": "Third Option" }
                            ]
                        },
                        "legacyEnum": {
                            "type": "string",
                            "description": "Select one option (legacy)",
                            "enum": ["opt1", "opt2", "opt3"],
                            "enumNames": ["Option One", "Option Two", "Option Three"]
                        },
                        "untitledMulti": {
                            "type": "array",
                            "description": "Select multiple options",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
                        },
                        "titledMulti": {
                            "type": "array",
                            "description": "Select multiple options with titles",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": {
                                "anyOf": [
                                    { "const": "value1", "title": "First Choice" },
                                    { "const": "value2", "title": "Second Choice" },
                                    { "const": "value3", "title": "Third Choice" }
                                ]
                            }
                        }
                    },
                    "required": []
                });
                match self
                    .elicit(
                        cx,
                        responses,
                        "Please select options from the enum fields",
                        schema,
                        "Elicitation completed",
                    )
                    .await?
                {
                    Ok(result) => result,
                    Err(response) => return Ok(response),
                }
            }
            "json_schema_2020_12_tool" => text_result(format!(
                "JSON Schema 2020-12 tool called with: {}",
                Value::Object(args)
            )),
            "test_reconnection" => {
                // The reference server closes the POST's SSE stream here so that the client must
                // resume with Last-Event-ID. rmcp 3.11 cannot do that from a handler: closing a
                // request's stream (`LocalSessionHandle::close_sse_stream`) takes the session
                // worker's internal HTTP request id, which handlers never see. So the result
                // arrives on the open stream; the suite then checks the priming event and the
                // retry hint and skips its resume check, which needs no baseline entry.
                tokio::time::sleep(Duration::from_millis(100)).await;
                text_result("Reconnection test completed successfully.")
            }
            "test_trigger_tool_change" => {
                self.notify_listeners(false).await;
                text_result("Tool list change triggered")
            }
            "test_trigger_prompt_change" => {
                self.notify_listeners(true).await;
                text_result("Prompt list change triggered")
            }
            "test_custom_header" => {
                let value = args
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ErrorData::invalid_params("value must be a string", None))?;
                text_result(value)
            }
            "test_missing_capability" => {
                let capabilities = cx.meta.client_capabilities().unwrap_or_default();
                if capabilities.sampling.is_none() {
                    return Err(ErrorData::missing_required_client_capability(
                        ClientCapabilities::builder().enable_sampling().build(),
                    ));
                }
                text_result("Success")
            }
            "test_streaming_elicitation" => {
                let mut requests = InputRequests::new();
                requests.insert(
                    "streaming_elicitation".into(),
                    elicitation_input(
                        "Provide a value",
                        json!({ "value": { "type": "string" } }),
                        json!(["value"]),
                    )?,
                );
                return Ok(input_required(requests, None));
            }
            "test_logging_tool" => {
                // 2026-07-28 has no logging/setLevel: a request opts into logs through its
                // `_meta` log level, and without one the server must stay quiet.
                if let Some(level) = cx.meta.log_level() {
                    let _ = cx
                        .peer
                        .notify_logging_message(
                            LoggingMessageNotificationParam::new(
                                level,
                                json!("logLevel was requested"),
                            )
                            .with_logger("conformance-fixture"),
                        )
                        .await;
                }
                text_result("Logging evaluated")
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("Unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }

    /// SEP-2322 tools: each answers with an input-required result until the client retries with
    /// the expected `inputResponses` (and, where used, the echoed `requestState`).
    fn call_input_required_tool(
        &self,
        request: &CallToolRequestParams,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let responses = request.input_responses.as_ref();
        let state = request.request_state.as_deref();
        match request.name.as_ref() {
            "test_input_required_result_elicitation" => {
                match input_response(responses, "user_name") {
                    Some(answer) => {
                        let name = elicited_text(answer, "name").unwrap_or("friend");
                        Ok(text_result(format!("Hello, {name}!")).into())
                    }
                    None => {
                        let mut requests = InputRequests::new();
                        requests.insert(
                            "user_name".into(),
                            elicitation_input(
                                "What is your name?",
                                json!({ "name": { "type": "string" } }),
                                json!(["name"]),
                            )?,
                        );
                        Ok(input_required(requests, None))
                    }
                }
            }
            "test_input_required_result_sampling" => {
                match input_response(responses, "sample_request") {
                    Some(answer) => {
                        let text = answer
                            .get("content")
                            .and_then(|c| c.get("text"))
                            .and_then(Value::as_str)
                            .unwrap_or("no response");
                        Ok(text_result(format!("Sampling result: {text}")).into())
                    }
                    None => {
                        let mut requests = InputRequests::new();
                        requests.insert(
                            "sample_request".into(),
                            sampling_input("What is the capital of France?", 100),
                        );
                        Ok(input_required(requests, None))
                    }
                }
            }
            "test_input_required_result_list_roots" => {
                match input_response(responses, "roots_request") {
                    Some(answer) => {
                        let count = answer
                            .get("roots")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        Ok(text_result(format!("Found {count} root(s)")).into())
                    }
                    None => {
                        let mut requests = InputRequests::new();
                        requests.insert("roots_request".into(), roots_input());
                        Ok(input_required(requests, None))
                    }
                }
            }
            "test_input_required_result_request_state"
            | "test_input_required_result_tampered_state" => {
                // A retry: the echoed state is untrusted and must verify before it is used.
                if let Some(sealed) = state {
                    self.sealer.open(sealed)?;
                    if input_response(responses, "confirm").is_some() {
                        return Ok(text_result("state-ok: requestState validated").into());
                    }
                }
                let mut requests = InputRequests::new();
                requests.insert(
                    "confirm".into(),
                    elicitation_input(
                        "Please confirm",
                        json!({ "ok": { "type": "boolean" } }),
                        json!(["ok"]),
                    )?,
                );
                let sealed = self.sealer.seal(&json!({ "stage": "confirm" }));
                Ok(input_required(requests, Some(sealed)))
            }
            "test_input_required_result_multiple_inputs" => {
                if let Some(sealed) = state {
                    self.sealer.open(sealed)?;
                    let name = input_response(responses, "user_name");
                    let greeting = input_response(responses, "greeting");
                    let roots = input_response(responses, "client_roots");
                    if let (Some(name), Some(greeting), Some(roots)) = (name, greeting, roots) {
                        let name = elicited_text(name, "name").unwrap_or("unknown");
                        let greeting = greeting
                            .get("content")
                            .and_then(|c| c.get("text"))
                            .and_then(Value::as_str)
                            .unwrap_or("Hello there!");
                        let roots = roots
                            .get("roots")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        return Ok(text_result(format!(
                            "Name: {name}; Greeting: {greeting}; Roots: {roots}"
                        ))
                        .into());
                    }
                }
                let mut requests = InputRequests::new();
                requests.insert(
                    "user_name".into(),
                    elicitation_input(
                        "What is your name?",
                        json!({ "name": { "type": "string" } }),
                        json!(["name"]),
                    )?,
                );
                requests.insert("greeting".into(), sampling_input("Generate a greeting", 50));
                requests.insert("client_roots".into(), roots_input());
                let sealed = self.sealer.seal(&json!({ "stage": "gather" }));
                Ok(input_required(requests, Some(sealed)))
            }
            "test_input_required_result_multi_round" => {
                let progress = match state {
                    None => json!({ "round": 0 }),
                    Some(sealed) => self.sealer.open(sealed)?,
                };
                let round = progress.get("round").and_then(Value::as_i64).unwrap_or(0);
                let mut requests = InputRequests::new();
                match (
                    round,
                    input_response(responses, "step1"),
                    input_response(responses, "step2"),
                ) {
                    (1, Some(answer), _) => {
                        let name = elicited_text(answer, "name").unwrap_or("friend");
                        requests.insert(
                            "step2".into(),
                            elicitation_input(
                                "Step 2: What is your favorite color?",
                                json!({ "color": { "type": "string" } }),
                                json!(["color"]),
                            )?,
                        );
                        let sealed = self.sealer.seal(&json!({ "round": 2, "name": name }));
                        Ok(input_required(requests, Some(sealed)))
                    }
                    (2, _, Some(answer)) => {
                        let name = progress
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("friend");
                        let color = elicited_text(answer, "color").unwrap_or("unknown");
                        Ok(text_result(format!(
                            "Multi-round complete for {name} who likes {color}"
                        ))
                        .into())
                    }
                    // The first call, or a retry without the answer it needs: start over.
                    _ => {
                        requests.insert(
                            "step1".into(),
                            elicitation_input(
                                "Step 1: What is your name?",
                                json!({ "name": { "type": "string" } }),
                                json!(["name"]),
                            )?,
                        );
                        let sealed = self.sealer.seal(&json!({ "round": 1 }));
                        Ok(input_required(requests, Some(sealed)))
                    }
                }
            }
            "test_input_required_result_capabilities" => {
                if responses.is_some_and(|r| !r.is_empty()) {
                    let keys: Vec<&str> = responses
                        .into_iter()
                        .flat_map(|r| r.keys())
                        .map(String::as_str)
                        .collect();
                    return Ok(text_result(format!(
                        "capabilities-ok: received {}",
                        keys.join(",")
                    ))
                    .into());
                }
                // Only ask for what the request's `_meta` says the client can answer.
                let capabilities = cx.meta.client_capabilities().unwrap_or_default();
                let mut requests = InputRequests::new();
                if capabilities.elicitation.is_some() {
                    requests.insert(
                        "elicit_input".into(),
                        elicitation_input(
                            "Elicitation input",
                            json!({ "value": { "type": "string" } }),
                            json!(["value"]),
                        )?,
                    );
                }
                if capabilities.sampling.is_some() {
                    requests.insert("sample_input".into(), sampling_input("Sample request", 50));
                }
                if requests.is_empty() {
                    return Ok(text_result("No supported capabilities declared").into());
                }
                let sealed = self.sealer.seal(&json!({ "stage": "capabilities" }));
                Ok(input_required(requests, Some(sealed)))
            }
            other => Err(ErrorData::invalid_params(
                format!("Unknown tool: {other}"),
                None,
            )),
        }
    }
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_resources_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_logging()
                .enable_completions()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcp-gateway-conformance-fixture",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("Conformance fixture for the MCP gateway's end-to-end tests")
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // Only the header-carrying tool is returned: rmcp then validates its `Mcp-Param-*`
        // headers. The other tools keep rmcp's default of no argument validation, because some
        // scenarios send arguments on purpose that a schema check would refuse first.
        (name == "test_custom_header").then(custom_header_tool)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let key = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .lock()
            .await
            .insert(key, context.sink().clone());
        context.cancelled().await;
        self.listeners.lock().await.remove(&key);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult {
            tools: tool_catalogue(),
            ..Default::default()
        }
        .with_ttl_ms(CACHE_TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name.starts_with("test_input_required_result_") {
            return self.call_input_required_tool(&request, &cx);
        }
        let args = request.arguments.clone().unwrap_or_default();
        self.call_plain_tool(&request.name, args, request.input_responses.as_ref(), &cx)
            .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult {
            resources: vec![
                Resource::new("test://static-text", "static-text")
                    .with_title("Static Text Resource")
                    .with_description("A static text resource for testing")
                    .with_mime_type("text/plain"),
                Resource::new("test://static-binary", "static-binary")
                    .with_title("Static Binary Resource")
                    .with_description("A static binary resource (image) for testing")
                    .with_mime_type("image/png"),
                Resource::new("test://watched-resource", "watched-resource")
                    .with_title("Watched Resource")
                    .with_description("A resource clients may subscribe to")
                    .with_mime_type("text/plain"),
            ],
            ..Default::default()
        }
        .with_ttl_ms(CACHE_TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult {
            resource_templates: vec![
                ResourceTemplate::new("test://template/{id}/data", "template")
                    .with_title("Resource Template")
                    .with_description("A resource template with parameter substitution")
                    .with_mime_type("application/json"),
            ],
            ..Default::default()
        }
        .with_ttl_ms(CACHE_TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let text = |mime: &str, text: String| ResourceContents::TextResourceContents {
            uri: uri.into(),
            mime_type: Some(mime.into()),
            text,
            meta: None,
        };
        let contents = match uri {
            "test://static-text" => text(
                "text/plain",
                "This is the content of the static text resource.".into(),
            ),
            "test://watched-resource" => text("text/plain", "Watched resource content".into()),
            "test://static-binary" => ResourceContents::BlobResourceContents {
                uri: uri.into(),
                mime_type: Some("image/png".into()),
                blob: TEST_IMAGE_PNG.into(),
                meta: None,
            },
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
            {
                Some(id) if !id.is_empty() && !id.contains('/') => text(
                    "application/json",
                    json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") })
                        .to_string(),
                ),
                // SEP-2164: an unknown resource is an error naming the URI; rmcp turns the code into
                // -32602 for 2026-07-28 peers and keeps -32002 for older ones.
                _ => {
                    return Err(ErrorData::resource_not_found(
                        format!("Resource not found: {uri}"),
                        Some(json!({ "uri": uri })),
                    ));
                }
            },
        };
        Ok(ReadResourceResult::new(vec![contents])
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CacheScope::Private)
            .into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.resource_subscriptions
            .lock()
            .await
            .insert(request.uri.to_string());
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.resource_subscriptions
            .lock()
            .await
            .remove(request.uri.as_str());
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult {
            prompts: prompt_catalogue(),
            ..Default::default()
        }
        .with_ttl_ms(CACHE_TTL_MS)
        .with_cache_scope(CacheScope::Public))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        let arg = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let messages = match request.name.as_str() {
            "test_simple_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "This is a simple prompt for testing.",
            )],
            "test_prompt_with_arguments" => vec![PromptMessage::new_text(
                Role::User,
                format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    arg("arg1"),
                    arg("arg2")
                ),
            )],
            "test_prompt_with_embedded_resource" => {
                let uri = Some(arg("resourceUri"))
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| "test://static-text".into());
                vec![
                    PromptMessage::new_resource(
                        Role::User,
                        uri,
                        Some("text/plain".into()),
                        Some("Embedded resource content for testing.".into()),
                        None,
                        None,
                        None,
                    ),
                    PromptMessage::new_text(
                        Role::User,
                        "Please process the embedded resource above.",
                    ),
                ]
            }
            "test_prompt_with_image" => vec![
                PromptMessage::new(
                    Role::User,
                    ContentBlock::Image(ImageContent::new(TEST_IMAGE_PNG, "image/png")),
                ),
                PromptMessage::new_text(Role::User, "Please analyze the image above."),
            ],
            // SEP-2322 on a request that is not tools/call.
            "test_input_required_result_prompt" => {
                match input_response(request.input_responses.as_ref(), "user_context") {
                    Some(answer) => {
                        let context = elicited_text(answer, "context").unwrap_or("unknown");
                        vec![PromptMessage::new_text(
                            Role::User,
                            format!("Prompt with context: {context}"),
                        )]
                    }
                    None => {
                        let mut requests = InputRequests::new();
                        requests.insert(
                            "user_context".into(),
                            elicitation_input(
                                "What context should the prompt use?",
                                json!({ "context": { "type": "string" } }),
                                json!(["context"]),
                            )?,
                        );
                        return Ok(InputRequiredResult::from_input_requests(requests).into());
                    }
                }
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("Unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        // Fixed candidates filtered by what the client typed so far: the scenario checks only the
        // result's shape, and a prefix filter is the least behaviour that a proxy test can tell
        // apart from an empty answer.
        let values = match &request.r#ref {
            Reference::Prompt(_) => ["value1", "value2", "value3"]
                .iter()
                .filter(|v| v.starts_with(request.argument.value.as_str()))
                .map(|v| (*v).to_string())
                .collect(),
            Reference::Resource(_) => ["1", "2", "3"]
                .iter()
                .filter(|v| v.starts_with(request.argument.value.as_str()))
                .map(|v| (*v).to_string())
                .collect(),
            _ => Vec::new(),
        };
        Ok(CompleteResult::new(
            CompletionInfo::new(values).map_err(internal)?,
        ))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().await = request.level;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_state_opens_and_tampered_state_does_not() {
        let sealer = StateSealer::new();
        let sealed = sealer.seal(&json!({ "round": 1 }));
        assert_eq!(sealer.open(&sealed).ok(), Some(json!({ "round": 1 })));
        assert!(sealer.open(&format!("{sealed}-TAMPERED")).is_err());
        assert!(
            StateSealer::new().open(&sealed).is_err(),
            "another key must not verify"
        );
    }

    #[test]
    fn every_tool_name_is_unique() {
        let tools = tool_catalogue();
        let names: HashSet<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(names.len(), tools.len());
    }
}
