//! The stdio front door (`mcp-gateway stdio`), for clients that launch a command.
//!
//! Only MCP messages are written to stdout; logs go to stderr (see `main.rs`).

use std::sync::Arc;

use rmcp::ServiceExt;

use crate::{Gateway, handler::GatewayHandler};

/// Serves one client over this process's stdin and stdout until it disconnects.
pub async fn serve(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    // A client that launches a command lists tools straight after connecting, and a one-shot
    // client never asks again: answer only once the upstreams are connected (or the connect
    // timeout has passed, after which the ones that are up are served).
    let _ =
        tokio::time::timeout(gateway.config.routing.connect_timeout, gateway.wait_ready()).await;
    let handler = GatewayHandler::stdio(gateway.clone());
    let service = handler.serve(rmcp::transport::stdio()).await?;
    let _ = service.waiting().await;
    Ok(())
}
