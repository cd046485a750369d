//! The runner protocol: what the gateway sends the runner, and what the runner reports back.
//!
//! The gateway starts `sandbox-runner launch --control-fd 3` with the server's MCP stream on the
//! runner's stdin and stdout and a Unix socket on fd 3, the control channel. On the control
//! channel the gateway writes one [`LaunchSpec`] as a JSON line; the runner answers with
//! [`Envelope`]s, one JSON line each, numbered from 1; the gateway acknowledges each with a
//! [`Control::Ack`] once it has recorded it. The runner does not exit, and does not forget an
//! event, before the gateway has acknowledged it, so no event is lost; the sequence number lets
//! the gateway drop a repeat, so none is recorded twice.
//!
//! `sandbox-runner run` prints the same envelopes on stdout, without acknowledgements.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An isolation tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Linux namespaces, a private root, Landlock, seccomp, cgroups or rlimits.
    Namespaces,
    /// gVisor's `runsc` on an OCI bundle the runner writes.
    Gvisor,
    /// A plain child process with a clean environment and rlimits: development only.
    Process,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Namespaces => "namespaces",
            Tier::Gvisor => "gvisor",
            Tier::Process => "process",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "namespaces" => Ok(Tier::Namespaces),
            "gvisor" => Ok(Tier::Gvisor),
            "process" => Ok(Tier::Process),
            other => Err(format!(
                "unknown tier `{other}` (expected namespaces, gvisor or process)"
            )),
        }
    }
}

/// What the sandboxed processes may use. Every limit is optional; the runner reports which
/// mechanism enforced each one (a cgroup, or an rlimit where the host delegates no cgroup).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Memory of the whole sandbox, in bytes. Exceeding it is an OOM kill.
    pub memory_bytes: Option<u64>,
    /// Processes and threads in the sandbox at once.
    pub pids: Option<u64>,
    /// CPU time of the whole sandbox, in seconds; the sandbox is killed when it is used up.
    pub cpu_seconds: Option<f64>,
    /// CPU bandwidth, in CPUs (0.5 is half of one CPU); throttles rather than kills.
    pub cpus: Option<f64>,
    /// Wall-clock time from start; the sandbox gets SIGTERM, then SIGKILL after `kill_grace_ms`.
    pub wall_secs: Option<f64>,
    /// Bytes the sandbox may write to stdout and stderr together; more kills it.
    pub output_bytes: Option<u64>,
    /// Open files per process (RLIMIT_NOFILE). Default 1024.
    pub open_files: Option<u64>,
    /// Time between SIGTERM and SIGKILL. Default 2000.
    pub kill_grace_ms: Option<u64>,
}

/// How the server's stdout reaches the runner's stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StdoutMode {
    /// Through the runner, which counts bytes against `output_bytes`.
    #[default]
    Relay,
    /// The runner's own stdout is handed to the server: no copy, no output cap.
    Direct,
}

/// Everything the runner needs to start one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// The program: an absolute path, or a name looked up in the spec's `PATH`.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The whole environment of the program: nothing of the runner's is inherited. When `PATH`
    /// is missing the runner sets a default one.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory: the only host directory the program may write, unless `writable`
    /// names more.
    pub workdir: PathBuf,
    pub tier: Tier,
    /// The tier to use when `tier` is unavailable on this host. Without one, an unavailable tier
    /// fails the launch.
    #[serde(default)]
    pub fallback: Option<Tier>,
    #[serde(default)]
    pub limits: Limits,
    /// `host:port` endpoints the program may reach, through the runner's proxy.
    #[serde(default)]
    pub allow_net: Vec<String>,
    /// Host paths visible read-only inside, at the same path (an interpreter's prefix, say).
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
    /// Host paths visible read-write inside, at the same path.
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// Absolute paths the resolved command must be one of; empty admits any command.
    #[serde(default)]
    pub allowed_commands: Vec<PathBuf>,
    /// In production the `process` tier is refused, even as a fallback.
    #[serde(default)]
    pub production: bool,
    #[serde(default)]
    pub stdout: StdoutMode,
}

/// One message from the gateway on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Control {
    /// The event with this sequence number, and every one before it, is recorded.
    Ack { ack: u64 },
    /// Stop the sandbox: SIGTERM, then SIGKILL after the grace period.
    Stop { stop: bool },
}

/// One event of the runner, numbered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A limit the sandbox ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitKind {
    Memory,
    Pids,
    Cpu,
    Output,
}

/// What the runner reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The program was executed inside the sandbox.
    Started {
        tier_requested: Tier,
        tier: Tier,
        /// The program's process id as the host sees it (for `namespaces`, the sandbox's init).
        pid: u32,
        /// The resolved absolute path of the program.
        command: String,
        /// Microseconds from the runner's start of the launch to the program's exec.
        start_us: u64,
        isolation: Isolation,
    },
    /// The sandbox could not be started; nothing ran.
    Failed { message: String },
    /// The runner refused something the program asked for (a command, a connection).
    Denied {
        action: String,
        target: String,
        reason: String,
    },
    /// The proxy opened an approved connection.
    Connected { target: String },
    /// The program exceeded a limit; an `exited` event follows.
    LimitHit { limit: LimitKind, detail: String },
    /// The wall-clock limit ran out; an `exited` event follows.
    TimedOut { after_ms: u64 },
    /// Output of the program (`sandbox-runner run` only), lossily decoded as UTF-8.
    Output { stream: String, data: String },
    /// The program ended; the sandbox and everything in it is gone.
    Exited {
        code: Option<i32>,
        signal: Option<String>,
        usage: Usage,
    },
}

/// How a sandbox is isolated: reported in `started`, in status and in audit records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Isolation {
    /// Namespaces the sandbox has of its own.
    pub namespaces: Vec<String>,
    /// The Landlock ABI version enforced, when Landlock is.
    pub landlock_abi: Option<i32>,
    pub seccomp: bool,
    pub no_new_privs: bool,
    pub capabilities_dropped: bool,
    /// How each limit is enforced, e.g. `memory: cgroup v1`, `pids: rlimit`.
    pub limits: Vec<String>,
    /// What is weaker than asked for, said plainly.
    pub notes: Vec<String>,
}

/// Resources the sandbox used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub wall_ms: u64,
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    /// Peak memory in bytes: of the whole sandbox from its cgroup, else the largest process.
    pub peak_memory_bytes: Option<u64>,
    pub output_bytes: u64,
}

/// The JSON Schema of the protocol, committed as `schemas/runner-protocol.schema.json`.
pub fn json_schema() -> serde_json::Value {
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct RunnerProtocol {
        launch: LaunchSpec,
        control: Control,
        event: Envelope,
    }
    serde_json::to_value(schemars::schema_for!(RunnerProtocol)).unwrap_or_default()
}
