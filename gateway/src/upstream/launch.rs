//! Starting the process of a stdio upstream, behind one interface.
//!
//! Every stdio server runs inside `sandbox-runner` ([`RunnerLauncher`]): the gateway never
//! forks a sandbox from its own async process, and nothing it starts runs with its privileges.
//! The runner gets the server's MCP stream on its stdin and stdout and a control channel on
//! descriptor 3, where the gateway writes the launch spec and the runner reports its events
//! (started, limit hit, denied, exited); the gateway records each in the audit trail and only
//! then acknowledges it, so none is lost, and drops a repeated sequence number, so none is
//! recorded twice.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use futures::future::BoxFuture;
use process_wrap::tokio::{CommandWrap, ProcessGroup};
use rmcp::transport::TokioChildProcess;
use sandbox_runner::probe::Report;
use sandbox_runner::protocol::{Envelope, Event, Isolation, LaunchSpec, LimitKind, Tier};
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::audit::AuditLog;
use crate::config::StdioSpec;
use crate::config::sandbox::SandboxConfig;

/// Variables a server inherits from the gateway even though its spec does not name them:
/// without them `npx`, `uvx` and most interpreters cannot start.
const INHERITED_ENV: &[&str] = &["PATH", "LANG", "TERM"];
/// How long a runner may take to report that the server started (or could not).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A started stdio server: the transport speaking MCP over the runner's stdin and stdout.
pub struct Launched {
    pub transport: TokioChildProcess,
    /// The sandbox's process as the host sees it.
    pub pid: Option<u32>,
    pub tier: Tier,
    pub tier_requested: Tier,
    pub isolation: Isolation,
    /// Microseconds from the runner's start to the server's exec.
    pub start_us: u64,
    /// What the sandbox's runner reports while the server runs.
    pub report: Arc<SandboxReport>,
}

/// What one sandbox's runner reported that bears on the calls it served: the sandbox's id (named
/// in each of the runner's audit records, so a call's outcome record leads to the sandbox's
/// start, usage and exit) and its denials, limit hits and timeouts, numbered so that a call can
/// tell which of them happened while it ran.
#[derive(Debug)]
pub struct SandboxReport {
    pub id: String,
    notices: Mutex<Notices>,
    /// Whether the runner reported the sandbox's exit (its limit hits come before).
    exited: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Notices {
    /// How many notices there have been.
    count: u64,
    /// The latest of them, with their numbers.
    recent: std::collections::VecDeque<(u64, Notice)>,
}

/// Something a sandbox's runner stopped or refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    /// `denied`, `limit-hit` or `timed-out`.
    pub kind: &'static str,
    pub detail: String,
}

/// How many notices a report keeps for calls to look at; the audit trail has them all.
const RECENT_NOTICES: usize = 32;

impl SandboxReport {
    pub fn new() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            notices: Mutex::new(Notices::default()),
            exited: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Waits, up to `limit`, for the runner to report the sandbox's exit: a call whose server
    /// went away learns why (a limit, a refusal) before its outcome is recorded.
    pub async fn exited_within(&self, limit: Duration) {
        let mut exited = self.exited.subscribe();
        let _ = tokio::time::timeout(limit, exited.wait_for(|gone| *gone)).await;
    }

    /// A mark to pass to [`Self::since`] later.
    pub fn mark(&self) -> u64 {
        self.lock().count
    }

    /// The notices after `mark` (those dropped from the recent ones are not listed).
    pub fn since(&self, mark: u64) -> Vec<Notice> {
        self.lock()
            .recent
            .iter()
            .filter(|(n, _)| *n > mark)
            .map(|(_, notice)| notice.clone())
            .collect()
    }

