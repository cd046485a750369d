//! Client sessions, and the routing of upstream messages back to the session that caused them.
//!
//! A shared upstream session serves many client sessions, so anything the upstream sends that
//! belongs to one request (progress, a sampling or elicitation request, a log line during a call)
//! must reach that request's client and no other. Each relayed request registers an
//! [`InflightCall`] with a back channel into the task serving the client's request; upstream
//! messages are routed by the progress token the gateway put on the upstream request, or, for
//! messages that carry no token, to the one client session with requests in flight on that
//! upstream. When that is ambiguous the message is refused rather than guessed, because sending
//! it to the wrong client would leak one client's state to another.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use rmcp::{
    ErrorData as McpError, Peer, RoleServer,
    model::{
        ClientResult, Notification, ProgressNotificationParam, ProgressToken,
        ResourceUpdatedNotificationParam, ServerNotification, ServerRequest,
    },
    service::SubscriptionSink,
};
use tokio::sync::{mpsc, oneshot};

/// Identifies one client session inside this gateway process.
pub type SessionId = u64;

/// Something an upstream sent that must be delivered inside the client's request.
#[derive(Debug)]
pub enum BackMessage {
    Notification(ServerNotification),
    Request(
        ServerRequest,
        oneshot::Sender<Result<ClientResult, McpError>>,
    ),
}

/// A request relayed to an upstream and not yet answered.
struct InflightCall {
    server: Arc<str>,
    session: SessionId,
    /// The progress token the gateway put on the upstream request; `None` until the request
    /// has been sent, since the upstream connection chooses it.
    upstream_token: Option<ProgressToken>,
    /// The progress token the client put on its request, if any.
    client_token: Option<ProgressToken>,
    back: mpsc::Sender<BackMessage>,
}

#[derive(Default)]
struct SessionEntry {
    peer: Option<Peer<RoleServer>>,
    /// Client-visible URIs this session subscribed to.
    subscriptions: HashSet<String>,
}

/// The live client sessions and the requests they have in flight.
#[derive(Default)]
pub struct Sessions {
    next_id: AtomicU64,
    sessions: Mutex<HashMap<SessionId, SessionEntry>>,
    inflight: Mutex<HashMap<u64, InflightCall>>,
    /// Open `subscriptions/listen` streams of 2026-07-28 clients.
    listeners: Mutex<HashMap<u64, SubscriptionSink>>,
    /// Calls waiting for a 2026-07-28 client's input, by the `requestState` it was given.
    suspended: Mutex<HashMap<String, crate::pipeline::Suspended>>,
}

/// Removes a listen stream from [`Sessions`] when dropped.
pub struct ListenerGuard {
    key: u64,
    sessions: Arc<Sessions>,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.sessions.lock_listeners().remove(&self.key);
    }
}

/// Removes its session from [`Sessions`] when dropped, which happens when the client session ends.
pub struct SessionGuard {
    pub id: SessionId,
    sessions: Arc<Sessions>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock_sessions().remove(&self.id);
    }
}

/// Unregisters an in-flight call when dropped, whether the call finished, failed or was cancelled.
pub struct InflightGuard {
    key: u64,
    sessions: Arc<Sessions>,
}

impl InflightGuard {
    /// Names this call on the upstream request it sends, as an extension of the request (not
    /// sent on the wire), so the transport can bind the request's progress token to this call
    /// as the request goes out: see [`Sessions::bind_upstream_token`].
    pub fn key(&self) -> CallKey {
        CallKey(self.key)
    }
}

/// The in-flight call an upstream request belongs to; see [`InflightGuard::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallKey(u64);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.sessions.lock_inflight().remove(&self.key);
    }
}

impl Sessions {
    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, SessionEntry>> {
        // A poisoned lock only means another thread panicked mid-update of a plain map;
        // the map itself is still usable, and refusing every later request would be worse.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InflightCall>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SubscriptionSink>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks a call until its client answers (see [`crate::pipeline::resume`]).
    pub fn put_suspended(&self, token: String, call: crate::pipeline::Suspended) {
        self.suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, call);
    }

