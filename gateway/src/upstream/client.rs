//! The gateway's MCP client side: what it does with messages an upstream sends on its own.
//!
//! Server-to-client requests (sampling, elicitation, roots) are routed back to the client session
//! that caused them through [`Sessions`]; list changes make the upstream's supervisor refresh its
//! catalog; resource updates go to the subscribed sessions. Progress and log lines never get
//! here: [`super::tap`] routes them off the transport, in order with the responses.

#![expect(
    deprecated,
    reason = "sampling, roots and logging are deprecated by SEP-2577 but still relayed for clients that use them"
)]

use std::sync::Arc;

use rmcp::{
    ClientHandler, ErrorData as McpError, RoleClient,
    model::*,
    service::{NotificationContext, RequestContext},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    naming::Naming,
    session::{BackMessage, Sessions},
};

/// Which list of an upstream changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Resources,
    Prompts,
}

/// The client handler for one upstream connection.
#[derive(Clone)]
pub struct UpstreamClient {
    pub(crate) server: Arc<str>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) naming: Naming,
    pub(crate) list_changes: mpsc::UnboundedSender<ListKind>,
}

impl UpstreamClient {
    /// Sends a server-to-client request to the client whose call caused it and waits for its answer.
    async fn relay_request(&self, request: ServerRequest) -> Result<ClientResult, McpError> {
        let back = self.sessions.route_unattributed(&self.server).map_err(|e| {
            tracing::warn!(server = %self.server, error = %e, "refused a server-to-client request");
            McpError::internal_error(format!("the gateway cannot deliver this request: {e}"), None)
        })?;
        let (tx, rx) = oneshot::channel();
        back.send(BackMessage::Request(request, tx))
            .await
            .map_err(|_| McpError::internal_error("the client request has ended", None))?;
        rx.await
            .map_err(|_| McpError::internal_error("the client request has ended", None))?
    }
}

fn unexpected(what: &str) -> McpError {
    McpError::internal_error(
        format!("the client answered {what} with an unexpected result"),
        None,
    )
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        // The gateway offers every client capability upstream and relays each request to the
        // client that caused it; a client that lacks the capability answers with an error.
        capabilities.sampling = Some(Default::default());
        capabilities.elicitation = Some(Default::default());
        capabilities.roots = Some(Default::default());
        ClientConfig::new(
            capabilities,
            Implementation::new("mcp-gateway", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        match self
            .relay_request(ServerRequest::CreateMessageRequest(Request::new(params)))
            .await?
        {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(unexpected("sampling/createMessage")),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        match self
            .relay_request(ServerRequest::ElicitRequest(Request::new(params)))
            .await?
        {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(unexpected("elicitation/create")),
        }
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, McpError> {
        match self
            .relay_request(ServerRequest::ListRootsRequest(Default::default()))
            .await?
        {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(unexpected("roots/list")),
        }
    }

    async fn on_resource_updated(
        &self,
        mut params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        params.uri = self.naming.uri(&self.server, &params.uri);
        self.sessions.resource_updated(params).await;
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.list_changes.send(ListKind::Resources);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.list_changes.send(ListKind::Tools);
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.list_changes.send(ListKind::Prompts);
    }
}
