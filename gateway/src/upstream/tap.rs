//! Routing an upstream's progress and log notifications at the transport, in arrival order.
//!
//! rmcp hands notifications to the client handler in tasks of their own, so a progress
//! notification the upstream sent just before its response could be routed after the response
//! had already ended the call, and be lost. Taken off the transport here, they reach the call's
//! back channel strictly before the response does.

use std::sync::Arc;

use rmcp::{
    RoleClient,
    model::{
        ClientJsonRpcMessage, JsonRpcMessage, JsonRpcNotification, ServerJsonRpcMessage,
        ServerNotification,
    },
    transport::Transport,
};

use crate::session::Sessions;

/// Wraps an upstream transport and routes its progress and log notifications.
pub struct NotificationTap<T> {
    inner: T,
    server: Arc<str>,
    sessions: Arc<Sessions>,
}

impl<T> NotificationTap<T> {
    pub fn new(inner: T, server: Arc<str>, sessions: Arc<Sessions>) -> Self {
        Self {
            inner,
            server,
            sessions,
        }
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for NotificationTap<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        loop {
            let message = self.inner.receive().await?;
            if let JsonRpcMessage::Notification(JsonRpcNotification { notification, .. }) = &message
            {
                match notification {
                    ServerNotification::ProgressNotification(progress) => {
                        self.sessions
                            .deliver_progress(&self.server, progress.params.clone());
                        continue;
                    }
                    ServerNotification::LoggingMessageNotification(log) => {
                        self.sessions.deliver_unattributed(
                            &self.server,
                            ServerNotification::LoggingMessageNotification(log.clone()),
                        );
                        continue;
                    }
                    _ => {}
                }
            }
            return Some(message);
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
