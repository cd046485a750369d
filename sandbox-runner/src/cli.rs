//! The `sandbox-runner` command line, shared by the `sandbox-runner` binary and
//! `mcp-gateway sandbox-runner` (so a gateway built alone still has its runner).
//!
//! - `sandbox-runner probe` prints what each tier can do on this host, as JSON.
//! - `sandbox-runner run --tier T --workdir DIR [limits] -- CMD ARGS...` runs one command in a
//!   sandbox and prints its events as JSON lines (its output included), for operators checking a
//!   host and for tests.
//! - `sandbox-runner launch --control-fd N` is how the gateway starts a server: the launch spec
//!   and the acknowledged events travel on descriptor N, the MCP stream on stdin and stdout.

#![allow(unsafe_code)] // System calls without safe wrappers; each block says why it is sound.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::protocol::{Event, LaunchSpec, Limits, StdoutMode, Tier};
use crate::supervise::{self, Sink};
use crate::{parse_size, probe, sandbox};
use clap::{Parser, Subcommand};
use tokio::sync::{Notify, watch};

#[derive(Parser)]
#[command(
    name = "sandbox-runner",
    version,
    about = "Runs MCP servers and commands inside an isolation tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what each isolation tier can do on this host, as JSON.
    Probe,
    /// Run one command in a sandbox and print its events as JSON lines.
    Run(Box<RunArgs>),
    /// Start a server for the gateway: the launch spec and events on the control descriptor.
    Launch {
        /// The descriptor of the control channel (a Unix stream socket).
        #[arg(long)]
        control_fd: i32,
    },
    /// Inside a gvisor sandbox: forward the egress proxy's address to the runner's socket and
    /// run the command (the runner starts it; not for direct use).
    #[command(hide = true)]
    EgressShim {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        socket: PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// namespaces, gvisor or process.
    #[arg(long, default_value = "namespaces")]
    tier: Tier,
    /// The tier to use when `--tier` is unavailable here.
    #[arg(long)]
    fallback: Option<Tier>,
    /// The working directory: the one host directory the command may write.
    #[arg(long)]
    workdir: PathBuf,
    /// An endpoint the command may reach through the proxy (repeatable).
    #[arg(long = "allow-net", value_name = "HOST:PORT")]
    allow_net: Vec<String>,
    /// A host path visible read-only inside (repeatable).
    #[arg(long = "read-only", value_name = "PATH")]
    read_only: Vec<PathBuf>,
    /// A host path visible read-write inside (repeatable).
    #[arg(long, value_name = "PATH")]
    writable: Vec<PathBuf>,
    /// An environment variable of the command (repeatable); nothing else is inherited.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Memory of the whole sandbox (512M, 1G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Processes and threads at once.
    #[arg(long)]
    pids: Option<u64>,
    /// CPU seconds before the sandbox is killed.
    #[arg(long)]
    cpu_seconds: Option<f64>,
    /// CPU bandwidth in CPUs (0.5 = half a CPU).
    #[arg(long)]
    cpus: Option<f64>,
    /// Wall-clock seconds before SIGTERM, then SIGKILL.
    #[arg(long)]
    wall_secs: Option<f64>,
    /// Bytes of stdout and stderr before the sandbox is killed.
    #[arg(long, value_parser = parse_size)]
    output_bytes: Option<u64>,
    /// Milliseconds between SIGTERM and SIGKILL.
    #[arg(long)]
    kill_grace_ms: Option<u64>,
    /// Absolute paths the command must resolve to (repeatable); none admits any command.
    #[arg(long = "allow-command", value_name = "PATH")]
    allowed_commands: Vec<PathBuf>,
    /// Refuse the process tier.
    #[arg(long)]
    production: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

impl RunArgs {
    fn into_spec(self) -> Result<LaunchSpec, String> {
        let mut env = BTreeMap::new();
        for pair in self.env {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("--env {pair}: expected NAME=VALUE"))?;
            env.insert(name.to_owned(), value.to_owned());
        }
        let mut command = self.command.into_iter();
        let program = command.next().ok_or("no command given")?;
        let workdir = self
            .workdir
            .canonicalize()
            .map_err(|e| format!("--workdir {}: {e}", self.workdir.display()))?;
        Ok(LaunchSpec {
            command: program,
            args: command.collect(),
            env,
            workdir,
            tier: self.tier,
            fallback: self.fallback,
            limits: Limits {
                memory_bytes: self.memory,
                pids: self.pids,
                cpu_seconds: self.cpu_seconds,
                cpus: self.cpus,
                wall_secs: self.wall_secs,
                output_bytes: self.output_bytes,
                open_files: None,
                kill_grace_ms: self.kill_grace_ms,
            },
            allow_net: self.allow_net,
            read_only: self.read_only,
            writable: self.writable,
            allowed_commands: self.allowed_commands,
            production: self.production,
            stdout: StdoutMode::Relay,
        })
    }
}

