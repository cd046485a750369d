//! Starting the process of a stdio upstream, behind one interface.
//!
//! Today the only launcher is [`ChildProcessLauncher`]: a plain child process with a clean
//! environment, in its own process group so the whole tree is killed with it. It isolates
//! nothing, and says so: [`Launched::tier`] is `"none"`. The sandbox issue adds a launcher that
//! starts the server inside `sandbox-runner`; nothing else in the gateway needs to change.

use std::process::Stdio;

use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::transport::TokioChildProcess;
use secrecy::ExposeSecret;
use tokio::io::AsyncBufReadExt;

use crate::config::StdioSpec;

/// Variables a child inherits from the gateway even though its spec does not name them: without
/// them `npx`, `uvx` and most interpreters cannot start.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TERM", "TMPDIR", "USER"];

/// A started stdio server: the transport speaking MCP over its stdin and stdout.
pub struct Launched {
    pub transport: TokioChildProcess,
    pub pid: Option<u32>,
    /// The isolation tier the process runs in, reported in status.
    pub tier: &'static str,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start `{command}`: {source}")]
pub struct LaunchError {
    pub command: String,
    #[source]
    pub source: std::io::Error,
}

/// Starts stdio upstream servers.
pub trait ProcessLauncher: Send + Sync + 'static {
    fn launch(&self, server: &str, spec: &StdioSpec) -> Result<Launched, LaunchError>;
}

/// Starts servers as plain child processes of the gateway (no isolation).
#[derive(Debug, Default)]
pub struct ChildProcessLauncher;

impl ProcessLauncher for ChildProcessLauncher {
    fn launch(&self, server: &str, spec: &StdioSpec) -> Result<Launched, LaunchError> {
        let mut command = tokio::process::Command::new(&spec.command);
        command.args(&spec.args).env_clear();
        for name in INHERITED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        for (name, value) in &spec.env {
            command.env(name, value.expose_secret());
        }
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        let mut wrapped = CommandWrap::from(command);
        // A process group lets a kill reach the grandchildren that `npx` and `uvx` start.
        wrapped.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
        let (transport, stderr) = TokioChildProcess::builder(wrapped)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LaunchError {
                command: spec.command.clone(),
                source,
            })?;
        let pid = transport.id();
        if let Some(stderr) = stderr {
            // The server's stderr becomes our log, line by line, tagged with its name; it must
            // never reach our stdout, which is a protocol stream in `mcp-gateway stdio`.
            let server = server.to_owned();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "upstream_stderr", server = %server, "{line}");
                }
            });
        }
        Ok(Launched {
            transport,
            pid,
            tier: "none",
        })
    }
}
