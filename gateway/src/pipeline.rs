//! Dispatch: the last steps of the path every relayed request takes, in the order of the design:
//!
//! 1. authenticate: the HTTP front door (`front::http`) or the stdio config gives an identity
//! 2. resolve the client-visible name to an upstream and its definition (`registry`)
//! 3. verify: only verified or pinned tools resolve (`upstream::Upstream::evaluate`)
//! 4. policy, 5. rate limit, 6. validate arguments (`access::Access`)
//! 7. dispatch to the upstream (here), within the server's `max_concurrent`, with the call
//!    timeout and the client's cancellation enforced, relaying progress and server-to-client
//!    requests back into this client request
//! 8. audit (the audit issue; today one structured log event per outcome)

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rmcp::{
    ErrorData as McpError, Peer, RoleClient, RoleServer,
    model::{
        CancelledNotificationParam, ClientNotification, ClientRequest, ClientResult, InputRequest,
        InputRequests, InputRequiredResult, InputResponses, Notification, ProtocolVersion,
        RequestId, RequestMetaObject, ServerRequest, ServerResult,
    },
    service::{PeerRequestOptions, RequestContext, ServiceError},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    session::{BackMessage, InflightGuard, SessionId, Sessions},
    upstream::{Upstream, UpstreamError},
};

/// How many upstream messages may wait for delivery into one client request.
const BACK_CHANNEL_CAPACITY: usize = 64;

/// Prefix of the `requestState` the gateway gives a 2026-07-28 client when a legacy-era upstream
/// asks for input in the middle of a call (see [`Suspended`]).
pub const GATEWAY_STATE_PREFIX: &str = "mcp-gateway/suspended/";

/// The key of the one input request in an input-required result made by the gateway.
const INPUT_KEY: &str = "input";

/// Sends `request` to `upstream` on behalf of the client request `ctx`, and relays everything the
/// upstream sends for it until the answer arrives, the call times out, or the client cancels.
///
/// A legacy-era upstream may ask the client for input mid-call (sampling, elicitation, roots). A
/// legacy-era client is asked inside its own request. A 2026-07-28 client cannot be asked that
/// way, so the gateway answers it with an input-required result and keeps the upstream call
/// waiting until the client retries with the answer (see [`resume`]).
pub async fn dispatch(
    sessions: &Arc<Sessions>,
    session: SessionId,
    upstream: &Upstream,
    request: ClientRequest,
    ctx: &RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    dispatch_to(sessions, session, upstream, None, request, ctx).await
}

/// As [`dispatch`], to `peer` when one is given (a per-call sandbox's connection) instead of
/// the upstream's own.
pub async fn dispatch_to(
    sessions: &Arc<Sessions>,
    session: SessionId,
    upstream: &Upstream,
    peer: Option<rmcp::Peer<rmcp::RoleClient>>,
    request: ClientRequest,
    ctx: &RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let method = request.method().to_owned();
    let _request = upstream.begin_request();
    if peer.is_none() {
        // A server stopped for being idle starts again for this request.
        upstream.resume(upstream.spec.call_timeout).await;
    }
    let result = match Call::start(sessions, session, upstream, peer, request, ctx).await {
        Ok(call) => drive(sessions, call, ctx).await,
        Err(e) => Err(e),
    };
    audit(&upstream.name, &method, &result);
    result
}

/// Continues a call that was suspended for input, with the client's answer in `responses`.
pub async fn resume(
    sessions: &Arc<Sessions>,
    token: &str,
    responses: Option<&InputResponses>,
    ctx: &RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let Some(suspended) = sessions.take_suspended(token) else {
        return Err(McpError::invalid_params(
            "requestState names no call waiting for input (it expired, or was already resumed)",
            None,
        ));
    };
    let Suspended {
        call,
        request,
        reply,
    } = suspended;
    let Some(answer) = responses.and_then(|r| r.get(INPUT_KEY)) else {
        // SEP-2322: a retry without the answer is asked again.
        return Ok(suspend(sessions, call, request, reply));
    };
    let _ = reply.send(client_result(&request, answer.clone()));
    let server = call.server.clone();
    let method = call.method.clone();
    let result = drive(sessions, call, ctx).await;
    audit(&server, &method, &result);
    result
}

fn audit(server: &str, method: &str, result: &Result<ServerResult, McpError>) {
    let outcome = match result {
        Ok(ServerResult::InputRequiredResult(_)) => "input required".to_owned(),
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error {}", e.code.0),
    };
    tracing::info!(target: "audit", server, method, outcome, "relayed");
}