    fn push(&self, notice: Notice) {
        let mut notices = self.lock();
        notices.count += 1;
        let n = notices.count;
        if notices.recent.len() == RECENT_NOTICES {
            notices.recent.pop_front();
        }
        notices.recent.push_back((n, notice));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Notices> {
        // A poisoned lock only means a panic elsewhere; the list itself stays consistent.
        self.notices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The notice an event of the runner amounts to, if any.
    fn notice(event: &Event) -> Option<Notice> {
        match event {
            Event::Denied {
                action,
                target,
                reason,
            } => Some(Notice {
                kind: "denied",
                detail: format!("{action} {target}: {reason}"),
            }),
            Event::LimitHit { limit, detail } => Some(Notice {
                kind: "limit-hit",
                detail: format!(
                    "{}: {detail}",
                    match limit {
                        LimitKind::Memory => "memory",
                        LimitKind::Pids => "pids",
                        LimitKind::Cpu => "cpu",
                        LimitKind::Output => "output",
                    }
                ),
            }),
            Event::TimedOut { after_ms } => Some(Notice {
                kind: "timed-out",
                detail: format!("after {after_ms} ms"),
            }),
            _ => None,
        }
    }
}

impl Default for SandboxReport {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start `{command}`: {message}")]
pub struct LaunchError {
    pub command: String,
    pub message: String,
}

/// Starts stdio upstream servers.
pub trait ProcessLauncher: Send + Sync + 'static {
    /// Starts `spec`'s server and waits until it runs (or could not be started). The runner's
    /// events are recorded in `audit`.
    fn launch<'a>(
        &'a self,
        server: &'a str,
        spec: &'a StdioSpec,
        audit: Option<AuditLog>,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>>;

    /// What each isolation tier can do on this host.
    fn probe(&self) -> BoxFuture<'_, Result<Report, String>>;
}

/// Starts each server inside `sandbox-runner`.
#[derive(Debug, Clone)]
pub struct RunnerLauncher {
    runner: Option<Runner>,
    config: SandboxConfig,
    /// Where servers without a working directory of their own get one.
    workdirs: PathBuf,
}

/// The runner's program, and the arguments that come before its own.
#[derive(Debug, Clone)]
pub struct Runner {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

/// Finds the sandbox runner: the configured binary, `MCP_SANDBOX_RUNNER`, a `sandbox-runner`
/// beside this executable (or beside its `deps/` directory, for test binaries) or on `PATH`,
/// else `mcp-gateway sandbox-runner` (this very binary).
pub fn find_runner(configured: Option<&Path>) -> Option<Runner> {
    let alone = |program: PathBuf| Runner {
        program,
        prefix: Vec::new(),
    };
    if let Some(path) = configured {
        return Some(alone(path.to_path_buf()));
    }
    if let Some(path) = std::env::var_os("MCP_SANDBOX_RUNNER") {
        return Some(alone(PathBuf::from(path)));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    // A test binary of this crate lives in `target/*/deps`, beside nothing of ours.
    let mut dirs = vec![dir];
    if dir.file_name().is_some_and(|n| n == "deps")
        && let Some(parent) = dir.parent()
    {
        dirs.push(parent);
    }
    let mut candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join("sandbox-runner")).collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("sandbox-runner")));
    }
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(alone(found));
    }
    // The runner built into the gateway's own binary: this one, or the one beside it.
    let gateway = if exe.file_name().is_some_and(|n| n == "mcp-gateway") {
        Some(exe.clone())
    } else {
        dirs.iter()
            .map(|d| d.join("mcp-gateway"))
            .find(|p| p.is_file())
    };
    gateway.map(|program| Runner {
        program,
        prefix: vec!["sandbox-runner".to_owned()],
    })
}

impl RunnerLauncher {
    pub fn new(config: &SandboxConfig, data_dir: &Path) -> Self {
        RunnerLauncher {
            runner: find_runner(config.runner.as_deref()),
            config: config.clone(),
            workdirs: data_dir.join("sandboxes"),
        }
    }

