//! The Streamable HTTP front door: `/mcp` for MCP, `/healthz` and `/readyz` for orchestrators.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use rmcp::transport::streamable_http_server::{
    SessionManager as _, StreamableHttpServerConfig, StreamableHttpService,
};
use tokio::net::TcpListener;

use super::{
    check_message, check_params,
    sessions::{Refusal, Sessions},
};
use crate::{Gateway, handler::GatewayHandler};

/// Builds the HTTP stack, outermost layer first.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let listen = &gateway.config.listen;
    let mut mcp_config = StreamableHttpServerConfig::default()
        // Host validation defeats DNS rebinding against a gateway on loopback; the list comes
        // from the config and defaults to the loopback names.
        .with_allowed_hosts(listen.allowed_hosts.clone())
        // Origin validation is always on: a browser page may reach the gateway only from an
        // origin the operator listed, and with none listed, from no origin at all.
        .with_allowed_origins(listen.allowed_origins.clone())
        .enforce_origin_validation()
        // The body limit is enforced while the body streams in, so a lying Content-Length or a
        // chunked body cannot get past it; the client gets 413.
        .with_max_request_body_bytes(listen.max_body_bytes)
        .with_cancellation_token(gateway.shutdown_token().child_token());
    // Legacy-era clients get sessions (Mcp-Session-Id); 2026-07-28 requests are stateless
    // whatever this says.
    mcp_config.legacy_session_mode = true;
    // A stateless (2026-07-28) request whose first message is its answer gets a plain JSON
    // response instead of an SSE stream: one write instead of three. Anything that sends
    // notifications first still streams.
    mcp_config.json_response = true;
    let service_gateway = gateway.clone();
    let sessions = Arc::new(Sessions::new(
        listen.max_sessions,
        listen.max_sessions_per_client,
        listen.session_idle,
    ));
    let mcp = StreamableHttpService::new(
        move || Ok(GatewayHandler::new(service_gateway.clone())),
        sessions.clone(),
        mcp_config,
    );
    let body_limit = gateway.config.listen.max_body_bytes;
    let auth_gateway = gateway.clone();
    let mcp = Router::new()
        .route_service(&gateway.config.listen.path, mcp)
        // Every MCP request (POST, GET stream, DELETE) carries a client identity from here on,
        // or is answered 401; the handler reads it from the request's extensions.
        // An `initialize` opens a session only while there is room, in all and for its client.
        .layer(middleware::from_fn({
            let sessions = sessions.clone();
            move |request, next| admit_session(sessions.clone(), request, next)
        }))
        .layer(middleware::from_fn(move |request, next| {
            authenticate(auth_gateway.clone(), request, next)
        }))
        // Malformed bodies are answered here with JSON-RPC errors (-32700, -32600) instead of
        // the transport's plain-text 400, and oversized ones with 413 before any parsing.
        .layer(middleware::from_fn(move |request, next| {
            jsonrpc_guard(body_limit, request, next)
        }));
    // rmcp checks the Host of MCP requests; the other endpoints that say anything check it
    // here, on the same list, so a page that rebinds its own name to a loopback gateway cannot
    // read the upstreams and policy file `/readyz` names either. `/healthz` answers only "ok",
    // to any Host, for probes that connect by address.
    let allowed_hosts: Arc<[String]> = gateway.config.listen.allowed_hosts.clone().into();
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        // Live audit events, for clients in the `admin` group only.
        .route("/admin/events", get(admin_events))
        .layer(middleware::from_fn(move |request, next| {
            host_guard(allowed_hosts.clone(), request, next)
        }));
    Router::new()
        .merge(mcp)
        .merge(guarded)
        .route("/healthz", get(|| async { "ok" }))
        .with_state(gateway)
        .layer(middleware::from_fn(one_host))
}

