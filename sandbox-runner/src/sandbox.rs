//! Starting one sandbox: the command resolved and checked, the tier chosen (no silent
//! downgrade), the cgroups made, the processes started. Runs before the runner starts any
//! thread: `clone` and `fork` need a single-threaded process.

#![allow(unsafe_code)] // System calls without safe wrappers; each block says why it is sound.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::sched::clone;
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{Pid, pipe2};

use crate::cgroup::Cgroups;
use crate::confine::{self, Rlimits};
use crate::namespaces::{self, ChildFds, Plan};
use crate::protocol::{Isolation, LaunchSpec, StdoutMode, Tier};

/// `PATH` when the spec names none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const DEFAULT_OPEN_FILES: u64 = 1024;
const CLONE_STACK: usize = 256 * 1024;

/// A launch that did not happen, and why.
#[derive(Debug)]
pub struct Refused {
    pub message: String,
    /// Set when the refusal is a denial (a command not on the allow-list).
    pub denied: Option<(String, String)>,
}

impl Refused {
    fn new(message: impl Into<String>) -> Self {
        Refused {
            message: message.into(),
            denied: None,
        }
    }
}

/// A running sandbox, as the runner holds it.
pub struct Running {
    pub tier_requested: Tier,
    pub tier: Tier,
    /// The process the runner waits for: the sandbox's init, or the program itself.
    pub pid: Pid,
    pub command: PathBuf,
    pub started: Instant,
    pub start_us: u64,
    pub isolation: Isolation,
    pub cgroups: Cgroups,
    /// The program's stdout (relay mode) and stderr.
    pub stdout: Option<OwnedFd>,
    pub stderr: OwnedFd,
    /// `exit N` / `signal N` from the sandbox's init (namespaces tier).
    pub status: Option<OwnedFd>,
    /// Where the init sent the proxy's listening socket.
    pub proxy: Option<OwnedFd>,
    /// The proxy's Unix socket for a `gvisor` sandbox's `egress-shim`.
    pub egress: Option<std::os::unix::net::UnixListener>,
    /// The directory the sandbox's root was mounted on (removed at the end).
    pub root_dir: Option<PathBuf>,
    /// The OCI bundle of a `gvisor` sandbox (deleted at the end, before `root_dir`).
    pub bundle: Option<crate::gvisor::Bundle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.bundle.take());
        if let Some(dir) = &self.root_dir {
            let _ = std::fs::remove_file(dir.join(EGRESS_SOCKET_NAME));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The egress proxy's socket of a `gvisor` sandbox, in its bundle directory.
const EGRESS_SOCKET_NAME: &str = "egress.sock";

/// The runner's own program and the arguments before its subcommand (`sandbox-runner` in
/// `mcp-gateway sandbox-runner launch ...`): how the egress shim is started inside a sandbox.
fn shim_command() -> Option<Vec<String>> {
    let program = std::env::current_exe().ok()?.to_str()?.to_owned();
    let mut command = vec![program];
    for arg in std::env::args_os().skip(1) {
        let arg = arg.to_str()?;
        if arg == "launch" || arg == "run" {
            return Some(command);
        }
        command.push(arg.to_owned());
    }
    None
}

/// Finds the program: an absolute or relative path as given, else the first match in `PATH`.
/// The path is returned as found, not with links resolved: an interpreter in a virtualenv
/// finds its environment through the path it was started by.
pub fn resolve_command(command: &str, path: &str, workdir: &Path) -> Result<PathBuf, String> {
    let candidate = if command.contains('/') {
        let path = Path::new(command);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            workdir.join(path)
        }
    } else {
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(command))
            .find(|p| is_executable(p))
            .ok_or_else(|| format!("`{command}` was not found in PATH ({path})"))?
    };
    if !is_executable(&candidate) {
        return Err(format!(
            "`{}` is not an executable file",
            candidate.display()
        ));
    }
    Ok(candidate)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn cstring(bytes: &[u8]) -> Result<CString, Refused> {
    CString::new(bytes).map_err(|_| Refused::new("an argument or variable contains a NUL byte"))
}

fn environment(spec: &LaunchSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !spec.env.contains_key("PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !spec.allow_net.is_empty() {
        let proxy = format!("http://127.0.0.1:{}", namespaces::PROXY_PORT);
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            if !spec.env.contains_key(name) {
                env.push((name.into(), proxy.clone()));
            }
        }
    }
    env
}