    /// Takes a parked call out, so it can be resumed once.
    pub fn take_suspended(&self, token: &str) -> Option<crate::pipeline::Suspended> {
        self.suspended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token)
    }

    /// Registers a client's listen stream; it receives notifications until the guard is dropped.
    pub fn add_listener(self: &Arc<Self>, sink: SubscriptionSink) -> ListenerGuard {
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_listeners().insert(key, sink);
        ListenerGuard {
            key,
            sessions: self.clone(),
        }
    }

    /// Sends a change notification to every session and listen stream that accepts it.
    pub async fn broadcast(&self, notification: ServerNotification) {
        let peers = self.peers();
        for peer in peers {
            let _ = peer.send_notification(notification.clone()).await;
        }
        let sinks: Vec<_> = self.lock_listeners().values().cloned().collect();
        for sink in sinks {
            // A stream whose filter did not ask for this kind of change refuses it: as intended.
            let _ = sink.send(notification.clone()).await;
        }
    }

    /// Delivers a resource update (client-visible URI) to the sessions and listen streams
    /// subscribed to it.
    pub async fn resource_updated(&self, params: ResourceUpdatedNotificationParam) {
        for peer in self.subscribers(&params.uri) {
            let _ = peer.notify_resource_updated(params.clone()).await;
        }
        let sinks: Vec<_> = self.lock_listeners().values().cloned().collect();
        let notification =
            ServerNotification::ResourceUpdatedNotification(Notification::new(params));
        for sink in sinks {
            let _ = sink.send(notification.clone()).await;
        }
    }

    /// The client-visible URIs a session is subscribed to.
    pub fn subscriptions(&self, id: SessionId) -> Vec<String> {
        self.lock_sessions()
            .get(&id)
            .map(|e| e.subscriptions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Opens a session; it lasts as long as the returned guard.
    pub fn open(self: &Arc<Self>) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_sessions().insert(id, SessionEntry::default());
        SessionGuard {
            id,
            sessions: self.clone(),
        }
    }

    /// Records the peer of a session that can receive unsolicited notifications.
    pub fn attach_peer(&self, id: SessionId, peer: Peer<RoleServer>) {
        if let Some(entry) = self.lock_sessions().get_mut(&id) {
            entry.peer = Some(peer);
        }
    }

    /// Peers of every session that can receive notifications now.
    pub fn peers(&self) -> Vec<Peer<RoleServer>> {
        self.lock_sessions()
            .values()
            .filter_map(|entry| entry.peer.clone())
            .collect()
    }

    /// Records a resource subscription; returns whether this session was not yet subscribed.
    pub fn subscribe(&self, id: SessionId, uri: &str) -> bool {
        self.lock_sessions()
            .get_mut(&id)
            .is_some_and(|entry| entry.subscriptions.insert(uri.to_owned()))
    }

    /// Removes a resource subscription; returns whether this session was subscribed.
    pub fn unsubscribe(&self, id: SessionId, uri: &str) -> bool {
        self.lock_sessions()
            .get_mut(&id)
            .is_some_and(|entry| entry.subscriptions.remove(uri))
    }

    /// Peers of the sessions subscribed to a client-visible URI.
    pub fn subscribers(&self, uri: &str) -> Vec<Peer<RoleServer>> {
        self.lock_sessions()
            .values()
            .filter(|e| e.subscriptions.contains(uri))
            .filter_map(|e| e.peer.clone())
            .collect()
    }

    /// How many relayed requests are waiting for an upstream's answer.
    pub fn inflight_count(&self) -> usize {
        self.lock_inflight().len()
    }

    /// Registers a request relayed to `server` on behalf of `session`. Done before the request
    /// is sent: the upstream may ask the client something (elicitation, sampling) before the
    /// send has returned, and that request must find this call.
    pub fn register_call(
        self: &Arc<Self>,
        server: Arc<str>,
        session: SessionId,
        client_token: Option<ProgressToken>,
        back: mpsc::Sender<BackMessage>,
    ) -> InflightGuard {
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_inflight().insert(
            key,
            InflightCall {
                server,
                session,
                upstream_token: None,
                client_token,
                back,
            },
        );
        InflightGuard {
            key,
            sessions: self.clone(),
        }
    }

    /// Records the progress token of the upstream request for call `key`. The upstream
    /// transport calls this as the request goes out, before any answer or progress for it can
    /// arrive; rmcp chooses the token inside its send.
    pub fn bind_upstream_token(&self, key: CallKey, token: ProgressToken) {
        if let Some(call) = self.lock_inflight().get_mut(&key.0) {
            call.upstream_token = Some(token);
        }
    }

    /// Where a progress notification from `server` goes: the call that owns the token, with the
    /// client's own token to put back in its place. None if the client asked for no progress.
    pub fn route_progress(
        &self,
        server: &str,
        upstream_token: &ProgressToken,
    ) -> Option<(mpsc::Sender<BackMessage>, ProgressToken)> {
        self.lock_inflight().values().find_map(|call| {
            (&*call.server == server && call.upstream_token.as_ref() == Some(upstream_token))
                .then(|| Some((call.back.clone(), call.client_token.clone()?)))
                .flatten()
        })
    }

    /// Routes a progress notification from `server` to the call that owns its token, with the
    /// client's own token put back. Dropped when the client asked for no progress, or when the
    /// client is not reading (a full channel must not stall the upstream connection).
    pub fn deliver_progress(&self, server: &str, mut params: ProgressNotificationParam) {
        if let Some((back, client_token)) = self.route_progress(server, &params.progress_token) {
            params.progress_token = client_token;
            let _ = back.try_send(BackMessage::Notification(
                ServerNotification::ProgressNotification(Notification::new(params)),
            ));
        }
    }

    /// Routes a notification from `server` that names no request (a log line) to the one
    /// session with calls in flight on that server; dropped when there is none or several.
    pub fn deliver_unattributed(&self, server: &str, notification: ServerNotification) {
        match self.route_unattributed(server) {
            Ok(back) => {
                let _ = back.try_send(BackMessage::Notification(notification));
            }
            Err(e) => tracing::debug!(server, error = %e, "dropped an upstream notification"),
        }
    }

    /// The back channel for a message from `server` that names no request: the one session with
    /// calls in flight on that server, or an error saying why none can be chosen.
    pub fn route_unattributed(
        &self,
        server: &str,
    ) -> Result<mpsc::Sender<BackMessage>, Unroutable> {
        let inflight = self.lock_inflight();
        let mut calls = inflight.values().filter(|c| &*c.server == server);
        let first = calls.next().ok_or(Unroutable::NoCall)?;
        if calls.any(|c| c.session != first.session) {
            return Err(Unroutable::Ambiguous);
        }
        Ok(first.back.clone())
    }
}

