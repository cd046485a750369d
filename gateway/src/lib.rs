//! The MCP gateway: one MCP endpoint in front of many upstream MCP servers.
//!
//! Start with [`Gateway::start`], then serve it through a front door in [`front`].
//! `ARCHITECTURE.md` at the repository root walks through one request's path.

pub mod access;
pub mod audit;
pub mod clock;
pub mod config;
pub mod demo;
pub mod front;
pub mod handler;
pub mod identity;
pub mod limits;
pub mod naming;
pub mod pipeline;
pub mod policy;
pub mod registry;
pub mod security;
pub mod session;
pub mod store;
pub mod upstream;
pub mod validate;

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    naming::Naming,
    registry::Registry,
    session::Sessions,
    upstream::{CatalogChange, SupervisorContext, Upstream, launch::ProcessLauncher},
};

/// A running gateway: its configuration, upstreams and client sessions.
pub struct Gateway {
    pub config: Config,
    pub registry: Registry,
    /// Identity, policy, limits and validators.
    pub access: access::Access,
    /// The audit trail this process writes.
    pub audit: audit::Audit,
    pub sessions: Arc<Sessions>,
    shutdown: CancellationToken,
    supervisors: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// What each sandbox tier can do here, once probed (at start, when stdio servers exist).
    pub sandbox: Arc<std::sync::OnceLock<Result<sandbox_runner::probe::Report, String>>>,
}

impl Gateway {
    /// Registers the configured servers and starts a supervisor for each. Returns once the
    /// policy is loaded and the limits are set up: the upstreams connect in the background,
    /// and their tools appear as they do.
    pub async fn start(
        config: Config,
        launcher: Arc<dyn ProcessLauncher>,
        store: &store::Store,
    ) -> Result<Arc<Self>, String> {
        let audit = audit::Audit::open(store.pool().clone(), &config.storage.data_dir).await?;
        let access =
            access::Access::new(&config, store.api_keys(), Some(audit.log.clone())).await?;
        let naming = match (
            config.routing.pass_through,
            config.servers.iter().find(|s| s.enabled),
        ) {
            (true, Some(server)) => Naming::pass_through(server.name.clone()),
            _ => Naming::prefixed(config.routing.separator.clone()),
        };
        let upstreams: Vec<_> = config.servers.iter().cloned().map(Upstream::new).collect();
        let sessions = Arc::new(Sessions::default());
        let shutdown = CancellationToken::new();
        let (changes, _) = broadcast::channel(64);
        let cx = SupervisorContext {
            launcher,
            sessions: sessions.clone(),
            naming: naming.clone(),
            changes: changes.clone(),
            connect_timeout: config.routing.connect_timeout,
            definitions: store.definitions(),
            pins: store.pins(),
            revocations: store.revocations(),
            bundles: config.trust.bundles.clone(),
            discovery: keys::discovery::DiscoveryClient::new(
                config.trust.discovery_timeout,
                config.trust.allow_http_loopback_discovery,
            )
            .map_err(|e| tracing::error!(error = %e, "cannot build the key discovery client"))
            .ok(),
            revocation_recheck: config.trust.revocation_recheck,
            health_interval: config.routing.health_interval,
            health_timeout: config.routing.health_timeout,
            shutdown: shutdown.clone(),
            audit: Some(audit.log.clone()),
        };
        let sandbox = Arc::new(std::sync::OnceLock::new());
        if config
            .servers
            .iter()
            .any(|s| matches!(s.transport, config::TransportSpec::Stdio(_)))
        {
            let launcher = cx.launcher.clone();
            let probed = sandbox.clone();
            tokio::spawn(async move {
                let report = launcher.probe().await;
                match &report {
                    Ok(report) => {
                        for tier in &report.tiers {
                            tracing::info!(tier = %tier.tier, available = tier.available, detail = %tier.detail, "sandbox tier");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot probe the sandbox tiers"),
                }
                let _ = probed.set(report);
            });
        }
        let supervisors = upstreams
            .iter()
            .map(|upstream| tokio::spawn(upstream.clone().supervise(cx.clone())))
            .collect();
        let gateway = Arc::new(Self {
            registry: Registry::new(upstreams, naming, config.routing.page_size),
            access,
            audit,
            config,
            sessions,
            shutdown,
            supervisors: std::sync::Mutex::new(supervisors),
            sandbox,
        });
        tokio::spawn(announce_changes(
            gateway.sessions.clone(),
            changes.subscribe(),
        ));
        let watched = gateway.clone();
        tokio::spawn(async move {
            let shutdown = watched.shutdown.child_token();
            watched.access.watch(&watched.config.source, shutdown).await
        });
        Ok(gateway)
    }

    /// Stops every upstream (their processes are killed) and ends the change announcer.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits (up to `limit`) until every upstream has stopped, so that no upstream
    /// process outlives the gateway.
    pub async fn stop(&self, limit: std::time::Duration) {
        self.shutdown();
        let supervisors: Vec<_> = self
            .supervisors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let _ = tokio::time::timeout(limit, futures::future::join_all(supervisors)).await;
    }

    /// A token cancelled when the gateway shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until every enabled upstream is connected.
    pub async fn wait_ready(&self) {
        for upstream in self.registry.upstreams() {
            upstream.wait_ready().await;
        }
    }

    /// Waits until every enabled upstream is connected or has failed an attempt (see
    /// [`upstream::Upstream::wait_settled`]).
    pub async fn wait_settled(&self) {
        for upstream in self.registry.upstreams() {
            upstream.wait_settled().await;
        }
    }

    /// Whether every enabled upstream is connected.
    pub fn all_ready(&self) -> bool {
        self.registry
            .upstreams()
            .filter(|u| u.spec.enabled)
            .all(|u| {
                matches!(
                    u.state(),
                    upstream::UpstreamState::Ready | upstream::UpstreamState::Suspended
                )
            })
    }
}

/// Tells every connected client when the combined catalog changed.
async fn announce_changes(
    sessions: Arc<Sessions>,
    mut changes: broadcast::Receiver<CatalogChange>,
) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            // Missed changes are folded into one announcement of everything.
            Err(broadcast::error::RecvError::Lagged(_)) => CatalogChange {
                tools: true,
                resources: true,
                prompts: true,
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        use rmcp::model::{
            PromptListChangedNotification, ResourceListChangedNotification, ServerNotification,
            ToolListChangedNotification,
        };
        if change.tools {
            sessions
                .broadcast(ServerNotification::ToolListChangedNotification(
                    ToolListChangedNotification::default(),
                ))
                .await;
        }
        if change.resources {
            sessions
                .broadcast(ServerNotification::ResourceListChangedNotification(
                    ResourceListChangedNotification::default(),
                ))
                .await;
        }
        if change.prompts {
            sessions
                .broadcast(ServerNotification::PromptListChangedNotification(
                    PromptListChangedNotification::default(),
                ))
                .await;
        }
    }
}