/// Refuses a request that names its host twice in ways that may disagree: two `Host` headers
/// (RFC 9112 §3.2 requires 400), or an absolute-form target whose authority is not the `Host`
/// (§3.2.2 says the target wins, while every Host check here reads the header).
async fn one_host(request: Request, next: Next) -> Response {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    let twice = hosts.next().is_some();
    let disagree = match (request.uri().authority(), host) {
        (Some(target), Some(host)) => host
            .to_str()
            .is_ok_and(|host| !target.as_str().eq_ignore_ascii_case(host)),
        _ => false,
    };
    if twice || disagree {
        return (
            StatusCode::BAD_REQUEST,
            "the request must name one host: a single Host header that matches its target",
        )
            .into_response();
    }
    next.run(request).await
}

/// Refuses a request whose `Host` (or HTTP/2 `:authority`) is not in `allowed`, with the
/// matching rmcp applies to the MCP endpoint: names compare without case and without IPv6
/// brackets, and an entry without a port accepts any port.
async fn host_guard(allowed: Arc<[String]>, request: Request, next: Next) -> Response {
    let authority = match request.headers().get(header::HOST) {
        Some(host) => host
            .to_str()
            .ok()
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok()),
        None => request.uri().authority().cloned(),
    };
    let Some(authority) = authority else {
        return (
            StatusCode::BAD_REQUEST,
            "Bad Request: missing or invalid Host header",
        )
            .into_response();
    };
    if host_allowed(&authority, &allowed) {
        next.run(request).await
    } else {
        tracing::warn!(host = %authority, path = %request.uri().path(),
            "request refused: Host header not allowed (possible DNS rebinding)");
        (
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed",
        )
            .into_response()
    }
}

fn host_allowed(authority: &axum::http::uri::Authority, allowed: &[String]) -> bool {
    let name = |host: &str| host.trim_matches(['[', ']']).to_ascii_lowercase();
    let host = name(authority.host());
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        match entry.parse::<axum::http::uri::Authority>() {
            Ok(a) => {
                name(a.host()) == host
                    && a.port_u16().is_none_or(|p| authority.port_u16() == Some(p))
            }
            Err(_) => !entry.is_empty() && name(entry) == host,
        }
    })
}

/// Establishes the client's identity, or answers 401 with a JSON-RPC error body.
async fn authenticate(gateway: Arc<Gateway>, mut request: Request, next: Next) -> Response {
    match gateway
        .access
        .authenticator
        .authenticate(request.headers())
        .await
    {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(e) => {
            // The reason is for the operator; the client learns only that it is unauthorized.
            tracing::info!(target: "audit", error = %e, "request refused: unauthorized");
            let mut response = jsonrpc_error(
                StatusCode::UNAUTHORIZED,
                serde_json::Value::Null,
                -32001,
                "unauthorized".to_owned(),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, bearer_challenge());
            response
        }
    }
}

/// The challenge of every 401: a bearer token (an API key or a JWT) is what the gateway takes.
fn bearer_challenge() -> header::HeaderValue {
    header::HeaderValue::from_static("Bearer realm=\"mcp-gateway\"")
}

/// The group whose members may watch `/admin/events`.
pub const ADMIN_GROUP: &str = "admin";

