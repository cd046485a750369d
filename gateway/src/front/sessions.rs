//! Sessions of legacy-era HTTP clients: rmcp's local session manager, with a cap on how many
//! are open and a refusal of request ids already in flight.
//!
//! rmcp creates a session for every `initialize` and keeps it until the client deletes it or it
//! sits idle for `listen.session_idle_secs`; without a cap, a client that only initializes grows
//! the gateway's memory without bound. And rmcp routes answers within a session by request id:
//! a second request that reuses the id of one still in flight takes over its route, so one of
//! the two never gets an answer. Both are refused here.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use futures::{Stream, StreamExt as _};
use rmcp::{
    model::{ClientJsonRpcMessage, ErrorData, RequestId, ServerJsonRpcMessage},
    transport::streamable_http_server::{
        SessionManager,
        session::{
            ServerSseMessage, SessionId,
            local::{LocalSessionManager, LocalSessionManagerError},
        },
    },
};

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// Why there is no room for another session.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Refusal {
    #[error("{0} sessions are open, the most `listen.max_sessions` allows")]
    Full(usize),
    #[error("this client has {0} sessions open, the most `listen.max_sessions_per_client` allows")]
    ClientFull(usize),
}

/// The `initialize` being served in this task: rmcp creates its session inside the request's
/// task, without a way to pass the request along, and answers a refusal with a plain 500.
struct Opening {
    client: String,
    refused: std::cell::Cell<Option<Refusal>>,
}

tokio::task_local! {
    static OPENING: Opening;
}

/// Runs `serve` (the handling of an `initialize`) with `client` as the client any session it
/// creates belongs to. Also returns why the session was refused, if it was.
pub async fn opening<F: Future>(client: String, serve: F) -> (F::Output, Option<Refusal>) {
    let opening = Opening {
        client,
        refused: std::cell::Cell::new(None),
    };
    OPENING
        .scope(opening, async {
            let output = serve.await;
            (output, OPENING.with(|o| o.refused.get()))
        })
        .await
}

/// The request ids in flight in each session.
type InFlight = Arc<Mutex<HashMap<SessionId, HashSet<RequestId>>>>;

pub struct Sessions {
    local: LocalSessionManager,
    max: usize,
    max_per_client: usize,
    /// Held while a session is created, so that two creations cannot both see room for one.
    creating: tokio::sync::Mutex<()>,
    in_flight: InFlight,
    owners: Mutex<Owners>,
    refusals: Mutex<Refusals>,
}

/// How often refused `initialize`s are logged, at most.
const REFUSAL_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct Refusals {
    count: u64,
    reported: Option<std::time::Instant>,
}

/// Which client opened each session.
type Owners = HashMap<SessionId, String>;

impl Sessions {
    pub fn new(max: usize, max_per_client: usize, idle: std::time::Duration) -> Self {
        let mut local = LocalSessionManager::default();
        local.session_config.keep_alive = Some(idle);
        Self {
            local,
            max,
            max_per_client,
            creating: tokio::sync::Mutex::new(()),
            in_flight: InFlight::default(),
            owners: Mutex::default(),
            refusals: Mutex::default(),
        }
    }

    /// How many sessions are open.
    pub async fn open(&self) -> usize {
        self.local.sessions.read().await.len()
    }

    /// Whether `client` (when known) may open a session now.
    async fn room_for(&self, client: Option<&str>) -> Result<(), Refusal> {
        let open = self.open().await;
        if open >= self.max {
            return Err(Refusal::Full(open));
        }
        if let Some(client) = client {
            let mine = self.lock_owners().values().filter(|c| *c == client).count();
            if mine >= self.max_per_client {
                return Err(Refusal::ClientFull(mine));
            }
        }
        Ok(())
    }

