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
        ClientJsonRpcMessage, GetExtensions as _, GetMeta as _, JsonRpcMessage,
        JsonRpcNotification, JsonRpcRequest, ServerJsonRpcMessage, ServerNotification,
    },
    transport::Transport,
};

use crate::session::{CallKey, Sessions};

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
        // A relayed call's progress token is bound to the call here, before the request is on
        // the wire: progress the upstream sends at once finds its call.
        if let JsonRpcMessage::Request(JsonRpcRequest { request, .. }) = &item
            && let Some(key) = request.extensions().get::<CallKey>()
            && let Some(token) = request.get_meta().get_progress_token()
        {
            self.sessions.bind_upstream_token(*key, token);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rmcp::{
        model::{
            CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, GetExtensions as _,
            GetMeta as _, JsonRpcMessage, JsonRpcRequest, NumberOrString, ProgressToken, Request,
        },
        transport::{Transport as _, async_rw::AsyncRwTransport},
    };
    use tokio::sync::mpsc;

    use super::NotificationTap;
    use crate::session::Sessions;

    /// Progress an upstream sends the moment it reads a request finds its call: the token is
    /// bound while the request goes out, not after rmcp's send returns.
    #[tokio::test]
    async fn a_calls_progress_token_is_bound_as_its_request_goes_out() {
        let sessions = Arc::new(Sessions::default());
        let (back, _rx) = mpsc::channel(1);
        let client_token = ProgressToken(NumberOrString::Number(7));
        let upstream_token = ProgressToken(NumberOrString::Number(3));
        let call = sessions.register_call("s".into(), 1, Some(client_token.clone()), back);
        let (ours, _theirs) = tokio::io::duplex(64 * 1024);
        let (read, write) = tokio::io::split(ours);
        let mut tap = NotificationTap::new(
            AsyncRwTransport::new_client(read, write),
            "s".into(),
            sessions.clone(),
        );
        let mut request =
            ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new("echo")));
        request.extensions_mut().insert(call.key());
        request
            .get_meta_mut()
            .set_progress_token(upstream_token.clone());
        assert!(sessions.route_progress("s", &upstream_token).is_none());
        let message: ClientJsonRpcMessage =
            JsonRpcMessage::Request(JsonRpcRequest::new(NumberOrString::Number(1), request));
        // Bound before the send's future is even polled: the request is not on the wire yet.
        let sending = tap.send(message);
        let (_, token) = sessions
            .route_progress("s", &upstream_token)
            .expect("the token finds its call");
        assert_eq!(token, client_token);
        sending.await.unwrap();
    }
}