/// Live audit events as SSE. `Last-Event-ID` resumes after the events a watcher saw.
async fn admin_events(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    let identity = match gateway
        .access
        .authenticator
        .authenticate(request.headers())
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(target: "audit", error = %e, "admin events refused: unauthorized");
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, bearer_challenge())],
            )
                .into_response();
        }
    };
    if identity.via == crate::identity::AuthMethod::Anonymous
        || !identity.groups.iter().any(|g| g == ADMIN_GROUP)
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    let last_seen = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let catchup = gateway.audit.live.watch(last_seen);
    let event = |e: &crate::audit::live::LiveEvent| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .id(e.id.to_string())
                .event("record")
                .data(&*e.data),
        )
    };
    let mut first: Vec<Result<Event, std::convert::Infallible>> = Vec::new();
    if catchup.gap {
        first.push(Ok(Event::default()
            .event("gap")
            .data("some events after Last-Event-ID are no longer buffered")));
    }
    let newest = catchup.missed.last().map_or(last_seen, |e| e.id);
    first.extend(catchup.missed.iter().map(event));
    let live = futures::stream::unfold(
        (catchup.live, newest, false),
        move |(mut rx, mut newest, done)| async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    // Events already sent from the buffer are skipped.
                    Ok(e) if e.id <= newest => continue,
                    Ok(e) => {
                        newest = e.id;
                        return Some((event(&e), (rx, newest, false)));
                    }
                    // Too slow: cut off with a marker rather than buffer without end.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let marker = Event::default().event("lagged").data(format!(
                            "{n} events were dropped; reconnect with Last-Event-ID"
                        ));
                        return Some((Ok(marker), (rx, newest, true)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    // The feed ends when the gateway shuts down, so it does not hold its connection open.
    let shutdown = gateway.shutdown_token();
    let live = live.take_until(async move { shutdown.cancelled().await });
    Sse::new(futures::stream::iter(first).chain(live))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Ready when every enabled upstream is connected; the body lists each upstream's state.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> (StatusCode, String) {
    let mut body = String::new();
    for upstream in gateway.registry.upstreams() {
        body.push_str(&format!(
            "{} {} tier={} requested={} calls={}\n",
            upstream.spec.name,
            upstream.lifecycle(),
            upstream.tier(),
            upstream.tier_requested(),
            upstream.requests_in_flight()
        ));
    }
    match gateway.sandbox.get() {
        Some(Ok(report)) => {
            for tier in &report.tiers {
                body.push_str(&format!(
                    "sandbox {} available={} {}\n",
                    tier.tier, tier.available, tier.detail
                ));
            }
        }
        Some(Err(e)) => body.push_str(&format!("sandbox unprobed: {e}\n")),
        None => {}
    }
    let policy = gateway.access.policy.current();
    body.push_str(&format!(
        "policy {} policies={}\n",
        policy
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "default-allow".into()),
        policy.len()
    ));
    if gateway.access.limits_degraded() {
        // Said plainly: calls are refused or counted per replica until Redis answers again.
        body.push_str("limits redis unreachable (degraded)\n");
    }
    let status = if gateway.all_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// How long a connection may take to send a request's headers. It also bounds how long a
/// keep-alive connection may sit idle between requests. hyper's own default once it has a timer.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request body may take to arrive after its headers.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may go without a request in progress before it is closed. HTTP/1.1
/// connections are also bounded by [`HEADER_READ_TIMEOUT`]; this one is what closes an HTTP/2
/// connection that opens no stream, or a connection that never says which protocol it speaks.
const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection that is closing, with nothing in progress and no byte moving either
/// way, may take to close itself before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a connection that is closing may stay open once nothing is in progress, bytes moving
/// or not: a client still reading the end of a large response slowly gets this long, a peer that
/// keeps talking no longer. Requests in progress are not limited by it; they finish.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

/// Serves `gateway` on `listener` until the gateway shuts down.
///
/// axum's own `serve` gives hyper no timer, so a client that opens connections and sends
/// nothing, or half a header, holds them forever; a few thousand such connections exhaust the
/// process's descriptors, which the upstreams and the database need too. Here every connection
/// gets [`HEADER_READ_TIMEOUT`] and [`CONNECTION_IDLE_TIMEOUT`], and at most
/// `listen.max_connections` are open at once.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) -> std::io::Result<()> {
    use futures::TryFutureExt as _;
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto,
        service::TowerToHyperService,
    };
    use tower::ServiceExt as _;

    let shutdown = gateway.shutdown_token();
    let slots = Arc::new(tokio::sync::Semaphore::new(
        gateway.config.listen.max_connections,
    ));
    let router = router(gateway);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: the
                    // listener itself is fine, so wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Without TCP_NODELAY, rmcp's small chunked SSE writes wait on delayed ACKs and every
        // request takes ~40 ms longer.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = TowerToHyperService::new(tower::service_fn({
            let router = router.clone();
            let activity = activity.clone();
            move |request: axum::http::Request<hyper::body::Incoming>| {
                // Held until the response body is done or dropped: an SSE stream is a request
                // in progress for as long as it is open.
                let busy = activity.begin();
                router
                    .clone()
                    .oneshot(request.map(Body::new))
                    .map_ok(|response| {
                        response.map(|body| {
                            Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                                let _held = &busy;
                                frame
                            }))
                        })
                    })
            }
        }));
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(Metered::new(stream, activity.clone())),
                service,
            )
            .into_owned();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Requests in progress finish; then the connection closes (HTTP/2: GOAWAY).
                    () = shutdown.cancelled(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = activity.idle(CONNECTION_IDLE_TIMEOUT), if !closing => {
                        tracing::debug!("closing a connection idle for {} s",
                            CONNECTION_IDLE_TIMEOUT.as_secs());
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    // An HTTP/2 peer that does not answer the GOAWAY's ping would keep the
                    // connection open: once nothing is in progress and no byte has moved for a
                    // while, it is dropped. A response hyper has taken but not yet written (a
                    // slow reader's) keeps bytes moving, up to a limit.
                    () = activity.stalled(CLOSE_GRACE, CLOSE_LIMIT), if closing => break,
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Whether a connection has requests in progress (each request holds a [`Busy`] from its
/// headers until its response body is done or dropped), and when it last moved a byte.
#[derive(Default)]
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
    /// When a byte was last read or written.
    moved: crate::clock::Stamp,
}

impl Activity {
    /// Returns once no request has been in progress for `quiet` and either no byte has moved
    /// for `quiet` or `limit` has passed since the last request ended.
    async fn stalled(&self, quiet: Duration, limit: Duration) {
        loop {
            self.idle(quiet).await;
            // Nothing has been in progress since then at least.
            let ended = tokio::time::Instant::now() - quiet;
            loop {
                let since = self.moved.elapsed();
                if since >= quiet || ended.elapsed() >= limit {
                    return;
                }
                tokio::time::sleep((quiet - since).min(limit - ended.elapsed())).await;
                if self.busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    break;
                }
            }
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Returns once no request has been in progress for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            // Made before the check, so a change between the check and the wait is not missed.
            let changed = self.changed.notified();
            if self.busy.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(limit) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in progress on a connection; see [`Activity`].
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A connection's socket, noting in its [`Activity`] each read or write that moves a byte.
struct Metered<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Metered<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Metered<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved.touch();
        }
        result
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Binds the configured address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// A JSON-RPC error response that is not tied to a request id.
fn jsonrpc_error(
    status: StatusCode,
    id: serde_json::Value,
    code: i64,
    message: String,
) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Reads a POST body within the limit and checks that it is one JSON-RPC message before the MCP
/// transport sees it.
async fn jsonrpc_guard(limit: usize, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        )
            .into_response()
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let bytes: Bytes =
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) if is_length_limit(&e) => return too_large(),
            Ok(Err(e)) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
                    .into_response();
            }
            Err(_elapsed) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                )
                    .into_response();
            }
        };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                serde_json::Value::Null,
                -32700,
                format!("Parse error: {e}"),
            );
        }
    };
    if let Err((id, why)) = check_message(&value) {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            format!("Invalid Request: {why}"),
        );
    }
    if let Err((id, why)) = check_params(&value) {
        return jsonrpc_error(StatusCode::OK, id, -32602, why);
    }
    let id = value.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let method = value.get("method").and_then(|m| m.as_str());
    let modern = modern_request(&parts.headers, &value);
    // rmcp takes `initialize` itself, before the handler could refuse it, and opens a legacy
    // session whatever era the request names.
    if modern && method == Some("initialize") {
        return jsonrpc_error(
            StatusCode::NOT_FOUND,
            id,
            -32601,
            "Method not found: initialize (removed in protocol version 2026-07-28; use server/discover)"
                .to_owned(),
        );
    }
    let initialize = method == Some("initialize");
    // A session is initialized once; a client that wants a new one sends `initialize` without a
    // session id. rmcp would initialize the session again, with another version and client info.
    if initialize && parts.headers.contains_key("mcp-session-id") {
        return jsonrpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            "Invalid Request: this session is already initialized; send `initialize` without Mcp-Session-Id for a new one"
                .to_owned(),
        );
    }
    // rmcp takes an `initialize` whose params do not fit for some other request, and answers
    // that a session is required; the client is told what is wrong instead. Other protocol
    // methods with unfitting params reach the handler, which answers -32602 for both doors
    // (`GatewayHandler::on_custom_request`).
    if initialize
        && !modern
        && value.get("params").is_none_or(|p| {
            <rmcp::model::InitializeRequestParams as serde::Deserialize>::deserialize(p).is_err()
        })
    {
        return jsonrpc_error(
            StatusCode::OK,
            id,
            -32602,
            "Invalid params for `initialize`".to_owned(),
        );
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    // rmcp opens a session for every `initialize` without a session id.
    if initialize {
        request.extensions_mut().insert(OpensSession);
    }
    request.extensions_mut().insert(MessageId(id.clone()));
    let response = next.run(request).await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return unfitting_message(response, id).await;
    }
    response
}