    /// The launch spec of `spec`'s server.
    pub fn launch_spec(&self, server: &str, spec: &StdioSpec) -> Result<LaunchSpec, String> {
        let own = &spec.sandbox;
        let tier = own.tier.unwrap_or(self.config.tier);
        let workdir = match own.workdir.as_ref().or(spec.cwd.as_ref()) {
            Some(dir) => dir.clone(),
            None => {
                let dir = self.workdirs.join(server);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                dir
            }
        };
        let workdir = workdir
            .canonicalize()
            .map_err(|e| format!("working directory {}: {e}", workdir.display()))?;
        let mut env = std::collections::BTreeMap::new();
        for name in INHERITED_ENV {
            if let Ok(value) = std::env::var(name) {
                env.insert((*name).to_owned(), value);
            }
        }
        // Inside a sandbox the home and temporary directories are the sandbox's own /tmp.
        let home = if tier == Tier::Process {
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())
        } else {
            "/tmp".into()
        };
        env.insert("HOME".into(), home);
        env.insert("TMPDIR".into(), "/tmp".into());
        for (name, value) in &spec.env {
            env.insert(name.clone(), value.expose_secret().to_owned());
        }
        let path = env.get("PATH").cloned().unwrap_or_default();
        let mut read_only = own.read_only.clone();
        read_only.extend(installation_paths(
            &spec.command,
            &spec.args,
            &path,
            &workdir,
        ));
        read_only.sort();
        read_only.dedup();
        let mut writable = own.writable.clone();
        if tier != Tier::Process {
            package_cache(&spec.command, &mut env, &mut writable);
            uv_cache(
                &spec.command,
                &mut env,
                &mut writable,
                &mut read_only,
                own.allow_net.is_empty(),
            );
        }
        Ok(LaunchSpec {
            command: spec.command.clone(),
            args: spec.args.clone(),
            env,
            workdir,
            tier,
            fallback: own.fallback.or(self.config.fallback),
            limits: self.config.limits_for(own),
            allow_net: own.allow_net.clone(),
            read_only,
            writable,
            allowed_commands: self.config.allow_commands.clone(),
            production: self.config.production,
            stdout: self.config.stdout,
        })
    }

    async fn start(
        &self,
        server: &str,
        spec: &StdioSpec,
        audit: Option<AuditLog>,
    ) -> Result<Launched, String> {
        let runner = self.runner.as_ref().ok_or(
            "the `sandbox-runner` binary was not found beside mcp-gateway or on PATH; \
             set `[sandbox] runner`",
        )?;
        let launch = self.launch_spec(server, spec)?;
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("control channel: {e}"))?;
        let mut command = tokio::process::Command::new(&runner.program);
        command
            .args(&runner.prefix)
            .args(["launch", "--control-fd", "3"])
            .env_clear()
            .kill_on_drop(true);
        command
            .fd_mappings(vec![FdMapping {
                parent_fd: theirs.into(),
                child_fd: 3,
            }])
            .map_err(|e| format!("control channel: {e}"))?;
        let mut wrapped = CommandWrap::from(command);
        wrapped.wrap(ProcessGroup::leader());
        let (transport, stderr) = TokioChildProcess::builder(wrapped)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", runner.program.display()))?;
        if let Some(stderr) = stderr {
            // The server's stderr (relayed by the runner) becomes our log, line by line,
            // tagged with its name; it must never reach our stdout, which is a protocol
            // stream in `mcp-gateway stdio`.
            let server = server.to_owned();
            tokio::spawn(async move {
                let mut lines = StderrLines::new(stderr);
                while let Some(line) = lines.next().await {
                    tracing::info!(target: "upstream_stderr", server = %server, "{line}");
                }
            });
        }
        ours.set_nonblocking(true)
            .map_err(|e| format!("control channel: {e}"))?;
        let control =
            tokio::net::UnixStream::from_std(ours).map_err(|e| format!("control channel: {e}"))?;
        let (reader, mut writer) = control.into_split();
        let mut line = serde_json::to_string(&launch).map_err(|e| e.to_string())?;
        line.push('\n');
        writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("the runner closed its control channel: {e}"))?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let report = Arc::new(SandboxReport::new());
        tokio::spawn(pump_events(
            Arc::from(server),
            reader,
            writer,
            audit,
            report.clone(),
            first_tx,
        ));
        match tokio::time::timeout(START_TIMEOUT, first_rx).await {
            Ok(Ok(Ok(started))) => Ok(Launched {
                transport,
                pid: Some(started.pid),
                tier: started.tier,
                tier_requested: started.tier_requested,
                isolation: started.isolation,
                start_us: started.start_us,
                report,
            }),
            Ok(Ok(Err(message))) => Err(message),
            Ok(Err(_)) => Err("the sandbox runner ended without reporting".into()),
            Err(_) => Err(format!(
                "the sandbox runner reported nothing within {} s",
                START_TIMEOUT.as_secs()
            )),
        }
    }
}

