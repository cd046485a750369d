//! The stdio front door (`mcp-gateway stdio`), for clients that launch a command.
//!
//! Only MCP messages are written to stdout; logs go to stderr (see `main.rs`).

use std::sync::Arc;

use rmcp::ServiceExt;

use crate::{Gateway, handler::GatewayHandler};

/// Serves one client over this process's stdin and stdout until it disconnects.
pub async fn serve(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let handler = GatewayHandler::new(gateway.clone());
    let service = handler.serve(rmcp::transport::stdio()).await?;
    let _ = service.waiting().await;
    gateway.shutdown();
    Ok(())
}