/// rmcp answers a message that passed the checks above but fits none of its JSON-RPC types (an
/// `error` that is not an object with an integer `code` and a string `message`, a key given
/// twice) with 415 and plain text, as if the Content-Type were wrong. That answer becomes the
/// -32600 of any other invalid message; a Content-Type rmcp refuses keeps its 415.
async fn unfitting_message(response: Response, id: serde_json::Value) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(text) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    match std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.strip_prefix("fail to deserialize request body"))
    {
        Some(why) => jsonrpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            format!("Invalid Request:{why}"),
        ),
        None => Response::from_parts(parts, Body::from(text)),
    }
}

/// The JSON-RPC id of a POSTed message (`null` when it has none), to answer a refusal with.
#[derive(Clone)]
struct MessageId(serde_json::Value);

/// The [`MessageId`] of `request`; `null` for a GET or DELETE.
fn message_id(request: &Request) -> serde_json::Value {
    request
        .extensions()
        .get::<MessageId>()
        .map_or(serde_json::Value::Null, |m| m.0.clone())
}

/// Marks an `initialize` without a session id, which opens a session, for [`admit_session`].
#[derive(Clone)]
struct OpensSession;

/// Lets an `initialize` open a session only while there is room: fewer than
/// `listen.max_sessions` open in all, and fewer than `listen.max_sessions_per_client` for the
/// client it comes from, so that one client cannot take every session. Also answers DELETE.
async fn admit_session(sessions: Arc<Sessions>, request: Request, next: Next) -> Response {
    if let Some(refusal) = foreign_session(&sessions, &request) {
        return refusal;
    }
    if request.method() == Method::DELETE {
        return delete_session(&sessions, request, next).await;
    }
    let (Some(OpensSession), Some(identity)) = (
        request.extensions().get::<OpensSession>(),
        request
            .extensions()
            .get::<crate::identity::Identity>()
            .cloned(),
    ) else {
        return next.run(request).await;
    };
    let id = message_id(&request);
    // The session manager checks for room and counts the session against this client as rmcp
    // creates it; rmcp answers its refusal with a plain 500, replaced here.
    let (response, refused) =
        super::sessions::opening(identity.client.clone(), next.run(request)).await;
    match refused {
        Some(refusal) => sessions_full(&sessions, &identity.client, refusal, id),
        None => response,
    }
}

