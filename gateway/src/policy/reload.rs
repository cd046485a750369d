//! The policy in force, swapped without a restart (see `access::Access::watch` for when).
//!
//! A new file replaces the policy only when it parses and validates; otherwise the old policy
//! stays in force and the error is logged with the file and line. Readers take the current
//! policy with one atomic load, so a decision never sees half a reload.

use std::{path::PathBuf, sync::Arc};

use arc_swap::ArcSwap;

use super::{PolicyEngine, PolicyError};

/// The current policy, and the file it comes from.
pub struct PolicyHandle {
    current: ArcSwap<PolicyEngine>,
    file: Option<PathBuf>,
    /// Counts successful reloads, for whoever needs to know one happened (tests, status).
    reloads: tokio::sync::watch::Sender<u64>,
}

impl PolicyHandle {
    /// Loads the policy from `file`, or the built-in default without one.
    pub fn load(file: Option<PathBuf>) -> Result<Self, PolicyError> {
        let engine = PolicyEngine::load_or_default(file.as_ref())?;
        Ok(Self {
            current: ArcSwap::from_pointee(engine),
            file,
            reloads: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A handle that always holds `engine` (tests, `policy explain`).
    pub fn fixed(engine: PolicyEngine) -> Self {
        Self {
            current: ArcSwap::from_pointee(engine),
            file: None,
            reloads: tokio::sync::watch::Sender::new(0),
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
        self.reloads.send_modify(|n| *n += 1);
        tracing::info!(file = %path.display(), policies = count, "policy reloaded");
        Ok(())
    }

    /// Changes with every successful reload.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// The policy file, if the config names one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }
}
