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

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use rmcp::{
    Peer, RoleClient,
    model::{Prompt, ProtocolVersion, Resource, ResourceTemplate, ServerCapabilities, ServerPeerInfo, Tool},
    service::{ClientLifecycleMode, ClientServiceExt, RunningService, ServiceError},
    transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
};
use secrecy::ExposeSecret;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use self::{
    client::{ListKind, UpstreamClient},
    launch::ProcessLauncher,
};
use crate::{
    config::{HttpSpec, ServerSpec, TransportSpec},
    naming::Naming,
    session::Sessions,
};

/// What an upstream offers, as it last reported it.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub tools: Vec<Tool>,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
    pub prompts: Vec<Prompt>,
    pub info: Option<ServerPeerInfo>,
}

impl Catalog {
    pub fn capabilities(&self) -> Option<&ServerCapabilities> {
        self.info.as_ref().map(|i| &i.capabilities)
    }
}

/// The connection state of an upstream, as shown in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamState {
    Disabled,
    Connecting,
    Ready,
    /// The last attempt failed; the supervisor retries after a backoff.
    Failed(String),
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
    #[error("server `{server}` failed: {source}")]
    Service {
        server: String,
        #[source]
        source: ServiceError,
    },
}

/// One registered upstream server.
pub struct Upstream {
    pub spec: ServerSpec,
    pub name: Arc<str>,
    state: tokio::sync::watch::Sender<UpstreamState>,
    peer: RwLock<Option<Peer<RoleClient>>>,
    catalog: RwLock<Arc<Catalog>>,
    tier: RwLock<&'static str>,
    pid: RwLock<Option<u32>>,
}

/// Everything an upstream's supervisor needs from the gateway.
#[derive(Clone)]
pub struct SupervisorContext {
    pub launcher: Arc<dyn ProcessLauncher>,
    pub sessions: Arc<Sessions>,
    pub naming: Naming,
    pub changes: broadcast::Sender<CatalogChange>,
    pub connect_timeout: Duration,
    pub shutdown: CancellationToken,
}