/// Refuses a request (any message, a GET stream, a DELETE) that names a session another client
/// opened: a session is bound to the client that opened it, so another client's credentials
/// cannot cancel its calls, answer its server's requests, read its stream or end it.
fn foreign_session(sessions: &Sessions, request: &Request) -> Option<Response> {
    let session = request.headers().get("mcp-session-id")?.to_str().ok()?;
    let identity = request.extensions().get::<crate::identity::Identity>()?;
    let owner = sessions.other_owner(session, &identity.client)?;
    tracing::warn!(target: "audit", session, owner, client = %identity.client, method = %request.method(), "session used with another client's credentials");
    Some(jsonrpc_error(
        StatusCode::FORBIDDEN,
        message_id(request),
        -32600,
        "Invalid Request: this session belongs to another client".to_owned(),
    ))
}

/// Ends a session. rmcp answers 202 whether it existed or not: a session that ended is answered
/// 200 (202 promises work still to come, and SDK clients that accept only 200 or 204 log the
/// DELETE as failed), and one that did not exist, or had already ended, 404 as for any other
/// request that names it.
async fn delete_session(sessions: &Sessions, request: Request, next: Next) -> Response {
    let known = match request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => sessions.has_session(&id.into()).await.unwrap_or(false),
        None => true,
    };
    let mut response = next.run(request).await;
    if response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = if known {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
    }
    response
}

