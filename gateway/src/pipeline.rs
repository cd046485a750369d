//! The one path every relayed request takes, written once, in the order of the design:
//!
//! 1. authenticate (the identity issue; today every client is the anonymous local client)
//! 2. resolve the client-visible name to an upstream and its definition
//! 3. verify the definition (the tool-verification issue; today nothing is verified and nothing
//!    claims to be: tools are served as their upstream lists them)
//! 4. policy, 5. rate limit, 6. validate arguments (the policy issue)
//! 7. dispatch to the upstream, with the call timeout and the client's cancellation enforced,
//!    relaying progress and server-to-client requests back into this client request
//! 8. audit (the audit issue; today one structured log event per outcome)

use std::{sync::Arc, time::Instant};

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CancelledNotificationParam, ClientNotification, ClientRequest, Notification,
        RequestMetaObject, ServerResult,
    },
    service::{PeerRequestOptions, RequestContext, ServiceError},
};
use tokio::sync::mpsc;

use crate::{
    session::{BackMessage, SessionId, Sessions},
    upstream::{Upstream, UpstreamError},
};

/// How many upstream messages may wait for delivery into one client request.
const BACK_CHANNEL_CAPACITY: usize = 64;

/// Sends `request` to `upstream` on behalf of the client request `ctx`, and relays everything the
/// upstream sends for it until the answer arrives, the call times out, or the client cancels.
pub async fn dispatch(
    sessions: &Arc<Sessions>,
    session: SessionId,
    upstream: &Upstream,
    request: ClientRequest,
    ctx: &RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    let started = Instant::now();
    let method = request.method().to_owned();
    let result = dispatch_inner(sessions, session, upstream, request, ctx).await;
    let outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error {}", e.code.0),
    };
    tracing::info!(
        target: "audit",
        server = %upstream.name,
        method,
        outcome,
        elapsed_us = started.elapsed().as_micros() as u64,
        "relayed"
    );
    result
}

async fn dispatch_inner(
    sessions: &Arc<Sessions>,
    session: SessionId,
    upstream: &Upstream,
    request: ClientRequest,
    ctx: &RequestContext<RoleServer>,
) -> Result<ServerResult, McpError> {
    // A legacy-era client has a session the upstream may keep state for; 2026-07-28 is stateless.
    let dedicated = ctx
        .protocol_version()
        .is_none_or(|v| v.as_str() < rmcp::model::ProtocolVersion::V_2026_07_28.as_str());
    let peer = upstream
        .peer_for(session, dedicated)
        .await
        .map_err(upstream_error)?;
    let client_token = ctx.meta.get_progress_token();
    let (back_tx, mut back_rx) = mpsc::channel(BACK_CHANNEL_CAPACITY);
    let handle = peer
        .send_request_with_option(
            request,
            PeerRequestOptions::no_options().with_meta(forwarded_meta(ctx)),
        )
        .await
        .map_err(|source| service_error(upstream, source))?;
    let _inflight = sessions.register_call(
        upstream.name.clone(),
        session,
        handle.progress_token.clone(),
        client_token,
        back_tx,
    );
    let request_id = handle.id.clone();
    let mut response = handle.rx;
    let timeout = upstream.spec.call_timeout;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);

    let cancel_upstream = |reason: &'static str| {
        let peer = peer.clone();
        let request_id = request_id.clone();
        async move {
            let params = CancelledNotificationParam::new(Some(request_id), Some(reason.to_owned()));
            let _ = peer
                .send_notification(ClientNotification::CancelledNotification(
                    Notification::new(params),
                ))
                .await;
        }
    };

    loop {
        tokio::select! {
            answer = &mut response => {
                // What the upstream sent before its answer is already in the back channel (see
                // `upstream::tap`); deliver it before the answer ends the client's request.
                while let Ok(message) = back_rx.try_recv() {
                    match message {
                        BackMessage::Notification(notification) => {
                            let _ = ctx.peer.send_notification(notification).await;
                        }
                        BackMessage::Request(_, reply) => {
                            let _ = reply.send(Err(McpError::internal_error("the call has already ended", None)));
                        }
                    }
                }
                return match answer {
                    Ok(Ok(mut result)) => {
                        mark_complete(&mut result);
                        Ok(result)
                    }
                    Ok(Err(source)) => Err(service_error(upstream, source)),
                    Err(_) => Err(upstream_error(UpstreamError::Closed { server: upstream.spec.name.clone() })),
                };
            }
            Some(message) = back_rx.recv() => {
                match message {
                    BackMessage::Notification(notification) => {
                        let _ = ctx.peer.send_notification(notification).await;
                    }
                    BackMessage::Request(request, reply) => {
                        // The client's answer is awaited here, inside the client's request, so the
                        // HTTP front door sends the request on this request's own stream.
                        let answer = tokio::select! {
                            answer = ctx.peer.send_request(request) => {
                                answer.map_err(|e| match e {
                                    ServiceError::McpError(e) => e,
                                    other => McpError::internal_error(format!("the client did not answer: {other}"), None),
                                })
                            }
                            _ = ctx.ct.cancelled() => Err(McpError::internal_error("the client cancelled the request", None)),
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
            _ = ctx.ct.cancelled() => {
                cancel_upstream("cancelled by the client").await;
                return Err(McpError::internal_error("request cancelled", None));
            }
            _ = &mut deadline => {
                cancel_upstream("timed out at the gateway").await;
                return Err(upstream_error(UpstreamError::Timeout {
                    server: upstream.spec.name.clone(),
                    timeout,
                }));
            }
        }
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

fn service_error(upstream: &Upstream, source: ServiceError) -> McpError {
    match source {
        // An upstream's JSON-RPC error stays the same error for the client.
        ServiceError::McpError(error) => error,
        ServiceError::TransportClosed => upstream_error(UpstreamError::Closed {
            server: upstream.spec.name.clone(),
        }),
        source => upstream_error(UpstreamError::Service {
            server: upstream.spec.name.clone(),
            source,
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