type Connection = RunningService<RoleClient, UpstreamClient>;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
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
            spec,
            state: tokio::sync::watch::Sender::new(state),
            peer: RwLock::new(None),
            catalog: RwLock::new(Arc::default()),
            tier: RwLock::new("none"),
            pid: RwLock::new(None),
        })
    }

    pub fn state(&self) -> UpstreamState {
        self.state.borrow().clone()
    }

    /// Waits until the upstream is connected (returns at once for a disabled one).
    pub async fn wait_ready(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx
            .wait_for(|s| matches!(s, UpstreamState::Ready | UpstreamState::Disabled))
            .await;
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.catalog).clone()
    }

    /// The isolation tier of the current process ("none" for plain child processes and remote servers).
    pub fn tier(&self) -> &'static str {
        *read(&self.tier)
    }

    /// The process id of a running stdio server.
    pub fn pid(&self) -> Option<u32> {
        *read(&self.pid)
    }

    /// The connected peer, or an error saying why there is none.
    pub fn peer(&self) -> Result<Peer<RoleClient>, UpstreamError> {
        read(&self.peer).clone().ok_or_else(|| UpstreamError::Unavailable {
            server: self.spec.name.clone(),
            state: match self.state() {
                UpstreamState::Disabled => "disabled".to_owned(),
                UpstreamState::Connecting | UpstreamState::Ready => "connecting".to_owned(),
                UpstreamState::Failed(reason) => reason,
            },
        })
    }

    fn set_state(&self, state: UpstreamState) {
        self.state.send_replace(state);
    }

    /// Runs the supervisor until shutdown: connect, serve, reconnect with backoff.
    pub async fn supervise(self: Arc<Self>, cx: SupervisorContext) {
        if !self.spec.enabled {
            return;
        }
        let mut backoff = BACKOFF_START;
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
                attempt = tokio::time::timeout(cx.connect_timeout, self.connect(handler, &cx)) => attempt,
            };
            match attempt {
                Ok(Ok(connection)) => {
                    let started = Instant::now();
                    self.serve(connection, &mut list_rx, &cx).await;
                    if cx.shutdown.is_cancelled() {
                        return;
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
    async fn connect(&self, handler: UpstreamClient, cx: &SupervisorContext) -> Result<Connection, String> {
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        };
        let result = match &self.spec.transport {
            TransportSpec::Stdio(spec) => {
                let launched = cx
                    .launcher
                    .launch(&self.spec.name, spec)
                    .map_err(|e| e.to_string())?;
                *write(&self.tier) = launched.tier;
                *write(&self.pid) = launched.pid;
                tracing::info!(server = %self.name, pid = ?launched.pid, tier = launched.tier, "started upstream process");
                handler.serve_with_lifecycle(launched.transport, lifecycle).await
            }
            TransportSpec::Http(spec) => {
                let transport = http_transport(spec)?;
                handler.serve_with_lifecycle(transport, lifecycle).await
            }
        };
        result.map_err(|e| format!("initialization failed: {e}"))
    }

    /// Serves one connection until it ends or the gateway shuts down.
    async fn serve(
        &self,
        connection: Connection,
        list_rx: &mut mpsc::UnboundedReceiver<ListKind>,
        cx: &SupervisorContext,
    ) {
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
        *write(&self.catalog) = Arc::new(catalog);
        *write(&self.peer) = Some(peer.clone());
        self.set_state(UpstreamState::Ready);
        let _ = cx.changes.send(CatalogChange::ALL);

        let ct = connection.cancellation_token();
        let waiting = connection.waiting();
        tokio::pin!(waiting);
        loop {
            tokio::select! {
                _ = cx.shutdown.cancelled() => {
                    ct.cancel();
                    let _ = waiting.await;
                    break;
                }
                reason = &mut waiting => {
                    tracing::warn!(server = %self.name, reason = ?reason.ok(), "upstream connection ended");
                    break;
                }
                Some(kind) = list_rx.recv() => {
                    let mut catalog = (*self.catalog()).clone();
                    refresh(&self.name, &peer, &mut catalog, kind).await;
                    *write(&self.catalog) = Arc::new(catalog);
                    let _ = cx.changes.send(CatalogChange::of(kind));
                }
            }
        }
        *write(&self.peer) = None;
        *write(&self.pid) = None;
        *write(&self.catalog) = Arc::default();
        let _ = cx.changes.send(CatalogChange::ALL);
    }
}

/// Reloads one list of an upstream's catalog. A failure leaves that list empty and is logged:
/// a server that cannot list its tools has no tools anyone could call.
async fn refresh(server: &str, peer: &Peer<RoleClient>, catalog: &mut Catalog, kind: ListKind) {
    let caps = catalog.capabilities().cloned().unwrap_or_default();
    let result = match kind {
        ListKind::Tools if caps.tools.is_some() => peer.list_all_tools().await.map(|t| catalog.tools = t),
        ListKind::Prompts if caps.prompts.is_some() => {
            peer.list_all_prompts().await.map(|p| catalog.prompts = p)
        }
        ListKind::Resources if caps.resources.is_some() => {
            match peer.list_all_resources().await {
                Ok(resources) => {
                    catalog.resources = resources;
                    peer.list_all_resource_templates()
                        .await
                        .map(|t| catalog.templates = t)
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(server, list = ?kind, error = %e, "cannot list upstream catalog");
    }
}

fn http_transport(
    spec: &HttpSpec,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, String> {
    if spec.legacy_sse {
        return Err("the legacy HTTP+SSE transport (`type = \"sse\"`) is not supported yet".to_owned());
    }
    let mut headers = std::collections::HashMap::new();
    for (name, value) in &spec.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("header `{name}` has a value that is not a valid header value"))?;
        headers.insert(name, value);
    }
    let mut config = StreamableHttpClientTransportConfig::with_uri(spec.url.as_str()).custom_headers(headers);
    if let Some(token) = &spec.bearer_token {
        config = config.auth_header(token.expose_secret());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // These locks guard plain values that are replaced whole, so a poisoned lock still holds a
    // consistent value.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