/// Starts the sandbox of `spec`, trying its fallback tier when the requested one is unavailable.
pub fn start(spec: &LaunchSpec) -> Result<Running, Refused> {
    let begin = Instant::now();
    let path = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let command = resolve_command(&spec.command, path, &spec.workdir).map_err(Refused::new)?;
    // The allow-list is checked against the file itself, links resolved on both sides.
    let real = command
        .canonicalize()
        .map_err(|e| Refused::new(format!("`{}`: {e}", command.display())))?;
    if !spec.allowed_commands.is_empty()
        && !spec
            .allowed_commands
            .iter()
            .any(|allowed| allowed.canonicalize().is_ok_and(|a| a == real))
    {
        return Err(Refused {
            message: format!("`{}` is not on the command allow-list", command.display()),
            denied: Some(("exec".into(), command.display().to_string())),
        });
    }
    if !spec.workdir.is_dir() {
        return Err(Refused::new(format!(
            "the working directory {} does not exist",
            spec.workdir.display()
        )));
    }
    let mut tiers = vec![spec.tier];
    tiers.extend(spec.fallback.filter(|f| *f != spec.tier));
    let mut reasons = Vec::new();
    for tier in tiers {
        if tier == Tier::Process && spec.production {
            reasons.push("process: refused in production".to_owned());
            continue;
        }
        let attempt = match tier {
            Tier::Namespaces => start_namespaces(spec, &command, begin),
            Tier::Process => start_process(spec, &command, begin),
            Tier::Gvisor => start_gvisor(spec, &command, begin),
        };
        match attempt {
            Ok(Ok(mut running)) => {
                running.tier_requested = spec.tier;
                if running.tier != spec.tier {
                    running.isolation.notes.push(format!(
                        "tier {} was requested and is unavailable ({}); the configured fallback {} is in use",
                        spec.tier,
                        reasons.join("; "),
                        running.tier
                    ));
                }
                return Ok(running);
            }
            Ok(Err(refused)) => return Err(refused),
            Err(Unavailable(reason)) => reasons.push(format!("{tier}: {reason}")),
        }
    }
    Err(Refused::new(format!(
        "no permitted isolation tier is available: {}",
        reasons.join("; ")
    )))
}

/// The tier cannot run on this host (as opposed to a launch that failed inside a working tier).
struct Unavailable(String);

type Attempt = Result<Result<Running, Refused>, Unavailable>;

fn pipe() -> Result<(OwnedFd, OwnedFd), Refused> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| Refused::new(format!("pipe: {e}")))
}

/// How long the sandbox may take from `clone` to the program's `execve`.
const START_LIMIT_MS: u16 = 30_000;

/// Reads what the program's process wrote before `execve` failed; empty when `execve` worked.
/// A sandbox that neither execs nor fails within [`START_LIMIT_MS`] is reported as failed.
fn read_exec_error(fd: OwnedFd) -> String {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    let ready = {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            PollFlags::POLLIN,
        )];
        poll(&mut fds, PollTimeout::from(START_LIMIT_MS))
    };
    if ready == Ok(0) {
        return format!(
            "the sandbox did not start within {} s",
            START_LIMIT_MS / 1000
        );
    }
    let mut message = String::new();
    let _ = std::fs::File::from(fd).read_to_string(&mut message);
    message
}

fn visible_in_sandbox(path: &Path, spec: &LaunchSpec) -> bool {
    namespaces::SYSTEM_DIRS
        .iter()
        .any(|dir| path.starts_with(dir))
        || path.starts_with(&spec.workdir)
        || spec.read_only.iter().any(|p| path.starts_with(p))
        || spec.writable.iter().any(|p| path.starts_with(p))
}

/// The spec's read-only paths, and the program itself (as named and with links resolved) where
/// nothing else makes it visible: only its file is added.
fn read_only_paths(spec: &LaunchSpec, command: &Path) -> Vec<PathBuf> {
    let mut read_only = spec.read_only.clone();
    for program in [
        command.to_path_buf(),
        command.canonicalize().unwrap_or_default(),
    ] {
        if !program.as_os_str().is_empty() && !visible_in_sandbox(&program, spec) {
            read_only.push(program);
        }
    }
    read_only
}

