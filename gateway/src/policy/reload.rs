//! The policy in force, swapped without a restart when its file changes or on SIGHUP.
//!
//! A new file replaces the policy only when it parses and validates; otherwise the old policy
//! stays in force and the error is logged with the file and line. Readers take the current
//! policy with one atomic load, so a decision never sees half a reload.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::{PolicyEngine, PolicyError};

/// How often the policy file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The current policy, and the file it comes from.
pub struct PolicyHandle {
    current: ArcSwap<PolicyEngine>,
    file: Option<PathBuf>,
}

impl PolicyHandle {
    /// Loads the policy from `file`, or the built-in default without one.
    pub fn load(file: Option<PathBuf>) -> Result<Self, PolicyError> {
        let engine = match &file {
            Some(path) => PolicyEngine::load(path)?,
            None => PolicyEngine::default_policy(),
        };
        Ok(Self {
            current: ArcSwap::from_pointee(engine),
            file,
        })
    }

    /// A handle that always holds `engine` (tests, `policy explain`).
    pub fn fixed(engine: PolicyEngine) -> Self {
        Self {
            current: ArcSwap::from_pointee(engine),
            file: None,
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.current.load_full()
    }

    /// Reads the file again. On success the new policy is in force; on error the old one stays.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let engine = PolicyEngine::load(path)?;
        let count = engine.len();
        self.current.store(Arc::new(engine));
        tracing::info!(file = %path.display(), policies = count, "policy reloaded");
        Ok(())
    }

    /// Reloads on SIGHUP and whenever the file's modification time or size changes, until
    /// `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let stamp = |path: &PathBuf| -> Option<(SystemTime, u64)> {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        let mut last = stamp(&path);
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = stamp(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            if let Err(e) = self.reload() {
                tracing::error!(error = %e, "the new policy is not valid; the previous policy stays in force");
            }
        }
    }
}