/// Runs a call to its end, asking a legacy client for input inline and suspending for a modern one.
async fn drive(
    sessions: &Arc<Sessions>,
    mut call: Call,
    ctx: &RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let modern_client = ctx
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
    loop {
        match call.run(ctx).await {
            Step::Done(result) => return result,
            // Only what the client declared it can answer is asked, in either era; anything
            // else is refused to the upstream at once, as the client itself would refuse it. A
            // client that never declared sampling need not answer it, and the call would wait
            // for its deadline.
            Step::NeedsInput(request, reply) if !client_can_answer(ctx, &request) => {
                let _ = reply.send(Err(McpError::new(
                    rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                    "the client does not support this request",
                    None,
                )));
            }
            Step::NeedsInput(request, reply) if modern_client => {
                return Ok(suspend(sessions, call, request, reply));
            }
            Step::NeedsInput(request, reply) => {
                // The client's answer is awaited here, inside the client's request, so the HTTP
                // front door sends the request on this request's own stream.
                let answer = tokio::select! {
                    answer = ctx.peer.send_request(request) => answer.map_err(|e| match e {
                        ServiceError::McpError(e) => e,
                        other => McpError::internal_error(format!("the client did not answer: {other}"), None),
                    }),
                    _ = ctx.ct.cancelled() => Err(McpError::internal_error("the client cancelled the request", None)),
                    _ = tokio::time::sleep_until(call.deadline) => Err(McpError::internal_error("the call timed out", None)),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

/// A call parked until a 2026-07-28 client answers the upstream's request for input.
pub struct Suspended {
    call: Call,
    request: ServerRequest,
    reply: oneshot::Sender<Result<ClientResult, McpError>>,
}

/// Parks `call` and returns the input-required result that asks the client for the input.
/// A call whose client never comes back is cancelled upstream when its deadline passes.
fn suspend(
    sessions: &Arc<Sessions>,
    call: Call,
    request: ServerRequest,
    reply: oneshot::Sender<Result<ClientResult, McpError>>,
) -> ServerResult {
    let token = format!("{GATEWAY_STATE_PREFIX}{}", uuid::Uuid::new_v4());
    let mut requests = InputRequests::new();
    if let Some(input) = input_request(&request) {
        requests.insert(INPUT_KEY.to_owned(), input);
    }
    let deadline = call.deadline;
    sessions.put_suspended(
        token.clone(),
        Suspended {
            call,
            request,
            reply,
        },
    );
    let expiring = sessions.clone();
    let expired = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        if let Some(suspended) = expiring.take_suspended(&expired) {
            suspended
                .call
                .cancel_upstream("the client did not provide the input in time")
                .await;
        }
    });
    ServerResult::InputRequiredResult(InputRequiredResult::new(Some(requests), Some(token)))
}

/// Whether the client declared the capability a server-to-client request needs.
fn client_can_answer(ctx: &RequestContext<RoleServer>, request: &ServerRequest) -> bool {
    let Some(capabilities) = ctx.client_capabilities() else {
        return false;
    };
    match request {
        ServerRequest::CreateMessageRequest(_) => capabilities.sampling.is_some(),
        ServerRequest::ElicitRequest(_) => capabilities.elicitation.is_some(),
        ServerRequest::ListRootsRequest(_) => capabilities.roots.is_some(),
        _ => false,
    }
}

/// The input-required form of a server-to-client request, for the kinds that have one.
fn input_request(request: &ServerRequest) -> Option<InputRequest> {
    match request {
        ServerRequest::CreateMessageRequest(r) => Some(InputRequest::CreateMessage(r.clone())),
        ServerRequest::ElicitRequest(r) => Some(InputRequest::Elicitation(r.clone())),
        ServerRequest::ListRootsRequest(r) => Some(InputRequest::ListRoots(r.clone())),
        _ => None,
    }
}

/// A client's input response as the result of the server-to-client request it answers.
fn client_result(
    request: &ServerRequest,
    answer: serde_json::Value,
) -> Result<ClientResult, McpError> {
    let invalid = |e: serde_json::Error| {
        McpError::invalid_params(
            format!("the input response does not fit the request: {e}"),
            None,
        )
    };
    match request {
        ServerRequest::CreateMessageRequest(_) => serde_json::from_value(answer)
            .map(|r| ClientResult::CreateMessageResult(Box::new(r)))
            .map_err(invalid),
        ServerRequest::ElicitRequest(_) => serde_json::from_value(answer)
            .map(ClientResult::ElicitResult)
            .map_err(invalid),
        ServerRequest::ListRootsRequest(_) => serde_json::from_value(answer)
            .map(ClientResult::ListRootsResult)
            .map_err(invalid),
        _ => Err(McpError::invalid_params("no input was requested", None)),
    }
}

/// What [`Call::run`] stopped for.
enum Step {
    Done(Result<ServerResult, McpError>),
    /// The upstream asked the client for something (a legacy-era server-to-client request).
    NeedsInput(
        ServerRequest,
        oneshot::Sender<Result<ClientResult, McpError>>,
    ),
}

/// One request relayed to an upstream, from sending it to its answer.
struct Call {
    server: Arc<str>,
    method: String,
    peer: Peer<RoleClient>,
    request_id: RequestId,
    response: oneshot::Receiver<Result<ServerResult, ServiceError>>,
    back_rx: mpsc::Receiver<BackMessage>,
    _inflight: InflightGuard,
    /// The call's slot under the server's `max_concurrent`, held until the call ends.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    started: Instant,
}

impl Call {
    async fn start(
        sessions: &Arc<Sessions>,
        session: SessionId,
        upstream: &Upstream,
        peer: Option<rmcp::Peer<rmcp::RoleClient>>,
        request: ClientRequest,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Self, McpError> {
        let timeout = upstream.spec.call_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // A server with `max_concurrent` takes that many calls at once; the rest wait for a
        // slot, within their own call timeout.
        let slot = match upstream.slots() {
            Some(slots) => {
                match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    Ok(Err(_closed)) => {
                        return Err(McpError::internal_error(
                            "the server is shutting down",
                            None,
                        ));
                    }
                    Err(_elapsed) => {
                        return Err(McpError::internal_error(
                            format!(
                                "server `{}` is busy: no free slot within the call timeout",
                                upstream.spec.name
                            ),
                            None,
                        ));
                    }
                }
            }
            None => None,
        };
        // A legacy-era client has a session the upstream may keep state for; 2026-07-28 is
        // stateless.
        let dedicated = ctx
            .protocol_version()
            .is_none_or(|v| v.as_str() < ProtocolVersion::V_2026_07_28.as_str());
        let peer = match peer {
            Some(peer) => peer,
            None => upstream
                .peer_for(session, dedicated)
                .await
                .map_err(upstream_error)?,
        };
        let method = request.method().to_owned();
        let (back_tx, back_rx) = mpsc::channel(BACK_CHANNEL_CAPACITY);
        let inflight = sessions.register_call(
            upstream.name.clone(),
            session,
            ctx.meta.get_progress_token(),
            back_tx,
        );
        // rmcp picks the progress token inside the send; the upstream transport binds it to this
        // call as the request goes out (`upstream::tap`), before the upstream can send progress.
        let mut request = request;
        rmcp::model::GetExtensions::extensions_mut(&mut request).insert(inflight.key());
        let handle = peer
            .send_request_with_option(
                request,
                PeerRequestOptions::no_options().with_meta(forwarded_meta(ctx)),
            )
            .await
            .map_err(|source| service_error(&upstream.spec.name, source))?;
        Ok(Self {
            server: upstream.name.clone(),
            method,
            peer,
            request_id: handle.id.clone(),
            response: handle.rx,
            back_rx,
            _inflight: inflight,
            _slot: slot,
            deadline,
            timeout,
            started: Instant::now(),
        })
    }

    /// Waits for the answer, relaying the upstream's notifications into `ctx`, until the call
    /// ends (answer, timeout, cancellation) or the upstream asks the client for input.
    async fn run(&mut self, ctx: &RequestContext<RoleServer>) -> Step {
        loop {
            tokio::select! {
                answer = &mut self.response => {
                    // What the upstream sent before its answer is already in the back channel
                    // (see `upstream::tap`); deliver it before the answer ends the request.
                    while let Ok(message) = self.back_rx.try_recv() {
                        match message {
                            BackMessage::Notification(notification) => {
                                let _ = ctx.peer.send_notification(notification).await;
                            }
                            BackMessage::Request(_, reply) => {
                                let _ = reply.send(Err(McpError::internal_error("the call has already ended", None)));
                            }
                        }
                    }
                    tracing::debug!(server = %self.server, elapsed_us = self.started.elapsed().as_micros() as u64, "answered");
                    return Step::Done(match answer {
                        Ok(Ok(mut result)) => {
                            mark_complete(&mut result);
                            Ok(result)
                        }
                        Ok(Err(source)) => Err(service_error(&self.server, source)),
                        Err(_) => Err(upstream_error(UpstreamError::Closed { server: self.server.to_string() })),
                    });
                }
                Some(message) = self.back_rx.recv() => match message {
                    BackMessage::Notification(notification) => {
                        let _ = ctx.peer.send_notification(notification).await;
                    }
                    BackMessage::Request(request, reply) => return Step::NeedsInput(request, reply),
                },
                _ = ctx.ct.cancelled() => {
                    self.cancel_upstream("cancelled by the client").await;
                    return Step::Done(Err(McpError::internal_error("request cancelled", None)));
                }
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.cancel_upstream("timed out at the gateway").await;
                    return Step::Done(Err(upstream_error(UpstreamError::Timeout {
                        server: self.server.to_string(),
                        timeout: self.timeout,
                    })));
                }
            }
        }
    }

    async fn cancel_upstream(&self, reason: &str) {
        let params =
            CancelledNotificationParam::new(Some(self.request_id.clone()), Some(reason.to_owned()));
        let _ = self
            .peer
            .send_notification(ClientNotification::CancelledNotification(
                Notification::new(params),
            ))
            .await;
    }
}

/// Marks a final result as complete. A legacy-era upstream leaves `resultType` out; a
/// 2026-07-28 client requires it (rmcp strips it again for legacy clients).
fn mark_complete(result: &mut ServerResult) {
    use rmcp::model::ResultType;
    let result_type = match result {
        ServerResult::CompleteResult(r) => &mut r.result_type,
        ServerResult::GetPromptResult(r) => &mut r.result_type,
        ServerResult::ListPromptsResult(r) => &mut r.result_type,
        ServerResult::ListResourcesResult(r) => &mut r.result_type,
        ServerResult::ListResourceTemplatesResult(r) => &mut r.result_type,
        ServerResult::ReadResourceResult(r) => &mut r.result_type,
        ServerResult::ListToolsResult(r) => &mut r.result_type,
        ServerResult::CallToolResult(r) => &mut r.result_type,
        _ => return,
    };
    result_type.get_or_insert(ResultType::COMPLETE);
}

/// The client's request `_meta` as the upstream should see it: everything the client said about
/// itself and this request (capabilities, log level, trace context, extensions), except what
/// belongs to the gateway's own connection with the upstream: the negotiated protocol version,
/// the client implementation (the upstream's client is the gateway), and the progress token,
/// which the gateway replaces with its own and maps back.
fn forwarded_meta(ctx: &RequestContext<RoleServer>) -> RequestMetaObject {
    let mut meta = ctx.meta.clone();
    for key in [
        "progressToken",
        "io.modelcontextprotocol/protocolVersion",
        "io.modelcontextprotocol/clientInfo",
    ] {
        meta.0.0.remove(key);
    }
    // A legacy client declared its capabilities once, at initialize; a 2026-07-28 upstream
    // expects them on every request, and must not be told the client can do more than it can.
    if let Some(capabilities) = ctx.client_capabilities() {
        meta.set_client_capabilities(capabilities);
    }
    meta
}

fn service_error(server: &str, source: ServiceError) -> McpError {
    match source {
        // An upstream's JSON-RPC error stays the same error for the client.
        ServiceError::McpError(error) => error,
        ServiceError::TransportClosed => upstream_error(UpstreamError::Closed {
            server: server.to_owned(),
        }),
        source => upstream_error(UpstreamError::Service {
            server: server.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// The JSON-RPC error a client sees when the gateway could not get an answer from an upstream.
/// The message names the server and what went wrong, never internal details.
pub fn upstream_error(error: UpstreamError) -> McpError {
    let (kind, server) = match &error {
        UpstreamError::Unavailable { server, .. } => ("unavailable", server),
        UpstreamError::Timeout { server, .. } => ("timeout", server),
        UpstreamError::Closed { server } => ("closed", server),
        UpstreamError::Service { server, .. } => ("failed", server),
    };
    McpError::internal_error(
        error.to_string(),
        Some(serde_json::json!({ "server": server, "reason": kind })),
    )
}