    /// Counts a refused `initialize`. Returns how many were refused since the last report when
    /// one is due (at most one a minute), so a flood of them is one log line, not thousands.
    pub fn refused(&self) -> Option<u64> {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.count += 1;
        let due = refusals
            .reported
            .is_none_or(|at| at.elapsed() >= REFUSAL_REPORT_INTERVAL);
        due.then(|| {
            refusals.reported = Some(std::time::Instant::now());
            std::mem::take(&mut refusals.count)
        })
    }

    /// The client that opened session `id`, while it is open, when that is not `client`.
    pub fn other_owner(&self, id: &str, client: &str) -> Option<String> {
        self.lock_owners()
            .get(id)
            .filter(|owner| *owner != client)
            .cloned()
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a request id out of its session's in-flight set once the request's answer stream has
/// ended. A stream dropped before its end (the client went away) leaves the id taken until the
/// session ends: the request may still be running, and its answer would go to a new request
/// with the same id. A client may not reuse an id within a session anyway.
struct Release {
    in_flight: InFlight,
    session: SessionId,
    id: RequestId,
    ended: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.ended {
            return;
        }
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(ids) = in_flight.get_mut(&self.session) {
            ids.remove(&self.id);
            if ids.is_empty() {
                in_flight.remove(&self.session);
            }
        }
    }
}

impl SessionManager for Sessions {
    type Error = SessionsError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        // Checked and counted under one lock, so that `initialize`s sent all at once cannot each
        // find the last room.
        let _creating = self.creating.lock().await;
        let client = OPENING.try_with(|o| o.client.clone()).ok();
        if let Err(refusal) = self.room_for(client.as_deref()).await {
            let _ = OPENING.try_with(|o| o.refused.set(Some(refusal)));
            return Err(refusal.into());
        }
        let (id, transport) = self.local.create_session().await?;
        if let Some(client) = client {
            self.lock_owners().insert(id.clone(), client);
        }
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.local.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.local.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.local.close_session(id).await;
        self.lock_owners().remove(id);
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(closed?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // rmcp streams only requests; anything else passes as it is.
        let mut release = match &message {
            ClientJsonRpcMessage::Request(request) => {
                let request_id = request.id.clone();
                let fresh = self
                    .in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(id.clone())
                    .or_default()
                    .insert(request_id.clone());
                if !fresh {
                    tracing::info!(session = %id, id = %request_id,
                        "request refused: its id is already in flight in this session");
                    let refusal = ServerJsonRpcMessage::error(
                        ErrorData::invalid_request(
                            format!(
                                "Invalid Request: id {request_id} is already in use by a request \
                                 in flight in this session"
                            ),
                            None,
                        ),
                        Some(request_id),
                    );
                    return Ok(futures::stream::once(std::future::ready(
                        ServerSseMessage::from_message(refusal),
                    ))
                    .right_stream());
                }
                Some(Release {
                    in_flight: self.in_flight.clone(),
                    session: id.clone(),
                    id: request_id,
                    ended: false,
                })
            }
            _ => None,
        };
        let stream = match self.local.create_stream(id, message).await {
            Ok(stream) => stream,
            Err(e) => {
                // The request never reached the session: its id is free again.
                if let Some(release) = &mut release {
                    release.ended = true;
                }
                return Err(e.into());
            }
        };
        Ok(futures::stream::unfold(
            (Box::pin(stream), release),
            |(mut stream, mut release)| async move {
                match stream.next().await {
                    Some(event) => Some((event, (stream, release))),
                    None => {
                        if let Some(release) = &mut release {
                            release.ended = true;
                        }
                        None
                    }
                }
            },
        )
        .left_stream())
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.local.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.local.resume(id, last_event_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::Sessions;

    #[test]
    fn a_flood_of_refusals_is_reported_once_with_its_count() {
        let sessions = Sessions::new(1, 1, std::time::Duration::from_secs(60));
        assert_eq!(sessions.refused(), Some(1));
        for _ in 0..1000 {
            assert_eq!(sessions.refused(), None);
        }
    }
}