impl ProcessLauncher for RunnerLauncher {
    fn launch<'a>(
        &'a self,
        server: &'a str,
        spec: &'a StdioSpec,
        audit: Option<AuditLog>,
    ) -> BoxFuture<'a, Result<Launched, LaunchError>> {
        Box::pin(async move {
            self.start(server, spec, audit)
                .await
                .map_err(|message| LaunchError {
                    command: spec.command.clone(),
                    message,
                })
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<Report, String>> {
        Box::pin(async move {
            let runner = self
                .runner
                .as_ref()
                .ok_or("the `sandbox-runner` binary was not found")?;
            // Not killed if the gateway stops first: a probe cut short would leave its test
            // sandboxes for the next runner to sweep.
            let output = tokio::process::Command::new(&runner.program)
                .args(&runner.prefix)
                .arg("probe")
                .env_clear()
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| format!("cannot run {}: {e}", runner.program.display()))?;
            serde_json::from_slice(&output.stdout)
                .map_err(|e| format!("{} probe: unreadable report: {e}", runner.program.display()))
        })
    }
}

/// What the first event said, when the server started.
struct Started {
    pid: u32,
    tier: Tier,
    tier_requested: Tier,
    isolation: Isolation,
    start_us: u64,
}

/// Reads the runner's events until it exits: each is logged, recorded, then acknowledged.
async fn pump_events(
    server: Arc<str>,
    reader: tokio::net::unix::OwnedReadHalf,
    mut writer: tokio::net::unix::OwnedWriteHalf,
    audit: Option<AuditLog>,
    report: Arc<SandboxReport>,
    first: tokio::sync::oneshot::Sender<Result<Started, String>>,
) {
    let mut first = Some(first);
    let mut last_seq = 0u64;
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut denied: Option<String> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let envelope: Envelope = match serde_json::from_str(&line) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "ignoring an unreadable runner event");
                continue;
            }
        };
        if envelope.seq > last_seq {
            last_seq = envelope.seq;
            log_event(&server, &envelope.event);
            if let Some(notice) = SandboxReport::notice(&envelope.event) {
                report.push(notice);
            }
            if matches!(envelope.event, Event::Exited { .. }) {
                report.exited.send_replace(true);
            }
            if let Some(audit) = &audit {
                let body = serde_json::json!({
                    "kind": "runner",
                    "time": crate::audit::now_ms(),
                    "server": &*server,
                    "sandbox": report.id,
                    "seq": envelope.seq,
                    "event": &envelope.event,
                });
                // The acknowledgement waits for the commit: an acknowledged event is durable.
                if let Err(e) = audit.record(&body).await {
                    tracing::error!(server = %server, error = %e, "cannot record a runner event; not acknowledging it");
                    continue;
                }
            }
            match &envelope.event {
                Event::Started {
                    tier_requested,
                    tier,
                    pid,
                    start_us,
                    isolation,
                    ..
                } => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(Started {
                            pid: *pid,
                            tier: *tier,
                            tier_requested: *tier_requested,
                            isolation: isolation.clone(),
                            start_us: *start_us,
                        }));
                    }
                }
                Event::Denied { reason, .. } => denied = Some(reason.clone()),
                Event::Failed { message } => {
                    if let Some(first) = first.take() {
                        let message = match denied.take() {
                            Some(reason) if !message.contains(&reason) => {
                                format!("{message} ({reason})")
                            }
                            _ => message.clone(),
                        };
                        let _ = first.send(Err(message));
                    }
                }
                _ => {}
            }
        }
        // A repeat is acknowledged again, and not recorded again.
        let ack = format!("{{\"ack\":{}}}\n", envelope.seq);
        if writer.write_all(ack.as_bytes()).await.is_err() {
            break;
        }
    }
}