/// Why an upstream message could not be routed to a client.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Unroutable {
    #[error("no client request is in flight on this server")]
    NoCall,
    #[error(
        "requests of several client sessions are in flight on this shared server, so the message cannot be attributed to one"
    )]
    Ambiguous,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rmcp::model::{NumberOrString, ProgressToken};
    use tokio::sync::mpsc;

    use super::Sessions;

    #[test]
    fn a_call_is_found_before_its_request_has_gone_out() {
        let sessions = Arc::new(Sessions::default());
        let (back, _rx) = mpsc::channel(1);
        let client_token = ProgressToken(NumberOrString::Number(7));
        let upstream_token = ProgressToken(NumberOrString::Number(1));
        let call = sessions.register_call("s".into(), 1, Some(client_token.clone()), back);

        // An elicitation the upstream sends before the send has returned reaches the client.
        assert!(sessions.route_unattributed("s").is_ok());
        assert!(sessions.route_unattributed("other").is_err());
        // Progress is matched by the upstream token, once it is known.
        assert!(sessions.route_progress("s", &upstream_token).is_none());
        sessions.bind_upstream_token(call.key(), upstream_token.clone());
        let (_, token) = sessions.route_progress("s", &upstream_token).unwrap();
        assert_eq!(token, client_token);

        drop(call);
        assert!(sessions.route_unattributed("s").is_err());
    }
}