/// The runner's child for the `process` and `gvisor` tiers (the program, or runsc): the
/// runner's stdin, stdout relayed or handed over, stderr relayed, its own process group, killed
/// with the runner, and `rlimits` when given. Returns its pid and the read ends of its output.
fn spawn_child(
    mut process: std::process::Command,
    stdout: StdoutMode,
    rlimits: Option<Rlimits>,
) -> Result<(Pid, Option<OwnedFd>, OwnedFd), Refused> {
    let (stderr_read, stderr_write) = pipe()?;
    process
        .stdin(Stdio::inherit())
        .stderr(Stdio::from(stderr_write))
        .process_group(0);
    let stdout_read = match stdout {
        StdoutMode::Relay => {
            let (read, write) = pipe()?;
            process.stdout(Stdio::from(write));
            Some(read)
        }
        StdoutMode::Direct => {
            process.stdout(Stdio::inherit());
            None
        }
    };
    let apply = move || {
        // SAFETY: integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        match &rlimits {
            Some(rlimits) => rlimits.apply().map_err(std::io::Error::from),
            None => Ok(()),
        }
    };
    // SAFETY: the closure calls only async-signal-safe functions (prctl, setrlimit).
    unsafe { process.pre_exec(apply) };
    let child = process.spawn().map_err(|e| {
        Refused::new(format!(
            "cannot start {}: {e}",
            process.get_program().to_string_lossy()
        ))
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // The runner reaps the process itself (waitpid on the pid): `Child` is not needed.
    drop(child);
    Ok((pid, stdout_read, stderr_read))
}

/// The runner's ends of the pipes to a `namespaces` sandbox (the children's are [`ChildFds`]).
struct RunnerFds {
    go: OwnedFd,
    exec_error: OwnedFd,
    status: OwnedFd,
    stderr: OwnedFd,
    stdout: Option<OwnedFd>,
    proxy: Option<OwnedFd>,
}

/// Every pipe between the runner and a `namespaces` sandbox, both ends.
fn channels(spec: &LaunchSpec) -> Result<(RunnerFds, ChildFds), Refused> {
    let (go_read, go_write) = pipe()?;
    let (error_read, error_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (stdout_read, stdout_write) = match spec.stdout {
        StdoutMode::Relay => pipe().map(|(r, w)| (Some(r), Some(w)))?,
        StdoutMode::Direct => (None, None),
    };
    let (proxy_runner, proxy_child) = if spec.allow_net.is_empty() {
        (None, None)
    } else {
        socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map(|(a, b)| (Some(a), Some(b)))
        .map_err(|e| Refused::new(format!("socketpair: {e}")))?
    };
    Ok((
        RunnerFds {
            go: go_write,
            exec_error: error_read,
            status: status_read,
            stderr: stderr_read,
            stdout: stdout_read,
            proxy: proxy_runner,
        },
        ChildFds {
            go: go_read,
            exec_error: error_write,
            status: status_write,
            proxy: proxy_child,
            stdout: stdout_write,
            stderr: stderr_write,
        },
    ))
}

fn start_namespaces(spec: &LaunchSpec, command: &Path, begin: Instant) -> Attempt {
    let landlock_abi = confine::landlock_abi();
    let seccomp = match confine::seccomp_filters() {
        Ok(filters) => filters,
        Err(e) => return Ok(Err(Refused::new(format!("seccomp filter: {e}")))),
    };
    let cgroups = Cgroups::create(&spec.limits);
    let mut isolation = Isolation {
        namespaces: namespaces::NAMESPACES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        landlock_abi,
        seccomp: true,
        no_new_privs: true,
        capabilities_dropped: true,
        limits: cgroups.enforced.clone(),
        notes: Vec::new(),
    };
    let limits = &spec.limits;
    let rlimits = Rlimits {
        open_files: limits.open_files.unwrap_or(DEFAULT_OPEN_FILES),
        memory: limits.memory_bytes.filter(|_| !cgroups.memory),
        pids: limits.pids.filter(|_| !cgroups.pids),
        cpu_seconds: limits
            .cpu_seconds
            .filter(|_| !cgroups.cpu_time)
            .map(|s| s.ceil() as u64),
    };
    note_rlimit_fallbacks(&mut isolation, &rlimits, limits.cpu_seconds.is_some());
    if landlock_abi.is_none() {
        isolation.notes.push(
            "Landlock is not available on this kernel; the private root alone confines files"
                .into(),
        );
    }
    let read_only = read_only_paths(spec, command);
    let Ok(root_dir) = make_root_dir() else {
        return Ok(Err(Refused::new(
            "cannot create the sandbox's root directory",
        )));
    };
    let env = environment(spec);
    let build = || -> Result<Plan, Refused> {
        Ok(Plan {
            new_root: root_dir.clone(),
            workdir: spec.workdir.clone(),
            read_only: read_only.clone(),
            writable: spec.writable.clone(),
            program: cstring(command.as_os_str().as_bytes())?,
            argv: std::iter::once(Ok(cstring(command.as_os_str().as_bytes())?))
                .chain(spec.args.iter().map(|a| cstring(a.as_bytes())))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
                .collect::<Result<_, _>>()?,
            rlimits,
            landlock_abi,
            seccomp,
            proxy: !spec.allow_net.is_empty(),
            passwd: format!(
                "root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{id}:{id}::/tmp:/usr/sbin/nologin\n",
                id = namespaces::INSIDE_ID
            ),
            group: format!("root:x:0:\nsandbox:x:{}:\n", namespaces::INSIDE_ID),
        })
    };
    let plan = match build() {
        Ok(plan) => plan,
        Err(refused) => return Ok(Err(refused)),
    };
    let (ours, child_fds) = match channels(spec) {
        Ok(channels) => channels,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut stack = vec![0u8; CLONE_STACK];
    let callback = Box::new(|| namespaces::init(&plan, &child_fds));
    // SAFETY: the runner is single-threaded here, so the child (a copy of this process) may run
    // arbitrary code; it never returns into the runner's frames, only from the callback.
    let cloned = unsafe {
        clone(
            callback,
            &mut stack,
            namespaces::clone_flags(),
            Some(Signal::SIGCHLD as i32),
        )
    };
    let pid = match cloned {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::remove_dir(&root_dir);
            return Err(Unavailable(format!("cannot create namespaces: {e}")));
        }
    };
    drop(child_fds);
    let mut running = Running {
        tier_requested: spec.tier,
        tier: Tier::Namespaces,
        pid,
        command: command.to_path_buf(),
        started: begin,
        start_us: 0,
        isolation,
        cgroups,
        stdout: ours.stdout,
        stderr: ours.stderr,
        status: Some(ours.status),
        proxy: ours.proxy,
        egress: None,
        root_dir: Some(root_dir),
        bundle: None,
    };
    if let Err(e) = namespaces::write_id_maps(pid) {
        kill_now(pid);
        return Ok(Err(Refused::new(format!(
            "writing the user namespace maps: {e}"
        ))));
    }
    if let Err(e) = running.cgroups.add(pid.as_raw() as u32) {
        running.isolation.notes.push(format!(
            "cannot join the sandbox's cgroups ({e}); limits fall back to rlimits"
        ));
    }
    if nix::unistd::write(&ours.go, b"g").is_err() {
        kill_now(pid);
        return Ok(Err(Refused::new(
            "the sandbox's init died before it started",
        )));
    }
    drop(ours.go);
    let message = read_exec_error(ours.exec_error);
    running.start_us = begin.elapsed().as_micros() as u64;
    // The root was mounted on this directory inside the sandbox's own mount namespace, and
    // the sandbox has left it (pivot_root): the host's empty directory can go now, so that a
    // runner killed later leaves nothing behind.
    if let Some(dir) = running.root_dir.take() {
        let _ = std::fs::remove_dir(dir);
    }
    if !message.is_empty() {
        kill_now(pid);
        return Ok(Err(Refused::new(format!(
            "cannot start the program: {message}"
        ))));
    }
    Ok(Ok(running))
}

fn note_rlimit_fallbacks(isolation: &mut Isolation, rlimits: &Rlimits, cpu_asked: bool) {
    if rlimits.memory.is_some() {
        isolation
            .limits
            .push("memory: rlimit (RLIMIT_DATA, per process)".into());
        isolation.notes.push(
            "no memory cgroup is delegated to the runner: the memory limit applies per process"
                .into(),
        );
    }
    if rlimits.pids.is_some() {
        isolation.limits.push("pids: rlimit (RLIMIT_NPROC)".into());
        isolation.notes.push(
            "no pids cgroup is delegated to the runner: RLIMIT_NPROC limits processes".into(),
        );
    }
    if cpu_asked {
        if rlimits.cpu_seconds.is_some() {
            isolation
                .limits
                .push("cpu time: rlimit (RLIMIT_CPU, per process)".into());
        } else {
            isolation.limits.push("cpu time: cgroup accounting".into());
        }
    }
}

fn kill_now(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Prefix of the directories new roots are mounted on; the runner's pid follows.
pub const ROOT_DIR_PREFIX: &str = "mcp-sandbox-root-";

/// Removes the directory of a dead runner: empty (a namespaces root), or a gVisor bundle, which
/// is removed whole only when nothing is mounted under it.
fn remove_stale(dir: &Path) {
    if std::fs::remove_dir(dir).is_ok() || !dir.join("config.json").is_file() {
        return;
    }
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(point).starts_with(dir));
    if !mounted {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The base directory of new roots: `$XDG_RUNTIME_DIR`, else the temporary directory.
pub fn root_dir_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

fn make_root_dir() -> std::io::Result<PathBuf> {
    let base = root_dir_base();
    // Directories of runners that were killed before they could remove theirs.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let owner = name
                .to_str()
                .and_then(|n| n.strip_prefix(ROOT_DIR_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = owner
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                remove_stale(&entry.path());
            }
        }
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = hex::encode(bytes);
    let dir = base.join(format!("{ROOT_DIR_PREFIX}{}-{name}", std::process::id()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

fn start_gvisor(spec: &LaunchSpec, command: &Path, begin: Instant) -> Attempt {
    if let Some(reason) = crate::gvisor::unavailable_reason() {
        return Err(Unavailable(reason));
    }
    let read_only = read_only_paths(spec, command);
    let Ok(dir) = make_root_dir() else {
        return Ok(Err(Refused::new(
            "cannot create the sandbox's bundle directory",
        )));
    };
    let env = environment(spec);
    // The runner's own cgroups, as in the namespaces tier, so that it can read what the sandbox
    // used and which limit it hit. The pids limit counts gVisor's own threads too.
    let mut cgroup_limits = spec.limits.clone();
    cgroup_limits.pids = cgroup_limits
        .pids
        .map(|pids| pids + crate::gvisor::GVISOR_THREADS);
    let cgroups = Cgroups::create(&cgroup_limits);
    // runsc finds a relative `cgroupsPath` under its own cgroup in a v1 hierarchy, but beside it
    // on a v2-only host, where it makes and limits cgroups of its own instead.
    let cgroups = if cgroups.has_v1() {
        cgroups
    } else {
        Cgroups::default()
    };
    // Approved endpoints: the proxy on a Unix socket, and the runner's egress shim inside.
    let (egress, egress_spec) = if spec.allow_net.is_empty() {
        (None, None)
    } else {
        let socket = dir.join(EGRESS_SOCKET_NAME);
        let listener = match std::os::unix::net::UnixListener::bind(&socket) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Ok(Err(Refused::new(format!(
                    "cannot serve the egress proxy on {}: {e}",
                    socket.display()
                ))));
            }
        };
        let Some(shim) = shim_command() else {
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_dir(&dir);
            return Ok(Err(Refused::new(
                "cannot find the runner's own program for the egress shim",
            )));
        };
        (Some(listener), Some(crate::gvisor::Egress { socket, shim }))
    };
    let bundle = match crate::gvisor::write_bundle(
        &dir,
        spec,
        command,
        &read_only,
        &env,
        confine::DENIED_SYSCALL_NAMES,
        crate::gvisor::Ties {
            cgroups_path: cgroups.relative_path(),
            egress: egress_spec.as_ref(),
        },
    ) {
        Ok(bundle) => bundle,
        Err(e) => {
            if let Some(egress) = &egress_spec {
                let _ = std::fs::remove_file(&egress.socket);
            }
            let _ = std::fs::remove_dir(&dir);
            return Ok(Err(Refused::new(format!("writing the OCI bundle: {e}"))));
        }
    };
    let limits = &spec.limits;
    let mut isolation = Isolation {
        namespaces: ["pid", "net", "ipc", "uts", "mount"]
            .iter()
            .map(|n| format!("{n} (gVisor)"))
            .collect(),
        landlock_abi: None,
        seccomp: true,
        no_new_privs: true,
        capabilities_dropped: true,
        limits: Vec::new(),
        notes: vec![
            "system calls are served by gVisor's user-space kernel (ptrace platform)".into(),
            "start_us counts to runsc's exec; the sandbox boots after it".into(),
        ],
    };
    for (set, name) in [
        (limits.memory_bytes.is_some(), "memory"),
        (limits.pids.is_some(), "pids"),
        (limits.cpus.is_some(), "cpus"),
    ] {
        if set {
            // runsc applies a limit itself only in a cgroup it had to make.
            let ours = cgroups
                .enforced
                .iter()
                .find(|e| e.starts_with(&format!("{name}:")));
            isolation.limits.push(match ours {
                Some(enforced) => enforced.clone(),
                None => format!("{name}: runsc (OCI resources)"),
            });
        }
    }
    if limits.pids.is_some() {
        isolation.notes.push(format!(
            "the pids limit counts gVisor's own threads too: {} are added to it",
            crate::gvisor::GVISOR_THREADS
        ));
    }
    if limits.cpu_seconds.is_some() {
        if cgroups.cpu_time {
            isolation
                .limits
                .push("cpu_seconds: cgroup CPU time, gVisor's own included".into());
        } else {
            isolation.notes.push(
                "cpu_seconds is not enforced: no cgroup measures the sandbox's CPU time".into(),
            );
        }
    }
    let mut process = bundle.command();
    process.env_clear();
    let (pid, stdout_read, stderr_read) = match spawn_child(process, spec.stdout, None) {
        Ok(spawned) => spawned,
        Err(refused) => return Ok(Err(refused)),
    };
    Ok(Ok(Running {
        tier_requested: spec.tier,
        tier: Tier::Gvisor,
        pid,
        command: command.to_path_buf(),
        started: begin,
        start_us: begin.elapsed().as_micros() as u64,
        isolation,
        cgroups,
        stdout: stdout_read,
        stderr: stderr_read,
        status: None,
        proxy: None,
        egress,
        root_dir: Some(dir),
        bundle: Some(bundle),
    }))
}

fn start_process(spec: &LaunchSpec, command: &Path, begin: Instant) -> Attempt {
    let limits = &spec.limits;
    let rlimits = Rlimits {
        open_files: limits.open_files.unwrap_or(DEFAULT_OPEN_FILES),
        memory: limits.memory_bytes,
        pids: None,
        cpu_seconds: limits.cpu_seconds.map(|s| s.ceil() as u64),
    };
    let mut isolation = Isolation {
        notes: vec![
            "the process tier isolates nothing: the program runs with the runner's user, files and network"
                .into(),
        ],
        ..Isolation::default()
    };
    note_rlimit_fallbacks(&mut isolation, &rlimits, limits.cpu_seconds.is_some());
    if limits.pids.is_some() {
        isolation
            .notes
            .push("the pids limit is not enforced in the process tier".into());
    }
    let mut process = std::process::Command::new(command);
    process
        .args(&spec.args)
        .env_clear()
        .envs(environment(spec))
        .current_dir(&spec.workdir);
    let (pid, stdout_read, stderr_read) = match spawn_child(process, spec.stdout, Some(rlimits)) {
        Ok(spawned) => spawned,
        Err(refused) => return Ok(Err(refused)),
    };
    Ok(Ok(Running {
        tier_requested: spec.tier,
        tier: Tier::Process,
        pid,
        command: command.to_path_buf(),
        started: begin,
        start_us: begin.elapsed().as_micros() as u64,
        isolation,
        cgroups: Cgroups::default(),
        stdout: stdout_read,
        stderr: stderr_read,
        status: None,
        proxy: None,
        egress: None,
        root_dir: None,
        bundle: None,
    }))
}

/// Turns a raw descriptor number given on the command line into an owned descriptor.
pub fn adopt_fd(fd: i32) -> Result<OwnedFd, String> {
    if nix::fcntl::fcntl(
        // SAFETY: only used to query the flags of `fd`; an invalid one gives EBADF.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: the descriptor is open and, by the command line's contract, ours to own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(owned)
}