fn log_event(server: &str, event: &Event) {
    match event {
        Event::Started {
            tier,
            tier_requested,
            pid,
            start_us,
            isolation,
            ..
        } => tracing::info!(
            server,
            %tier,
            %tier_requested,
            pid,
            start_us,
            limits = ?isolation.limits,
            notes = ?isolation.notes,
            "sandbox started"
        ),
        Event::Exited {
            code,
            signal,
            usage,
        } => tracing::info!(server, ?code, ?signal, ?usage, "sandbox exited"),
        Event::Output { .. } => {}
        other => tracing::warn!(server, event = ?other, "sandbox event"),
    }
}

/// The file name of a command: `npx` for `/usr/bin/npx`.
fn program_name(command: &str) -> &str {
    Path::new(command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// `npx` and `npm` fetch packages into their cache before the server starts: the host's npm
/// cache is made writable inside (`HOME` is the sandbox's own), and npm told to prefer it, so
/// that an unchanged `npx -y PACKAGE` entry starts without a network when the package is
/// cached, and through the proxy (`allow_net = ["registry.npmjs.org:443"]`) when it is not.
/// The cache is shared by the servers that use it: a server that must not share it names its
/// own `npm_config_cache` in `env`.
fn package_cache(
    command: &str,
    env: &mut std::collections::BTreeMap<String, String>,
    writable: &mut Vec<PathBuf>,
) {
    if !matches!(program_name(command), "npx" | "npm") {
        return;
    }
    let cache = env
        .get("npm_config_cache")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("npm_config_cache").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".npm")));
    let Some(cache) = cache.filter(|c| c.is_dir()) else {
        return;
    };
    env.entry("npm_config_cache".into())
        .or_insert_with(|| cache.display().to_string());
    env.entry("npm_config_prefer_offline".into())
        .or_insert_with(|| "true".into());
    env.entry("npm_config_update_notifier".into())
        .or_insert_with(|| "false".into());
    writable.push(cache);
}

/// `uvx` and `uv` install a tool into their cache before it starts: the host's uv cache is
/// writable inside, uv works offline when the server has no network (a cached tool starts
/// with none), and it is given the interpreter the gateway's own `python3` is, visible inside.
fn uv_cache(
    command: &str,
    env: &mut std::collections::BTreeMap<String, String>,
    writable: &mut Vec<PathBuf>,
    read_only: &mut Vec<PathBuf>,
    offline: bool,
) {
    if !matches!(program_name(command), "uvx" | "uv") {
        return;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let cache = env
        .get("UV_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("UV_CACHE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| Path::new(&d).join("uv")))
        .or_else(|| home.as_ref().map(|h| h.join(".cache/uv")));
    if let Some(cache) = cache.filter(|c| c.is_dir()) {
        env.entry("UV_CACHE_DIR".into())
            .or_insert_with(|| cache.display().to_string());
        writable.push(cache);
    }
    if offline {
        env.entry("UV_OFFLINE".into()).or_insert_with(|| "1".into());
    }
    if let Some(managed) = home
        .map(|h| h.join(".local/share/uv/python"))
        .filter(|d| d.is_dir())
    {
        read_only.push(managed);
    }
    if !env.contains_key("UV_PYTHON")
        && let Some(python) = real_python(env.get("PATH").map(String::as_str).unwrap_or_default())
    {
        read_only.extend(installation(&python));
        env.insert("UV_PYTHON".into(), python.display().to_string());
    }
}

/// The interpreter `python3` on `path` really is (through a pyenv shim, say), by asking it.
fn real_python(path: &str) -> Option<PathBuf> {
    let python = lookup("python3", path)?;
    let output = std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let executable = PathBuf::from(text.trim());
    executable.is_absolute().then_some(executable)
}

