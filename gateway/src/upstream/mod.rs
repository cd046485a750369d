//! Upstream MCP servers: connecting, supervising, and caching what each one offers.
//!
//! One [`Upstream`] per registered server. Its supervisor task connects (starting the process of a
//! stdio server through a [`launch::ProcessLauncher`], or opening a Streamable HTTP session),
//! negotiates the protocol era with that server alone (`server/discover`, falling back to
//! `initialize`), loads its catalog, and reconnects with exponential backoff when the connection
//! ends. While it is down its catalog is empty, so its tools disappear from every list, and calls
//! to it fail at once with a clear error instead of waiting.

pub mod client;
pub mod launch;
pub mod legacy_sse;
pub mod tap;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use keys::definitions::{DefinitionState, DefinitionStore};
use rmcp::{
    Peer, RoleClient,
    model::{
        Prompt, ProtocolVersion, Resource, ResourceTemplate, ServerCapabilities,
        ServerNotification, ServerPeerInfo, SubscribeRequestParams, SubscriptionFilter, Tool,
        UnsubscribeRequestParams,
    },
    service::{ClientLifecycleMode, ClientServiceExt, RunningService, ServiceError, Subscription},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use secrecy::ExposeSecret;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use self::{
    client::{ListKind, UpstreamClient},
    launch::ProcessLauncher,
};
use crate::{
    config::SessionMode,
    config::{HttpSpec, ServerSpec, TransportSpec},
    naming::Naming,
    session::{SessionId, Sessions},
};

/// What an upstream offers, as it last reported it.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub tools: Vec<Tool>,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
    pub prompts: Vec<Prompt>,
    pub info: Option<ServerPeerInfo>,
    /// The trust state of each tool's current definition, by upstream tool name.
    pub states: std::collections::HashMap<String, ToolTrust>,
}

impl Catalog {
    pub fn capabilities(&self) -> Option<&ServerCapabilities> {
        self.info.as_ref().map(|i| &i.capabilities)
    }
}

/// What the gateway concluded about one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolTrust {
    /// Trust on first use of the definition.
    pub definition: DefinitionState,
    pub signature: SignatureCheck,
    /// The definition hash (`verifier::definition_hash`) of the definition this is about.
    pub hash: String,
    /// Where the definition is in the catalog's `tools`, so a call finds it without a search.
    pub position: usize,
}

/// The outcome of checking a tool's SchemaPin signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Signed by the configured key, which is (now) pinned for the tool.
    Verified,
    /// No signature in the tool's `_meta`.
    Unsigned,
    /// Signed, but no key is configured to check it with.
    NoKey,
    /// The signature does not verify, or a different key is pinned for the tool.
    Rejected(String),
}

impl ToolTrust {
    /// The state as the design names it: verified, pinned, quarantined, rejected or unsigned.
    pub fn state(&self) -> &'static str {
        match (&self.signature, self.definition) {
            (SignatureCheck::Rejected(_), _) => "rejected",
            (_, DefinitionState::Quarantined) => "quarantined",
            (_, DefinitionState::Rejected | DefinitionState::Superseded) => "rejected",
            (SignatureCheck::Verified, DefinitionState::Pinned) => "verified",
            (_, DefinitionState::Pinned) => "pinned",
        }
    }
}

/// The key a server's signatures are checked with, for one evaluation of its catalog.
enum PublisherKey {
    /// No key configured or discoverable: signed tools are `NoKey`.
    None,
    Known {
        key: p256::ecdsa::VerifyingKey,
        /// Revoked fingerprints.
        revoked: std::collections::BTreeSet<String>,
    },
    /// Discovery or revocation failed: signed tools are refused with this reason.
    Unavailable(String),
}

/// The connection state of an upstream, as shown in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamState {
    Disabled,
    Connecting,
    Ready,
    /// Stopped after `idle_suspend_secs` without a request; the next request starts it.
    Suspended,
    /// The last attempt failed; the supervisor retries after a backoff.
    Failed(String),
    /// Stopped for good: the gateway is shutting down, and the server's process (if any) has
    /// been killed.
    Terminated,
}

/// A change to the combined catalog that clients must hear about.
#[derive(Debug, Clone, Copy)]
pub struct CatalogChange {
    pub tools: bool,
    pub resources: bool,
    pub prompts: bool,
}

impl CatalogChange {
    const ALL: Self = Self {
        tools: true,
        resources: true,
        prompts: true,
    };

    fn of(kind: ListKind) -> Self {
        Self {
            tools: kind == ListKind::Tools,
            resources: kind == ListKind::Resources,
            prompts: kind == ListKind::Prompts,
        }
    }
}

/// Why a request could not be relayed to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("server `{server}` is not available: {state}")]
    Unavailable { server: String, state: String },
    #[error("server `{server}` did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("server `{server}` closed the connection before answering")]
    Closed { server: String },
    #[error("server `{server}` failed: {}", plain_service_error(.source))]
    Service {
        server: String,
        // Boxed: the error is large and travels in every upstream `Result`.
        #[source]
        source: Box<ServiceError>,
    },
}

/// What went wrong with a request, as a client or an operator should read it: rmcp's transport
/// errors name the transport's Rust type (`Transport [gateway::upstream::tap::...] error: HTTP
/// 500`), which says nothing to either, so only the underlying error is kept.
fn plain_service_error(error: &ServiceError) -> String {
    match error {
        ServiceError::TransportSend(e) => e.error.to_string(),
        other => other.to_string(),
    }
}

/// [`plain_service_error`] for the errors of a connection's start.
fn plain_init_error(error: &rmcp::service::ClientInitializeError) -> String {
    match error {
        rmcp::service::ClientInitializeError::TransportError { error, context } => {
            format!("{} ({context})", error.error)
        }
        other => other.to_string(),
    }
}

/// A server started for one call, in a sandbox of its own; [`PerCall::close`] ends it.
pub struct PerCall {
    connection: Connection,
    report: Option<Arc<launch::SandboxReport>>,
}

impl PerCall {
    pub fn peer(&self) -> Peer<RoleClient> {
        self.connection.peer().clone()
    }