/// The answer to an `initialize` when there is no room for its session: 503, and a JSON-RPC
/// error that says why, so the client can retry later.
fn sessions_full(
    sessions: &Sessions,
    client: &str,
    refusal: Refusal,
    id: serde_json::Value,
) -> Response {
    match sessions.refused() {
        Some(refused) => tracing::warn!(client, refused, "initialize refused: {refusal}"),
        None => tracing::debug!(client, "initialize refused: {refusal}"),
    }
    let mut response = jsonrpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        id,
        -32000,
        format!("Server busy: {refusal}; try again later"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
    response
}

/// Whether a request is of the 2026-07-28 era: its `MCP-Protocol-Version` header, or the
/// version in its `_meta`, says so.
fn modern_request(headers: &axum::http::HeaderMap, message: &serde_json::Value) -> bool {
    let modern = |v: &str| v >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str();
    let header = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok());
    let meta = message
        .pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
        .and_then(|v| v.as_str());
    header.is_some_and(modern) || meta.is_some_and(modern)
}

/// Whether reading a body failed on its length limit (413) rather than on the connection (400).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::{Activity, host_allowed};

    /// A closing connection is dropped once nothing is in progress and no byte has moved for
    /// the grace period, not while a slow reader is still taking the end of a response.
    #[tokio::test(start_paused = true)]
    async fn a_connection_stalls_only_when_no_byte_moves() {
        let grace = Duration::from_secs(5);
        let activity = Arc::new(Activity::default());
        let busy = activity.begin();
        let stalled = tokio::spawn({
            let activity = activity.clone();
            async move { activity.stalled(grace, Duration::from_secs(3600)).await }
        });
        // A request in progress: never stalled, however long.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!stalled.is_finished());
        // Its body is done, but hyper is still writing it: a byte every 3 s keeps it open.
        drop(busy);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            activity.moved.touch();
            assert!(!stalled.is_finished());
        }
        // Then nothing moves: stalled within two grace periods of the last byte.
        let last = tokio::time::Instant::now();
        stalled.await.unwrap();
        let waited = last.elapsed();
        assert!(waited >= grace && waited <= 2 * grace, "{waited:?}");
    }

    /// Bytes that keep moving hold a closing connection for the limit at most, counted from
    /// the end of the last request, however long that request took.
    #[tokio::test(start_paused = true)]
    async fn bytes_that_keep_moving_hold_a_connection_for_the_limit() {
        let (grace, limit) = (Duration::from_secs(5), Duration::from_secs(60));
        let activity = Arc::new(Activity::default());
        let busy = activity.begin();
        let stalled = tokio::spawn({
            let activity = activity.clone();
            async move { activity.stalled(grace, limit).await }
        });
        // A request longer than the limit, moving bytes all along, is not cut off.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            activity.moved.touch();
        }
        assert!(!stalled.is_finished());
        drop(busy);
        let ended = tokio::time::Instant::now();
        while !stalled.is_finished() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            activity.moved.touch();
        }
        let held = ended.elapsed();
        assert!(held >= limit && held <= limit + grace, "{held:?}");
    }

    #[test]
    fn hosts_match_as_rmcp_matches_them() {
        let allowed: Vec<String> = ["localhost", "127.0.0.1", "::1", "gw.example:8443"]
            .map(String::from)
            .to_vec();
        let allows = |host: &str| host_allowed(&host.parse().unwrap(), &allowed);
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "gw.example:8443",
        ] {
            assert!(allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.2:8080",
            "gw.example",
            "gw.example:443",
            "[::2]:8080",
        ] {
            assert!(!allows(host), "{host}");
        }
        // An entry that is blank allows nothing.
        assert!(!host_allowed(&"localhost".parse().unwrap(), &[" ".into()]));
    }
}