fn is_system(path: &Path) -> bool {
    // What every sandbox sees read-only already, and /etc, which is never exposed whole.
    sandbox_runner::SYSTEM_DIRS
        .iter()
        .chain(&["/etc"])
        .any(|dir| path.starts_with(dir))
}

/// Directories that must never be exposed whole because a program happens to live in them.
fn is_home(path: &Path) -> bool {
    path == Path::new("/")
        || path == Path::new("/root")
        || path == Path::new("/home")
        || path.parent() == Some(Path::new("/home"))
        || std::env::var_os("HOME").is_some_and(|home| path == Path::new(&home))
        || path == std::env::temp_dir()
}

/// The installation a program belongs to: `/x/bin/prog` is in `/x`, `/x/prog` in `/x`; just
/// the program itself when that would be a home or temporary directory.
fn installation(program: &Path) -> Option<PathBuf> {
    if is_system(program) {
        return None;
    }
    let dir = program.parent()?;
    let root = if dir.file_name().is_some_and(|n| n == "bin") {
        dir.parent()?
    } else {
        dir
    };
    if is_home(root) || is_system(root) {
        Some(program.to_path_buf())
    } else {
        Some(root.to_path_buf())
    }
}

fn lookup(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The interpreter of a script (`#!/x/python`, or `#!/usr/bin/env node` looked up on `path`).
fn interpreter(script: &Path, path: &str) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(line);
    let line = line.lines().next()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if first.ends_with("/env") {
        let program = words.find(|w| !w.starts_with('-'))?;
        return lookup(program, path);
    }
    Some(PathBuf::from(first))
}

/// Host paths a server needs to read to run at all: the installation of its command (as
/// named and with links resolved, so a virtualenv and its base interpreter), of a script's
/// interpreter, and the `node_modules` tree (or the file) of a script given as an argument.
pub fn installation_paths(
    command: &str,
    args: &[String],
    path: &str,
    workdir: &Path,
) -> Vec<PathBuf> {
    let mut programs = Vec::new();
    if let Some(program) = lookup(command, path) {
        if let Some(interp) = interpreter(&program, path) {
            programs.push(interp);
        }
        programs.push(program);
    }
    let mut found = Vec::new();
    for program in programs {
        found.extend(installation(&program));
        if let Ok(real) = program.canonicalize() {
            found.extend(installation(&real));
        }
    }
    for arg in args {
        let arg = Path::new(arg);
        if !arg.is_absolute() || !arg.is_file() || arg.starts_with(workdir) || is_system(arg) {
            continue;
        }
        let modules = arg
            .ancestors()
            .filter(|a| a.file_name().is_some_and(|n| n == "node_modules"))
            .last();
        found.push(modules.unwrap_or(arg).to_path_buf());
    }
    found
}

/// The longest line of a server's stderr that is logged whole; the rest of a longer one is
/// dropped, so a server cannot grow the gateway's memory by writing without a newline.
const STDERR_LINE_MAX: usize = 8 * 1024;