/// Runs the command line `args` (the first is the program name) and returns its exit code.
/// Call it before any thread exists: the runner clones sandboxes from a single-threaded
/// process.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Probe => {
            let report = probe::probe();
            match serde_json::to_string_pretty(&report) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("sandbox-runner: {e}"),
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => match (*args).into_spec() {
            Ok(spec) => exit(run(spec)),
            Err(message) => {
                eprintln!("sandbox-runner: {message}");
                ExitCode::from(2)
            }
        },
        Command::Launch { control_fd } => exit(launch(control_fd)),
        Command::EgressShim {
            listen,
            socket,
            command,
        } => exit(crate::shim::run(&listen, &socket, &command)),
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(125))
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("sandbox-runner: cannot start the event loop: {e}");
            None
        }
    }
}

/// `run`: start (single-threaded), then supervise on a runtime, events on stdout.
fn run(spec: LaunchSpec) -> i32 {
    let started = sandbox::start(&spec);
    let Some(rt) = runtime() else { return 125 };
    rt.block_on(async move {
        let mut sink = Sink::Lines { seq: 0 };
        match started {
            Ok(running) => {
                supervise::supervise(running, &spec, &mut sink, Arc::new(Notify::new())).await
            }
            Err(refused) => {
                report_refusal(&mut sink, refused).await;
                125
            }
        }
    })
}

async fn report_refusal(sink: &mut Sink, refused: sandbox::Refused) {
    if let Some((action, target)) = refused.denied {
        sink.emit(Event::Denied {
            action,
            target,
            reason: refused.message.clone(),
        })
        .await;
    }
    sink.emit(Event::Failed {
        message: refused.message,
    })
    .await;
    sink.drain().await;
}

/// `launch`: the spec from the control channel, then as `run`, events acknowledged.
fn launch(control_fd: i32) -> i32 {
    // The gateway gone, the runner stops its sandbox (SIGTERM is handled gracefully).
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
    let control = match sandbox::adopt_fd(control_fd) {
        Ok(fd) => std::os::unix::net::UnixStream::from(fd),
        Err(e) => {
            eprintln!("sandbox-runner: --control-fd: {e}");
            return 2;
        }
    };
    // Read synchronously: the sandbox must be cloned before any thread exists.
    let mut reader = std::io::BufReader::new(&control);
    let mut line = String::new();
    let spec: Result<LaunchSpec, String> = match reader.read_line(&mut line) {
        Ok(0) => Err("the control channel closed before a launch spec arrived".into()),
        Ok(_) => serde_json::from_str(&line).map_err(|e| format!("invalid launch spec: {e}")),
        Err(e) => Err(format!("reading the launch spec: {e}")),
    };
    let leftover = reader.buffer().to_vec();
    drop(reader);
    let started = match &spec {
        Ok(spec) => Some(sandbox::start(spec)),
        Err(_) => None,
    };
    let Some(rt) = runtime() else { return 125 };
    rt.block_on(async move {
        if control.set_nonblocking(true).is_err() {
            return 125;
        }
        let Ok(control) = tokio::net::UnixStream::from_std(control) else {
            return 125;
        };
        let (read_half, writer) = control.into_split();
        let (acked_tx, acked) = watch::channel(0u64);
        let stop = Arc::new(Notify::new());
        let reader = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(leftover), read_half);
        supervise::read_control(reader, acked_tx, stop.clone());
        let mut sink = Sink::Control {
            seq: 0,
            writer,
            acked,
        };
        match (spec, started) {
            (Ok(spec), Some(Ok(running))) => {
                supervise::supervise(running, &spec, &mut sink, stop).await
            }
            (_, Some(Err(refused))) => {
                report_refusal(&mut sink, refused).await;
                125
            }
            (Err(message), _) => {
                report_refusal(
                    &mut sink,
                    sandbox::Refused {
                        message,
                        denied: None,
                    },
                )
                .await;
                2
            }
            (Ok(_), None) => 125,
        }
    })
}
