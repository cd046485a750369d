//! The Streamable HTTP front door: `/mcp` for MCP, `/healthz` and `/readyz` for orchestrators.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use tokio::net::TcpListener;

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
    let service_gateway = gateway.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(GatewayHandler::new(service_gateway.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    Router::new()
        .route_service(&gateway.config.listen.path, mcp)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(gateway)
}

/// Ready when every enabled upstream is connected; the body lists each upstream's state.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> (StatusCode, String) {
    let mut body = String::new();
    for upstream in gateway.registry.upstreams() {
        body.push_str(&format!(
            "{} {:?} tier={}\n",
            upstream.spec.name,
            upstream.state(),
            upstream.tier()
        ));
    }
    let status = if gateway.all_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// Serves `gateway` on `listener` until the gateway shuts down.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let shutdown = gateway.shutdown_token();
    // Without TCP_NODELAY, rmcp's small chunked SSE writes wait on delayed ACKs and every
    // request takes ~40 ms longer.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds the configured address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}