    /// What the per-call sandbox's runner reports.
    pub fn report(&self) -> Option<Arc<launch::SandboxReport>> {
        self.report.clone()
    }

    /// Ends the server: its stdin closes, and the sandbox and everything in it is gone.
    pub async fn close(self) {
        let _ = self.connection.cancel().await;
    }
}

/// One registered upstream server.
pub struct Upstream {
    pub spec: ServerSpec,
    pub name: Arc<str>,
    state: tokio::sync::watch::Sender<UpstreamState>,
    peer: RwLock<Option<Peer<RoleClient>>>,
    catalog: RwLock<Arc<Catalog>>,
    /// The isolation tier asked for and the one in use.
    tier: RwLock<(&'static str, &'static str)>,
    pid: RwLock<Option<u32>>,
    /// What the shared connection's sandbox reports (stdio servers).
    sandbox: RwLock<Option<Arc<launch::SandboxReport>>>,
    /// Upstream resource URIs some client is subscribed to, with how many subscriptions each.
    wanted: Mutex<BTreeMap<String, usize>>,
    /// Wakes the supervisor when `wanted` changes, for upstreams that take subscriptions
    /// through `subscriptions/listen`.
    wanted_changed: tokio::sync::Notify,
    /// What the supervisor was started with; per-client connections are made the same way.
    context: std::sync::OnceLock<SupervisorContext>,
    /// In `per-client` mode, the connection of each client session that has used this server.
    per_client: tokio::sync::Mutex<std::collections::HashMap<SessionId, Connection>>,
    /// Slots for requests in flight, when the server has `max_concurrent`.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    /// Requests in flight, and when the last one began or ended: what idle suspension reads.
    /// Atomics, as every request touches them.
    in_flight: std::sync::atomic::AtomicUsize,
    last_used: crate::clock::Stamp,
    /// Wakes a suspended server's supervisor.
    wake: tokio::sync::Notify,
}

/// A request in flight on an upstream; dropping it ends it.
pub struct InFlight<'a> {
    upstream: &'a Upstream,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.upstream.last_used.touch();
        self.upstream
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Everything an upstream's supervisor needs from the gateway.
#[derive(Clone)]
pub struct SupervisorContext {
    pub launcher: Arc<dyn ProcessLauncher>,
    pub sessions: Arc<Sessions>,
    pub naming: Naming,
    pub changes: broadcast::Sender<CatalogChange>,
    pub connect_timeout: Duration,
    pub definitions: DefinitionStore,
    pub pins: keys::pins::PinStore,
    pub revocations: keys::revocations::RevocationStore,
    pub bundles: Vec<Arc<keys::bundle::TrustBundle>>,
    /// Fetches `.well-known/schemapin.json`; `None` if the HTTP client could not be built, in
    /// which case servers that need discovery have their signed tools refused.
    pub discovery: Option<keys::discovery::DiscoveryClient>,
    /// How often a key found by discovery is fetched again, with its revocations.
    pub revocation_recheck: Duration,
    pub health_interval: Option<Duration>,
    pub health_timeout: Duration,
    pub shutdown: CancellationToken,
    /// Where changes of a tool's trust state are recorded.
    pub audit: Option<crate::audit::AuditLog>,
}

type Connection = RunningService<RoleClient, UpstreamClient>;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often tools waiting for a person's decision are looked up again.
const DEFINITION_RECHECK: Duration = Duration::from_secs(2);

/// A connection that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

impl Upstream {
    pub fn new(spec: ServerSpec) -> Arc<Self> {
        let state = if spec.enabled {
            UpstreamState::Connecting
        } else {
            UpstreamState::Disabled
        };
        Arc::new(Self {
            name: spec.name.as_str().into(),
            state: tokio::sync::watch::Sender::new(state),
            peer: RwLock::new(None),
            catalog: RwLock::new(Arc::default()),
            tier: RwLock::new(("none", "none")),
            pid: RwLock::new(None),
            sandbox: RwLock::new(None),
            wanted: Mutex::new(BTreeMap::new()),
            wanted_changed: tokio::sync::Notify::new(),
            context: std::sync::OnceLock::new(),
            per_client: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            slots: spec
                .max_concurrent
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_used: crate::clock::Stamp::new(),
            wake: tokio::sync::Notify::new(),
            spec,
        })
    }

    /// Puts `catalog` in place as if the server had listed it, for tests and benchmarks of what
    /// is built on catalogs.
    #[doc(hidden)]
    pub fn set_catalog(&self, catalog: Catalog) {
        *write(&self.catalog) = Arc::new(catalog);
    }