/// The lines of a server's stderr, as text: bytes that are not UTF-8 are replaced, and a line
/// over [`STDERR_LINE_MAX`] is cut there and marked. Ends with the stream or its first error.
struct StderrLines<R> {
    reader: tokio::io::BufReader<R>,
    line: Vec<u8>,
    ended: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> StderrLines<R> {
    fn new(stderr: R) -> Self {
        Self {
            reader: tokio::io::BufReader::new(stderr),
            line: Vec::new(),
            ended: false,
        }
    }

    async fn next(&mut self) -> Option<String> {
        let mut cut = false;
        while !self.ended {
            let chunk = match self.reader.fill_buf().await {
                Ok(chunk) if !chunk.is_empty() => chunk,
                _ => {
                    self.ended = true;
                    break;
                }
            };
            let end = chunk.iter().position(|&b| b == b'\n');
            let body = &chunk[..end.unwrap_or(chunk.len())];
            let room = STDERR_LINE_MAX.saturating_sub(self.line.len());
            cut |= body.len() > room;
            self.line.extend_from_slice(&body[..body.len().min(room)]);
            let taken = end.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(taken);
            if end.is_some() {
                return Some(self.take(cut));
            }
        }
        (!self.line.is_empty()).then(|| self.take(cut))
    }

    fn take(&mut self, cut: bool) -> String {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let line = if cut {
            format!("{text} [cut at {STDERR_LINE_MAX} bytes]")
        } else {
            text.to_owned()
        };
        self.line.clear();
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stderr_lines_are_text_of_bounded_length() {
        let mut input = b"first\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * STDERR_LINE_MAX));
        input.extend(b"\n\xff\xfe after bad bytes\nlast, without a newline");
        let mut lines = StderrLines::new(&input[..]);
        assert_eq!(lines.next().await.as_deref(), Some("first"));
        let long = lines.next().await.unwrap();
        assert!(long.starts_with(&"x".repeat(STDERR_LINE_MAX)));
        assert!(
            long.ends_with(" [cut at 8192 bytes]"),
            "{}",
            &long[long.len() - 40..]
        );
        assert!(long.len() < STDERR_LINE_MAX + 40);
        assert_eq!(
            lines.next().await.as_deref(),
            Some("\u{fffd}\u{fffd} after bad bytes")
        );
        assert_eq!(
            lines.next().await.as_deref(),
            Some("last, without a newline")
        );
        assert_eq!(lines.next().await, None);
    }

    #[test]
    fn installations() {
        assert_eq!(
            installation(Path::new("/srv/tools/venv/bin/python")),
            Some(PathBuf::from("/srv/tools/venv"))
        );
        assert_eq!(installation(Path::new("/usr/bin/python3")), None);
        // A program in a home directory exposes itself, not the home directory.
        assert_eq!(
            installation(Path::new("/root/bin/server")),
            Some(PathBuf::from("/root/bin/server"))
        );
        assert_eq!(
            installation(Path::new("/home/ann/server")),
            Some(PathBuf::from("/home/ann/server"))
        );
    }

    #[test]
    fn node_modules_of_a_script_argument() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("node_modules/@scope/pkg/dist/index.js");
        std::fs::create_dir_all(script.parent().expect("parent")).expect("mkdir");
        std::fs::write(&script, "").expect("write");
        let paths = installation_paths(
            "/usr/bin/true",
            &[script.display().to_string(), "stdio".into()],
            "/usr/bin",
            Path::new("/nonexistent"),
        );
        assert_eq!(paths, vec![dir.path().join("node_modules")]);
    }

    #[test]
    fn a_call_sees_the_notices_after_its_mark_and_the_report_stays_bounded() {
        let report = SandboxReport::new();
        let started = || Event::Connected {
            target: "a:1".into(),
        };
        assert_eq!(SandboxReport::notice(&started()), None);
        let denied = Event::Denied {
            action: "connect".into(),
            target: "10.0.0.1:22".into(),
            reason: "not in the allow-list".into(),
        };
        report.push(SandboxReport::notice(&denied).expect("a notice"));
        let mark = report.mark();
        assert_eq!(report.since(mark), vec![]);
        let hit = Event::LimitHit {
            limit: LimitKind::Memory,
            detail: "OOM kill".into(),
        };
        report.push(SandboxReport::notice(&hit).expect("a notice"));
        assert_eq!(
            report.since(mark),
            vec![Notice {
                kind: "limit-hit",
                detail: "memory: OOM kill".into()
            }]
        );
        assert_eq!(report.since(0).len(), 2);
        let facts = crate::audit::SandboxFacts {
            id: report.id.clone(),
            notices: report.since(0),
        };
        // A limit hit says more than the refusals around it.
        assert_eq!(facts.degradation(), Some("limit-hit"));
        for _ in 0..100 {
            report.push(SandboxReport::notice(&denied).expect("a notice"));
        }
        assert_eq!(report.since(0).len(), RECENT_NOTICES);
        assert_eq!(report.since(report.mark()), vec![]);
    }
}