    /// Counts a request in flight until the returned guard drops.
    pub fn begin_request(&self) -> InFlight<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.last_used.touch();
        InFlight { upstream: self }
    }

    /// The server's lifecycle state by name: `initializing`, `ready`, `running` (requests in
    /// flight), `suspended`, `failed: REASON`, or `disabled`.
    pub fn lifecycle(&self) -> String {
        match self.state() {
            UpstreamState::Disabled => "disabled".to_owned(),
            UpstreamState::Connecting => "initializing".to_owned(),
            UpstreamState::Ready if self.requests_in_flight() > 0 => "running".to_owned(),
            UpstreamState::Ready => "ready".to_owned(),
            UpstreamState::Suspended => "suspended".to_owned(),
            UpstreamState::Failed(reason) => format!("failed: {reason}"),
            UpstreamState::Terminated => "terminated".to_owned(),
        }
    }

    /// Requests in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a suspended server again and waits until it is ready (or failed), within
    /// `limit`; returns at once for a server that is not suspended.
    pub async fn resume(&self, limit: Duration) {
        // Only a server with `idle_suspend_secs` or `lazy` is ever suspended: others skip even
        // the look.
        if (self.spec.idle_suspend.is_none() && !self.spec.lazy)
            || *self.state.borrow() != UpstreamState::Suspended
        {
            return;
        }
        let mut rx = self.state.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(
            limit,
            rx.wait_for(|s| matches!(s, UpstreamState::Ready | UpstreamState::Failed(_))),
        )
        .await;
    }

    /// The request slots of a server with `max_concurrent`.
    pub fn slots(&self) -> Option<&Arc<tokio::sync::Semaphore>> {
        self.slots.as_ref()
    }

    /// The state, as it changes.
    pub fn watch_state(&self) -> tokio::sync::watch::Receiver<UpstreamState> {
        self.state.subscribe()
    }

    pub fn state(&self) -> UpstreamState {
        self.state.borrow().clone()
    }

    /// Waits until the upstream is connected (returns at once for a disabled one).
    pub async fn wait_ready(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx
            .wait_for(|s| {
                matches!(
                    s,
                    UpstreamState::Ready | UpstreamState::Disabled | UpstreamState::Suspended
                )
            })
            .await;
    }

    /// Waits until the upstream's attempt to connect has settled: it is connected, or the attempt
    /// failed (the supervisor retries after a backoff, and clients hear of the server's tools
    /// when it comes up). Returns at once for a disabled one.
    pub async fn wait_settled(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx
            .wait_for(|s| !matches!(s, UpstreamState::Connecting))
            .await;
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.catalog).clone()
    }

    /// The isolation tier of the current process ("none" for remote servers).
    pub fn tier(&self) -> &'static str {
        read(&self.tier).1
    }

    /// The isolation tier the server's config asks for ("none" for remote servers).
    pub fn tier_requested(&self) -> &'static str {
        read(&self.tier).0
    }

    /// What the sandbox of the shared connection reports, for the records of the calls it
    /// serves: none for remote servers, and for servers with a process per client session.
    pub fn sandbox(&self) -> Option<Arc<launch::SandboxReport>> {
        if self.spec.sessions == crate::config::SessionMode::PerClient {
            return None;
        }
        read(&self.sandbox).clone()
    }

    /// The process id of a running stdio server.
    pub fn pid(&self) -> Option<u32> {
        *read(&self.pid)
    }

    /// The connected peer, or an error saying why there is none.
    pub fn peer(&self) -> Result<Peer<RoleClient>, UpstreamError> {
        read(&self.peer)
            .clone()
            .ok_or_else(|| UpstreamError::Unavailable {
                server: self.spec.name.clone(),
                state: match self.state() {
                    UpstreamState::Disabled => "disabled".to_owned(),
                    UpstreamState::Connecting | UpstreamState::Ready => "connecting".to_owned(),
                    UpstreamState::Suspended => "suspended".to_owned(),
                    UpstreamState::Failed(reason) => reason,
                    UpstreamState::Terminated => "the gateway is shutting down".to_owned(),
                },
            })
    }

    /// The peer a client session's request goes to: its own connection for a `per-client`
    /// server and a session-holding (legacy-era) client, the shared connection otherwise.
    /// 2026-07-28 clients are stateless, so they always use the shared connection: a
    /// connection per request would lose any state the server keeps between rounds.
    pub async fn peer_for(
        &self,
        session: SessionId,
        dedicated: bool,
    ) -> Result<Peer<RoleClient>, UpstreamError> {
        let shared = self.peer()?;
        if self.spec.sessions != SessionMode::PerClient || !dedicated {
            return Ok(shared);
        }
        let mut connections = self.per_client.lock().await;
        if let Some(connection) = connections.get(&session) {
            // A connection whose server went away ends its service loop, which closes the
            // peer's channel; the session's next request starts a new one.
            if !connection.is_closed() && !connection.peer().is_transport_closed() {
                return Ok(connection.peer().clone());
            }
            tracing::info!(server = %self.name, session, "a per-client upstream session ended; starting another");
            connections.remove(&session);
        }
        // Boxed: starting a connection is a large future, and every call's future would
        // otherwise make room for it, though only a client's first call of a `per-client`
        // server starts one.
        let (connection, _) = Box::pin(self.open_connection()).await?;
        let peer = connection.peer().clone();
        connections.insert(session, connection);
        tracing::info!(server = %self.name, session, "opened a per-client upstream session");
        Ok(peer)
    }

    /// A fresh connection that serves requests only (list changes are followed on the shared
    /// connection): a new process, in a new sandbox, for a stdio server.
    async fn open_connection(
        &self,
    ) -> Result<(Connection, Option<Arc<launch::SandboxReport>>), UpstreamError> {
        let cx = self
            .context
            .get()
            .ok_or_else(|| UpstreamError::Unavailable {
                server: self.spec.name.clone(),
                state: "not started".to_owned(),
            })?;
        let (list_changes, _) = mpsc::unbounded_channel();
        let handler = UpstreamClient {
            server: self.name.clone(),
            sessions: cx.sessions.clone(),
            naming: cx.naming.clone(),
            list_changes,
        };
        let opened = tokio::time::timeout(cx.connect_timeout, self.connect(handler, cx, false))
            .await
            .map_err(|_| UpstreamError::Timeout {
                server: self.spec.name.clone(),
                timeout: cx.connect_timeout,
            })?
            .map_err(|state| UpstreamError::Unavailable {
                server: self.spec.name.clone(),
                state,
            })?;
        Ok(opened)
    }

    /// Starts a sandbox for one call of `tool` (`@sandbox("per-call")`): a new server process,
    /// initialized, whose definition of `tool` must be the one verified on the warm connection
    /// (`expected_hash`); anything else is refused before the call is sent.
    pub async fn per_call(
        &self,
        tool: &str,
        expected_hash: &str,
    ) -> Result<PerCall, UpstreamError> {
        let (connection, report) = self.open_connection().await?;
        let tools = connection.peer().list_all_tools().await;
        let definition = tools.ok().and_then(|tools| {
            let tool = tools.into_iter().find(|t| t.name == tool)?;
            let json = serde_json::to_string(&tool).ok()?;
            verifier::definition_hash(&json).ok()
        });
        if definition.as_deref() != Some(expected_hash) || expected_hash.is_empty() {
            let _ = connection.cancel().await;
            return Err(UpstreamError::Unavailable {
                server: self.spec.name.clone(),
                state: format!(
                    "the per-call sandbox's `{tool}` is not the verified definition; the call was not sent"
                ),
            });
        }
        Ok(PerCall { connection, report })
    }

    /// Closes the per-client connection of a session that ended (its process is killed).
    pub async fn close_session(&self, session: SessionId) {
        let connection = self.per_client.lock().await.remove(&session);
        if let Some(connection) = connection {
            let _ = connection.cancel().await;
            tracing::info!(server = %self.name, session, "closed a per-client upstream session");
        }
    }

    /// How many per-client connections are open.
    pub async fn per_client_count(&self) -> usize {
        self.per_client.lock().await.len()
    }

    /// Whether the connected upstream speaks the 2026-07-28 era (subscriptions through
    /// `subscriptions/listen` rather than `resources/subscribe`).
    fn is_modern(&self) -> bool {
        self.catalog()
            .info
            .as_ref()
            .is_some_and(|i| is_modern(&i.protocol_version))
    }

    /// Adds a subscription to an upstream resource. The first subscription to a URI subscribes
    /// upstream, in whichever way the upstream's era does it.
    pub async fn want(&self, uri: &str) -> Result<(), UpstreamError> {
        let first = {
            let mut wanted = lock(&self.wanted);
            let count = wanted.entry(uri.to_owned()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if !first {
            return Ok(());
        }
        if self.is_modern() {
            self.wanted_changed.notify_one();
            return Ok(());
        }
        let result = self.legacy_subscribe(uri).await;
        if result.is_err() {
            self.release(uri);
        }
        result
    }

    /// Removes a subscription added by [`Self::want`]; the last one unsubscribes upstream.
    pub async fn unwant(&self, uri: &str) {
        if !self.release(uri) {
            return;
        }
        if self.is_modern() {
            self.wanted_changed.notify_one();
        } else if let Ok(peer) = self.peer() {
            #[expect(
                deprecated,
                reason = "resources/unsubscribe is how legacy-era servers unsubscribe"
            )]
            let result = peer.unsubscribe(UnsubscribeRequestParams::new(uri)).await;
            if let Err(e) = result {
                tracing::debug!(server = %self.name, uri, error = %e, "upstream refused resources/unsubscribe");
            }
        }
    }

    /// Drops one subscription count; returns whether it was the last.
    fn release(&self, uri: &str) -> bool {
        let mut wanted = lock(&self.wanted);
        match wanted.get_mut(uri) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                wanted.remove(uri);
                true
            }
            None => false,
        }
    }

    async fn legacy_subscribe(&self, uri: &str) -> Result<(), UpstreamError> {
        let peer = self.peer()?;
        #[expect(
            deprecated,
            reason = "resources/subscribe is how legacy-era servers subscribe"
        )]
        let request = peer.subscribe(SubscribeRequestParams::new(uri));
        match tokio::time::timeout(self.spec.call_timeout, request).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(UpstreamError::Service {
                server: self.spec.name.clone(),
                source: Box::new(source),
            }),
            Err(_) => Err(UpstreamError::Timeout {
                server: self.spec.name.clone(),
                timeout: self.spec.call_timeout,
            }),
        }
    }

    fn set_state(&self, state: UpstreamState) {
        self.state.send_replace(state);
    }

    /// Runs the supervisor until shutdown: connect, serve, reconnect with backoff. Then the
    /// server is `terminated` (its process stopped by then).
    pub async fn supervise(self: Arc<Self>, cx: SupervisorContext) {
        if !self.spec.enabled {
            return;
        }
        self.clone().supervise_until_shutdown(cx).await;
        *write(&self.peer) = None;
        self.set_state(UpstreamState::Terminated);
    }

    async fn supervise_until_shutdown(self: Arc<Self>, cx: SupervisorContext) {
        let _ = self.context.set(cx.clone());
        let mut backoff = BACKOFF_START;
        // A lazy server is stopped as soon as its catalog is first loaded.
        let mut discovering = self.spec.lazy;
        loop {
            self.set_state(UpstreamState::Connecting);
            let (list_tx, mut list_rx) = mpsc::unbounded_channel();
            let handler = UpstreamClient {
                server: self.name.clone(),
                sessions: cx.sessions.clone(),
                naming: cx.naming.clone(),
                list_changes: list_tx,
            };
            let attempt = tokio::select! {
                _ = cx.shutdown.cancelled() => return,
                attempt = tokio::time::timeout(cx.connect_timeout, self.connect(handler, &cx, true)) => attempt,
            };
            match attempt {
                Ok(Ok((connection, _))) => {
                    let started = Instant::now();
                    let suspended = self.serve(connection, &mut list_rx, &cx, discovering).await;
                    discovering = false;
                    if cx.shutdown.is_cancelled() {
                        return;
                    }
                    if suspended {
                        // Idle: stay stopped until a request arrives, then start at once.
                        tokio::select! {
                            _ = cx.shutdown.cancelled() => return,
                            _ = self.wake.notified() => {}
                        }
                        backoff = BACKOFF_START;
                        continue;
                    }
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = BACKOFF_START;
                    }
                    self.set_state(UpstreamState::Failed("connection closed".to_owned()));
                }
                Ok(Err(reason)) => {
                    tracing::warn!(server = %self.name, error = %reason, "cannot connect to upstream");
                    self.set_state(UpstreamState::Failed(reason));
                }
                Err(_) => {
                    let reason = format!("did not initialize within {:?}", cx.connect_timeout);
                    tracing::warn!(server = %self.name, error = %reason, "cannot connect to upstream");
                    self.set_state(UpstreamState::Failed(reason));
                }
            }
            tokio::select! {
                _ = cx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Starts the process or opens the HTTP session, and negotiates the protocol.
    async fn connect(
        &self,
        handler: UpstreamClient,
        cx: &SupervisorContext,
        shared: bool,
    ) -> Result<(Connection, Option<Arc<launch::SandboxReport>>), String> {
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        };
        let result = match &self.spec.transport {
            TransportSpec::Stdio(spec) => {
                let launched = cx
                    .launcher
                    .launch(&self.spec.name, spec, cx.audit.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                *write(&self.tier) = (launched.tier_requested.as_str(), launched.tier.as_str());
                if shared {
                    // Status reports the shared connection's process, and outcome records
                    // its sandbox.
                    *write(&self.pid) = launched.pid;
                    *write(&self.sandbox) = Some(launched.report.clone());
                }
                let report = launched.report;
                tracing::info!(server = %self.name, pid = ?launched.pid, tier = %launched.tier, start_us = launched.start_us, "started upstream process");
                let transport = tap::NotificationTap::new(
                    launched.transport,
                    self.name.clone(),
                    cx.sessions.clone(),
                );
                return handler
                    .serve_with_lifecycle(transport, lifecycle)
                    .await
                    .map(|connection| (connection, Some(report)))
                    .map_err(|e| format!("initialization failed: {}", plain_init_error(&e)));
            }
            TransportSpec::Http(spec) if spec.legacy_sse => {
                let sse = legacy_sse::LegacySseTransport::connect(
                    http_client()?,
                    &spec.url,
                    http_headers(spec)?,
                )
                .await
                .map_err(|e| e.to_string())?;
                let transport =
                    tap::NotificationTap::new(sse, self.name.clone(), cx.sessions.clone());
                // A 2024-11-05 server knows only `initialize`; probing it with `server/discover`
                // first would only cost a round trip.
                handler
                    .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
                    .await
            }
            TransportSpec::Http(spec) => {
                let transport = tap::NotificationTap::new(
                    http_transport(spec)?,
                    self.name.clone(),
                    cx.sessions.clone(),
                );
                handler.serve_with_lifecycle(transport, lifecycle).await
            }
        };
        result
            .map(|connection| (connection, None))
            .map_err(|e| format!("initialization failed: {}", plain_init_error(&e)))
    }

    /// Serves one connection until it ends or the gateway shuts down.
    async fn serve(
        &self,
        connection: Connection,
        list_rx: &mut mpsc::UnboundedReceiver<ListKind>,
        cx: &SupervisorContext,
        discovering: bool,
    ) -> bool {
        let peer = connection.peer().clone();
        let info = peer.peer_info().map(|info| (*info).clone());
        tracing::info!(
            server = %self.name,
            protocol = ?info.as_ref().map(|i| i.protocol_version.to_string()),
            "upstream connected"
        );
        let mut catalog = Catalog {
            info,
            ..Catalog::default()
        };
        for kind in [ListKind::Tools, ListKind::Resources, ListKind::Prompts] {
            refresh(&self.name, &peer, &mut catalog, kind).await;
        }
        self.evaluate(&mut catalog, cx).await;
        *write(&self.catalog) = Arc::new(catalog);
        *write(&self.peer) = Some(peer.clone());
        self.set_state(UpstreamState::Ready);
        let _ = cx.changes.send(CatalogChange::ALL);

        let modern = self.is_modern();
        // A 2026-07-28 server sends change notifications only on `subscriptions/listen` streams:
        // one for list changes for the life of the connection, and one for the resource
        // subscriptions of the gateway's clients, reopened whenever that set changes. A legacy
        // server sends them unprompted, and takes `resources/subscribe` for resources.
        let mut lists = None;
        let mut resources = None;
        if modern {
            lists = self.listen_lists(&peer).await;
            resources = self.listen_resources(&peer).await;
        } else {
            let uris: Vec<String> = lock(&self.wanted).keys().cloned().collect();
            for uri in uris {
                if let Err(e) = self.legacy_subscribe(&uri).await {
                    tracing::warn!(server = %self.name, uri, error = %e, "cannot renew a resource subscription");
                }
            }
        }

        let ct = connection.cancellation_token();
        let waiting = connection.waiting();
        tokio::pin!(waiting);
        // Approvals and rejections are made by `mcp-gateway tools ...` in another process; a tool
        // waiting for one is looked up again on this interval.
        let mut recheck = tokio::time::interval(DEFINITION_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A revocation made while the gateway runs must take effect without a reconnect.
        let mut revocations_seen = cx.revocations.count().await.ok();
        // So must one its publisher makes: a key found by discovery is fetched again, with its
        // revocation list, on this interval.
        let mut rediscover = self
            .key_from_discovery(cx)
            .then(|| every(cx.revocation_recheck));
        let mut health = cx.health_interval.map(every);
        // Idle this long (without a request in flight), the server is stopped: at once after a
        // lazy server's first catalog load.
        let idle_limit = if discovering {
            Some(Duration::ZERO)
        } else {
            self.spec.idle_suspend
        };
        let mut idle_check =
            idle_limit.map(|idle| every((idle / 2).max(Duration::from_millis(100))));
        let mut suspended = false;
        loop {
            tokio::select! {
                _ = tick(&mut idle_check) => {
                    let idle = idle_limit.unwrap_or(Duration::MAX);
                    if self.requests_in_flight() == 0 && self.last_used.elapsed() >= idle {
                        tracing::info!(server = %self.name, "idle: stopping the server until the next request");
                        // Requests from here on wake the supervisor instead of using this peer.
                        *write(&self.peer) = None;
                        self.set_state(UpstreamState::Suspended);
                        suspended = true;
                        ct.cancel();
                        let _ = waiting.await;
                        break;
                    }
                }
                _ = cx.shutdown.cancelled() => {
                    ct.cancel();
                    let _ = waiting.await;
                    break;
                }
                _ = recheck.tick() => {
                    let current = self.catalog();
                    let revocations_now = cx.revocations.count().await.ok();
                    let revoked_since = revocations_now != revocations_seen;
                    revocations_seen = revocations_now;
                    if revoked_since
                        || current.states.values().any(|s| s.definition != DefinitionState::Pinned)
                    {
                        self.reevaluate(cx).await;
                    }
                }
                _ = tick(&mut rediscover) => {
                    if self.reevaluate(cx).await {
                        tracing::info!(server = %self.name, "the publisher's key or revocations changed the tools' trust");
                    }
                }
                _ = tick(&mut health) => {
                    if let Err(reason) = check_health(&peer, cx.health_timeout).await {
                        tracing::warn!(server = %self.name, reason, "upstream failed its health check; restarting it");
                        ct.cancel();
                        let _ = waiting.await;
                        break;
                    }
                }
                reason = &mut waiting => {
                    tracing::warn!(server = %self.name, reason = ?reason.ok(), "upstream connection ended");
                    break;
                }
                Some(kind) = list_rx.recv() => {
                    // A burst of changes (a server may send thousands) is one re-list of each
                    // list, and one notice to the clients, not one for every change.
                    let mut kinds = vec![kind];
                    while let Ok(more) = list_rx.try_recv() {
                        if !kinds.contains(&more) {
                            kinds.push(more);
                        }
                    }
                    for kind in kinds {
                        self.list_changed(&peer, kind, cx).await;
                    }
                }
                notification = next_notification(&mut lists) => match notification {
                    Some(ServerNotification::ToolListChangedNotification(_)) => {
                        self.list_changed(&peer, ListKind::Tools, cx).await
                    }
                    Some(ServerNotification::PromptListChangedNotification(_)) => {
                        self.list_changed(&peer, ListKind::Prompts, cx).await
                    }
                    Some(ServerNotification::ResourceListChangedNotification(_)) => {
                        self.list_changed(&peer, ListKind::Resources, cx).await
                    }
                    Some(_) => {}
                    None => lists = None,
                },
                notification = next_notification(&mut resources) => match notification {
                    Some(ServerNotification::ResourceUpdatedNotification(mut update)) => {
                        update.params.uri = cx.naming.uri(&self.name, &update.params.uri);
                        cx.sessions.resource_updated(update.params).await;
                    }
                    Some(_) => {}
                    None => resources = None,
                },
                _ = self.wanted_changed.notified(), if modern => {
                    // Dropping the old subscription cancels it upstream.
                    resources = self.listen_resources(&peer).await;
                }
            }
        }
        *write(&self.peer) = None;
        *write(&self.pid) = None;
        if suspended {
            // The tools stay listed; the next request starts the server, and its catalog is
            // loaded and verified again then.
            return true;
        }
        *write(&self.catalog) = Arc::default();
        let _ = cx.changes.send(CatalogChange::ALL);
        false
    }

    /// Decides the trust of the listed tools again (a person's decision, a revocation, the
    /// publisher's key may have changed); clients hear of a change. Returns whether one was.
    async fn reevaluate(&self, cx: &SupervisorContext) -> bool {
        let current = self.catalog();
        let mut catalog = (*current).clone();
        self.evaluate(&mut catalog, cx).await;
        if catalog.states == current.states {
            return false;
        }
        *write(&self.catalog) = Arc::new(catalog);
        let _ = cx.changes.send(CatalogChange::of(ListKind::Tools));
        true
    }

    async fn list_changed(&self, peer: &Peer<RoleClient>, kind: ListKind, cx: &SupervisorContext) {
        let mut catalog = (*self.catalog()).clone();
        refresh(&self.name, peer, &mut catalog, kind).await;
        if kind == ListKind::Tools {
            self.evaluate(&mut catalog, cx).await;
        }
        *write(&self.catalog) = Arc::new(catalog);
        let _ = cx.changes.send(CatalogChange::of(kind));
    }

    /// Decides how far each tool is trusted:
    /// - its definition is recorded, pinned on first use, or quarantined when a known tool's
    ///   definition changed;
    /// - its signature, if any, is checked against the configured key, and that key is pinned
    ///   for the tool and the server's domain after it verifies.
    ///
    /// Anything that cannot be determined (the database is unreachable) counts against the tool:
    /// it is hidden, not served unchecked.
    async fn evaluate(&self, catalog: &mut Catalog, cx: &SupervisorContext) {
        let publisher = self.publisher_key(cx).await;
        let mut states = std::collections::HashMap::new();
        // Every definition is hashed, then all are recorded in one transaction.
        let records: Vec<Option<(String, String)>> = catalog
            .tools
            .iter()
            .map(|tool| {
                let json = serde_json::to_string(tool).ok()?;
                match verifier::definition_hash(&json) {
                    Ok(hash) => Some((hash, json)),
                    Err(e) => {
                        tracing::warn!(server = %self.name, tool = %tool.name, error = %e, "cannot hash a tool definition; hiding the tool");
                        None
                    }
                }
            })
            .collect();
        let items: Vec<(&str, &str, &str)> = catalog
            .tools
            .iter()
            .zip(&records)
            .filter_map(|(tool, record)| {
                record
                    .as_ref()
                    .map(|(hash, json)| (tool.name.as_ref(), hash.as_str(), json.as_str()))
            })
            .collect();
        let mut recorded = match cx.definitions.observe_all(&self.name, &items).await {
            Ok(recorded) => recorded.into_iter(),
            Err(e) => {
                tracing::warn!(server = %self.name, error = %e, "cannot record the tool definitions; hiding the tools");
                Vec::new().into_iter()
            }
        };
        for (position, (tool, record)) in catalog.tools.iter().zip(&records).enumerate() {
            // A tool whose state cannot be determined counts as quarantined: hidden.
            let definition = match record {
                Some(_) => recorded.next().unwrap_or(DefinitionState::Quarantined),
                None => DefinitionState::Quarantined,
            };
            let signature = self.check_signature(tool, &publisher, cx).await;
            let trust = ToolTrust {
                definition,
                signature,
                hash: record
                    .as_ref()
                    .map(|(hash, _)| hash.clone())
                    .unwrap_or_default(),
                position,
            };
            if !self.trusted(&trust) {
                let served = self.spec.verification == crate::config::VerificationMode::Audit;
                tracing::warn!(
                    target: "audit",
                    server = %self.name,
                    tool = %tool.name,
                    state = trust.state(),
                    signature = ?trust.signature,
                    served,
                    "tool not trusted"
                );
            }
            // A tool seen for the first time, or whose state changed, is an audited event:
            // pinned on first use, quarantined, approved, rejected, or signed by a new key.
            let before = catalog.states.get(tool.name.as_ref());
            if before.map(|b| (b.state(), &b.hash)) != Some((trust.state(), &trust.hash))
                && let Some(audit) = &cx.audit
            {
                let record = serde_json::json!({
                    "kind": "tool-state",
                    "time": crate::audit::now_ms(),
                    "server": self.name.as_ref(),
                    "tool": tool.name,
                    "state": trust.state(),
                    "previous": before.map(ToolTrust::state),
                    "definitionHash": trust.hash,
                    "signature": format!("{:?}", trust.signature),
                });
                if let Err(e) = audit.record_nowait(&record) {
                    tracing::error!(error = %e, "cannot record a tool's trust state");
                }
            }
            states.insert(tool.name.to_string(), trust);
        }
        catalog.states = states;
    }

    /// Whether [`Self::publisher_key`] fetches the key from the domain's `.well-known` document
    /// (no trust bundle has the domain and no key is configured).
    fn key_from_discovery(&self, cx: &SupervisorContext) -> bool {
        self.spec.discover
            && self.spec.public_key.is_none()
            && !cx
                .bundles
                .iter()
                .any(|b| b.discovery(&self.spec.domain).is_some())
    }

    /// The key this server's tools must be signed with: the configured one, or the one its
    /// domain publishes, with the keys the domain revoked.
    async fn publisher_key(&self, cx: &SupervisorContext) -> PublisherKey {
        // The resolver chain: a trust bundle that has the domain, then the configured key file,
        // then the domain's `.well-known` document.
        if let Some((bundle, document)) = cx
            .bundles
            .iter()
            .find_map(|b| b.discovery(&self.spec.domain).map(|d| (b, d)))
        {
            return match verifier::signature::public_key_from_pem(&document.public_key_pem) {
                Ok(key) => PublisherKey::Known {
                    key,
                    revoked: bundle.revoked(&self.spec.domain),
                },
                Err(e) => PublisherKey::Unavailable(format!("bundled key: {e}")),
            };
        }
        if let Some(key) = self.spec.public_key {
            return PublisherKey::Known {
                key,
                revoked: Default::default(),
            };
        }
        if !self.spec.discover {
            return PublisherKey::None;
        }
        let Some(discovery) = &cx.discovery else {
            return PublisherKey::Unavailable("no HTTP client for key discovery".to_owned());
        };
        let document = match discovery.discover(&self.spec.domain).await {
            Ok(document) => document,
            Err(e) => return PublisherKey::Unavailable(format!("key discovery failed: {e}")),
        };
        let key = match verifier::signature::public_key_from_pem(&document.public_key_pem) {
            Ok(key) => key,
            Err(e) => return PublisherKey::Unavailable(format!("discovered key: {e}")),
        };
        match discovery.revoked_keys(&document).await {
            Ok(revoked) => PublisherKey::Known { key, revoked },
            // Fail closed: a publisher that keeps a revocation list it cannot serve may have
            // revoked this very key.
            Err(e) => PublisherKey::Unavailable(format!("revocation cannot be checked: {e}")),
        }
    }

    async fn check_signature(
        &self,
        tool: &Tool,
        publisher: &PublisherKey,
        cx: &SupervisorContext,
    ) -> SignatureCheck {
        let own = tool
            .meta
            .as_ref()
            .and_then(|meta| meta.0.get(verifier::SIGNATURE_META_KEY))
            .and_then(|value| value.as_str());
        let manifest = self.spec.signed_tools.get(tool.name.as_ref());
        let signature = match (own, manifest) {
            (Some(signature), _) => signature,
            (None, Some(entry)) => entry.signature.as_str(),
            (None, None) => return SignatureCheck::Unsigned,
        };
        let (key, revoked) = match publisher {
            PublisherKey::Known { key, revoked } => (key, revoked),
            PublisherKey::None => return SignatureCheck::NoKey,
            PublisherKey::Unavailable(reason) => return SignatureCheck::Rejected(reason.clone()),
        };
        // The signature covers the definition without its `_meta` (where it travels).
        let mut unsigned = tool.clone();
        unsigned.meta = None;
        let canonical = match serde_json::to_string(&unsigned)
            .map_err(|e| e.to_string())
            .and_then(|json| verifier::canonical::canonicalize(&json).map_err(|e| e.to_string()))
        {
            Ok(canonical) => canonical,
            Err(e) => return SignatureCheck::Rejected(format!("cannot canonicalize: {e}")),
        };
        if own.is_none()
            && let Some(entry) = manifest
            && entry.canonical != canonical
        {
            return SignatureCheck::Rejected(
                "the definition differs from the one signed in the manifest".to_owned(),
            );
        }
        let hash = verifier::signature::schema_hash(&canonical);
        let verified = match verifier::signature::verify_proof(
            &hash,
            signature,
            key,
            self.spec.allow_single_hash,
        ) {
            Ok(verified) => verified,
            Err(e) => return SignatureCheck::Rejected(e.to_string()),
        };
        match cx.revocations.get(verified.fingerprint()).await {
            Ok(Some(revocation)) => {
                return SignatureCheck::Rejected(format!(
                    "key {} was revoked by {}: {}",
                    verified.fingerprint(),
                    revocation.revoked_by,
                    revocation.reason
                ));
            }
            Ok(None) => {}
            Err(e) => {
                return SignatureCheck::Rejected(format!(
                    "cannot read the local revocation list: {e}"
                ));
            }
        }
        if revoked.contains(verified.fingerprint()) {
            return SignatureCheck::Rejected(format!(
                "key {} is revoked by {}",
                verified.fingerprint(),
                self.spec.domain
            ));
        }
        match cx
            .pins
            .check_and_pin(&tool.name, &self.spec.domain, &verified)
            .await
        {
            Ok(keys::pins::PinOutcome::PinnedNew | keys::pins::PinOutcome::Matches) => {
                SignatureCheck::Verified
            }
            Ok(keys::pins::PinOutcome::Mismatch { pinned_fingerprint }) => {
                SignatureCheck::Rejected(format!(
                    "signed by {}, but {pinned_fingerprint} is pinned for this tool",
                    verified.fingerprint()
                ))
            }
            Err(e) => SignatureCheck::Rejected(format!("cannot check the key pin: {e}")),
        }
    }

    /// Whether the mode of this server trusts a tool in this state.
    fn trusted(&self, trust: &ToolTrust) -> bool {
        use crate::config::VerificationMode;
        let definition_ok = trust.definition == DefinitionState::Pinned;
        match self.spec.verification {
            VerificationMode::Audit => true,
            VerificationMode::Strict => {
                definition_ok && trust.signature == SignatureCheck::Verified
            }
            VerificationMode::Tofu => {
                definition_ok && !matches!(trust.signature, SignatureCheck::Rejected(_))
            }
        }
    }

    /// Whether a tool of this upstream in this trust state may be listed and called.
    pub fn serves(&self, trust: &ToolTrust) -> bool {
        self.spec.verification == crate::config::VerificationMode::Audit || self.trusted(trust)
    }

    /// Opens the list-change subscription of a 2026-07-28 upstream.
    async fn listen_lists(&self, peer: &Peer<RoleClient>) -> Option<Subscription> {
        let caps = self.catalog().capabilities().cloned().unwrap_or_default();
        let mut filter = SubscriptionFilter::new();
        if caps
            .tools
            .as_ref()
            .is_some_and(|t| t.list_changed == Some(true))
        {
            filter.tools_list_changed = Some(true);
        }
        if caps
            .prompts
            .as_ref()
            .is_some_and(|p| p.list_changed == Some(true))
        {
            filter.prompts_list_changed = Some(true);
        }
        if caps
            .resources
            .as_ref()
            .is_some_and(|r| r.list_changed == Some(true))
        {
            filter.resources_list_changed = Some(true);
        }
        if filter == SubscriptionFilter::new() {
            return None;
        }
        self.listen(peer, filter).await
    }

    /// Opens the resource subscription of a 2026-07-28 upstream for every wanted URI.
    async fn listen_resources(&self, peer: &Peer<RoleClient>) -> Option<Subscription> {
        let uris: Vec<String> = lock(&self.wanted).keys().cloned().collect();
        if uris.is_empty() {
            return None;
        }
        let mut filter = SubscriptionFilter::new();
        filter.resource_subscriptions = Some(uris);
        self.listen(peer, filter).await
    }

    async fn listen(
        &self,
        peer: &Peer<RoleClient>,
        filter: SubscriptionFilter,
    ) -> Option<Subscription> {
        match tokio::time::timeout(self.spec.call_timeout, peer.listen(filter)).await {
            Ok(Ok(subscription)) => Some(subscription),
            Ok(Err(e)) => {
                tracing::warn!(server = %self.name, error = %e, "upstream refused subscriptions/listen");
                None
            }
            Err(_) => {
                tracing::warn!(server = %self.name, "upstream did not acknowledge subscriptions/listen");
                None
            }
        }
    }
}

/// The next notification of an optional subscription; pending forever when there is none, and
/// `None` when it ended.
async fn next_notification(subscription: &mut Option<Subscription>) -> Option<ServerNotification> {
    match subscription {
        Some(subscription) => subscription.next().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// An interval whose first tick is one `period` from now, and which does not catch up on ticks
/// it missed.
fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Pings the upstream. Any answer, even an error (2026-07-28 servers no longer know `ping`),
/// shows it is alive; silence past the timeout, or a closed transport, does not.
async fn check_health(peer: &Peer<RoleClient>, timeout: Duration) -> Result<(), String> {
    let ping = peer.send_request(rmcp::model::ClientRequest::PingRequest(Default::default()));
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(_)) | Ok(Err(ServiceError::McpError(_))) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to ping within {timeout:?}")),
    }
}

fn is_modern(version: &ProtocolVersion) -> bool {
    version.as_str() >= ProtocolVersion::V_2026_07_28.as_str()
}

/// Reloads one list of an upstream's catalog. A failure leaves that list empty and is logged:
/// a server that cannot list its tools has no tools anyone could call.
async fn refresh(server: &str, peer: &Peer<RoleClient>, catalog: &mut Catalog, kind: ListKind) {
    let caps = catalog.capabilities().cloned().unwrap_or_default();
    let result = match kind {
        ListKind::Tools if caps.tools.is_some() => {
            peer.list_all_tools().await.map(|t| catalog.tools = t)
        }
        ListKind::Prompts if caps.prompts.is_some() => {
            peer.list_all_prompts().await.map(|p| catalog.prompts = p)
        }
        ListKind::Resources if caps.resources.is_some() => match peer.list_all_resources().await {
            Ok(resources) => {
                catalog.resources = resources;
                peer.list_all_resource_templates()
                    .await
                    .map(|t| catalog.templates = t)
            }
            Err(e) => Err(e),
        },
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(server, list = ?kind, error = %e, "cannot list upstream catalog");
    }
}

/// The headers a remote server gets on every request: the configured ones and the bearer token.
fn http_headers(spec: &HttpSpec) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &spec.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("header `{name}` has a value that is not a valid header value"))?;
        headers.insert(name, value);
    }
    if let Some(token) = &spec.bearer_token {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| "the bearer token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

fn http_client() -> Result<reqwest::Client, String> {
    // reqwest is built without a default TLS provider and panics without one; the binary
    // installs ring at start, and this makes the library safe to use without that step.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A redirect could carry the bearer token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn http_transport(
    spec: &HttpSpec,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, String> {
    let headers = http_headers(spec)?
        .into_iter()
        .filter_map(|(name, value)| Some((name?, value)))
        .collect();
    let config =
        StreamableHttpClientTransportConfig::with_uri(spec.url.as_str()).custom_headers(headers);
    Ok(StreamableHttpClientTransport::with_client(
        http_client()?,
        config,
    ))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // These locks guard plain values that are replaced whole, so a poisoned lock still holds a
    // consistent value.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use rmcp::{
        RoleClient,
        service::ServiceError,
        transport::{DynamicTransportError, async_rw::AsyncRwTransport},
    };

    use super::UpstreamError;

    #[test]
    fn a_transport_error_does_not_name_the_transport_type() {
        type Http = super::tap::NotificationTap<
            AsyncRwTransport<RoleClient, tokio::io::Empty, tokio::io::Sink>,
        >;
        let error = UpstreamError::Service {
            server: "remote".to_owned(),
            source: Box::new(ServiceError::TransportSend(DynamicTransportError::new::<
                Http,
                RoleClient,
            >(
                std::io::Error::other("HTTP 500"),
            ))),
        };
        assert_eq!(error.to_string(), "server `remote` failed: HTTP 500");
    }
}
