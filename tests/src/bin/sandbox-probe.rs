//! `sandbox-probe`: the escape battery's probe. The sandbox-runner tests start it inside each
//! isolation tier (the namespaces + seccomp + Landlock sandbox, and the plain process tier) and
//! read what it reports.
//!
//! `sandbox-probe <case> [arg]` tries exactly one escape or resource-abuse action and prints
//! exactly one JSON line on stdout:
//!
//! ```json
//! {"case": "tcp", "ok": false, "detail": "Connection refused (os error 111)", "errno": 111}
//! ```
//!
//! `ok: true` means the action *succeeded* (the escape worked); `ok: false` means it failed or was
//! blocked, and `detail` says how (the errno text, or what was seen). Where an OS error is behind
//! a failure, `errno` carries its number. Some cases add fields of their own (`bytes`, `pids`,
//! `env`, `uid`, `forks`, ...). The probe then exits 0; it never panics.
//!
//! The resource-abuse cases (`fork-bomb`, `mem-hog`, `spin`, `ignore-term`, `flood`, `sleep`) are
//! meant to be stopped by the tier's limits: they run until killed, and print only what their
//! description below says. An unknown case or a bad argument prints a `usage` line and exits 2.

#![allow(unsafe_code)] // fork, signal dispositions, _exit and io_uring_setup; each block says why it is sound.

use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr as UnixSocketAddr, UnixStream},
    },
    path::Path,
    process::ExitCode,
    time::Duration,
};

use nix::{
    errno::Errno,
    mount::{MntFlags, MsFlags},
    sched::CloneFlags,
    sys::{
        signal::{SigHandler, Signal},
        wait::{WaitPidFlag, WaitStatus},
    },
    unistd::{ForkResult, Pid},
};
use serde_json::{Map, Value, json};

/// Every case with the argument it takes, for the usage line.
const CASES: &[(&str, &str)] = &[
    ("tcp", "HOST:PORT"),
    ("udp", "HOST:PORT"),
    ("unix-path", "PATH"),
    ("unix-abstract", "NAME"),
    ("write", "PATH"),
    ("read", "PATH"),
    ("see-pid", "PID"),
    ("kill", "PID"),
    ("userns", ""),
    ("mount", "[DIR]"),
    ("io-uring", ""),
    ("ptrace", ""),
    ("ptrace-pid", "PID"),
    ("env", ""),
    ("hostname", ""),
    ("whoami", ""),
    ("fork-bomb", ""),
    ("mem-hog", ""),
    ("spin", ""),
    ("ignore-term", ""),
    ("flood", ""),
    ("sleep", "SECS"),
    ("exit", "CODE"),
    ("http-get", "HOST:PORT"),
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const FORK_BOMB_LIMIT: u64 = 100_000;
const MEM_CHUNK: usize = 8 << 20;
const FLOOD_BLOCK: usize = 64 << 10;
const HTTP_BODY_LIMIT: usize = 64 << 10;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let case = args.get(1).map_or("", String::as_str);
    let arg = args.get(2).map(String::as_str);

    let report = match (case, arg) {
        ("tcp", Some(addr)) => Some(tcp(addr)),
        ("udp", Some(addr)) => Some(udp(addr)),
        ("unix-path", Some(path)) => Some(unix_path(path)),
        ("unix-abstract", Some(name)) => Some(unix_abstract(name)),
        ("write", Some(path)) => Some(write_file(path)),
        ("read", Some(path)) => Some(read_file(path)),
        ("see-pid", Some(pid)) => parse_pid(pid).map(see_pid),
        ("kill", Some(pid)) => parse_pid(pid).map(kill),
        ("userns", _) => Some(userns()),
        ("mount", dir) => Some(mount_tmpfs(dir.unwrap_or("/tmp"))),
        ("io-uring", _) => Some(io_uring()),
        ("ptrace", _) => Some(ptrace_child()),
        ("ptrace-pid", Some(pid)) => parse_pid(pid).map(ptrace_pid),
        ("env", _) => Some(env()),
        ("hostname", _) => Some(hostname()),
        ("whoami", _) => Some(whoami()),
        ("fork-bomb", _) => fork_bomb(),
        ("mem-hog", _) => mem_hog(),
        ("spin", _) => spin(),
        ("ignore-term", _) => ignore_term(),
        ("flood", _) => flood(),
        ("sleep", Some(secs)) => parse_secs(secs).map(sleep),
        ("exit", Some(code)) => match code.parse::<i32>() {
            Ok(code) => std::process::exit(code),
            Err(_) => None,
        },
        ("http-get", Some(target)) => Some(http_get(target)),
        _ => None,
    };

    match report {
        Some(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        None => {
            usage(case).print();
            ExitCode::from(2)
        }
    }
}

/// The one JSON line a case prints.
struct Report(Map<String, Value>);

impl Report {
    fn new(case: &str, ok: bool, detail: impl Into<String>) -> Self {
        let mut fields = Map::new();
        fields.insert("case".into(), json!(case));
        fields.insert("ok".into(), json!(ok));
        fields.insert("detail".into(), json!(detail.into()));
        Self(fields)
    }

    /// A failure caused by an I/O error: its text, and its errno when it has one.
    fn io_error(case: &str, err: &io::Error) -> Self {
        let report = Self::new(case, false, err.to_string());
        match err.raw_os_error() {
            Some(errno) => report.with("errno", errno),
            None => report,
        }
    }

    /// A failure caused by a failed system call.
    fn errno(case: &str, errno: Errno) -> Self {
        Self::new(case, false, errno.to_string()).with("errno", errno as i32)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Prints the line and flushes; a closed stdout is nobody's business but the reader's.
    fn print(self) {
        let line = Value::Object(self.0).to_string();
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn usage(case: &str) -> Report {
    let detail = match CASES.iter().find(|(name, _)| *name == case) {
        Some((name, arg)) => format!("usage: sandbox-probe {name} {arg}"),
        None => {
            let cases: Vec<String> = CASES
                .iter()
                .map(|(name, arg)| format!("{name} {arg}").trim_end().to_owned())
                .collect();
            format!(
                "usage: sandbox-probe <case> [arg]; cases: {}",
                cases.join(", ")
            )
        }
    };
    Report::new(case, false, detail.trim_end())
}

fn parse_pid(pid: &str) -> Option<Pid> {
    pid.parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .map(Pid::from_raw)
}

fn parse_secs(secs: &str) -> Option<Duration> {
    secs.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// Resolves `HOST:PORT` (names included) to its addresses.
fn resolve(target: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{target} resolved to no address"),
        ));
    }
    Ok(addrs)
}

/// Connects to the first address of `target` that accepts, within `timeout` each.
fn connect(target: &str, timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in resolve(target)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok((stream, addr)),
            Err(err) => last = err,
        }
    }
    Err(last)
}

fn tcp(target: &str) -> Report {
    match connect(target, CONNECT_TIMEOUT) {
        Ok((_, addr)) => Report::new("tcp", true, format!("connected to {addr}")),
        Err(err) => Report::io_error("tcp", &err),
    }
}

fn udp(target: &str) -> Report {
    let addr = match resolve(target).map(|addrs| addrs.first().copied()) {
        Ok(Some(addr)) => addr,
        Ok(None) => return Report::new("udp", false, format!("{target} resolved to no address")),
        Err(err) => return Report::io_error("udp", &err),
    };
    let bind = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = match UdpSocket::bind(bind) {
        Ok(socket) => socket,
        Err(err) => return Report::io_error("udp", &err).with("stage", "bind"),
    };
    match socket.send_to(b"sandbox-probe", addr) {
        Ok(sent) => {
            Report::new("udp", true, format!("sent {sent} bytes to {addr}")).with("sent", sent)
        }
        Err(err) => Report::io_error("udp", &err).with("stage", "send_to"),
    }
}

fn unix_path(path: &str) -> Report {
    match UnixStream::connect(path) {
        Ok(_) => Report::new("unix-path", true, format!("connected to {path}")),
        Err(err) => Report::io_error("unix-path", &err),
    }
}

fn unix_abstract(name: &str) -> Report {
    let connected = UnixSocketAddr::from_abstract_name(name.as_bytes())
        .and_then(|addr| UnixStream::connect_addr(&addr));
    match connected {
        Ok(_) => Report::new("unix-abstract", true, format!("connected to @{name}")),
        Err(err) => Report::io_error("unix-abstract", &err),
    }
}

fn write_file(path: &str) -> Report {
    match fs::File::create(path).and_then(|mut file| file.write_all(b"probe\n")) {
        Ok(()) => Report::new("write", true, format!("wrote {path}")),
        Err(err) => Report::io_error("write", &err),
    }
}

fn read_file(path: &str) -> Report {
    match fs::read(path) {
        Ok(bytes) => Report::new("read", true, format!("read {path}")).with("bytes", bytes.len()),
        Err(err) => Report::io_error("read", &err),
    }
}

fn see_pid(pid: Pid) -> Report {
    let path = format!("/proc/{pid}");
    let seen = Path::new(&path).exists();
    let pids = match fs::read_dir("/proc") {
        Ok(entries) => {
            let mut pids: Vec<u32> = entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect();
            pids.sort_unstable();
            pids
        }
        Err(err) => {
            return Report::new(
                "see-pid",
                seen,
                format!("{path} exists: {seen}; /proc: {err}"),
            )
            .with("pids", Vec::<u32>::new());
        }
    };
    Report::new("see-pid", seen, format!("{path} exists: {seen}")).with("pids", pids)
}

fn kill(pid: Pid) -> Report {
    match nix::sys::signal::kill(pid, None) {
        Ok(()) => Report::new("kill", true, format!("may signal {pid}")),
        Err(errno) => Report::errno("kill", errno),
    }
}

fn userns() -> Report {
    match nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
        Ok(()) => Report::new("userns", true, "unshared a user namespace"),
        Err(errno) => Report::errno("userns", errno),
    }
}

/// Mounts a tmpfs on `dir`. A mount that succeeds is detached again at once, so running the probe
/// outside a mount namespace leaves no tmpfs behind.
fn mount_tmpfs(dir: &str) -> Report {
    let mounted = nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    match mounted {
        Ok(()) => {
            let unmounted = nix::mount::umount2(dir, MntFlags::MNT_DETACH).is_ok();
            Report::new("mount", true, format!("mounted tmpfs on {dir}"))
                .with("unmounted", unmounted)
        }
        Err(errno) => Report::errno("mount", errno),
    }
}

fn io_uring() -> Report {
    // struct io_uring_params is 120 bytes of 32-bit fields; zeroed asks for nothing special.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes at most the 120 bytes of `params`, which is a live,
    // writable, 4-byte-aligned buffer of exactly that size for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if ret < 0 {
        return Report::errno("io-uring", Errno::last());
    }
    match RawFd::try_from(ret) {
        Ok(fd) => {
            // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns;
            // the OwnedFd takes it over and closes it when dropped.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Report::new("io-uring", true, format!("io_uring_setup returned fd {fd}"))
        }
        Err(_) => Report::new("io-uring", true, format!("io_uring_setup returned {ret}")),
    }
}

/// Forks a child that sleeps, then tries to trace it.
fn ptrace_child() -> Report {
    // SAFETY: the probe is single-threaded, and the child only sleeps and calls _exit.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => child,
        Ok(ForkResult::Child) => sleep_then_exit(Duration::from_secs(30)),
        Err(errno) => return Report::errno("ptrace", errno).with("stage", "fork"),
    };
    let attached = nix::sys::ptrace::attach(child);
    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    reap(child);
    match attached {
        Ok(()) => Report::new("ptrace", true, format!("attached to child {child}")),
        Err(errno) => Report::errno("ptrace", errno),
    }
}

/// Waits for `pid` until it has exited or died, or waiting fails.
fn reap(pid: Pid) {
    for _ in 0..16 {
        match nix::sys::wait::waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn ptrace_pid(pid: Pid) -> Report {
    if let Err(errno) = nix::sys::ptrace::attach(pid) {
        return Report::errno("ptrace-pid", errno);
    }
    // The tracee stops with SIGSTOP on attach; it can only be detached once it has stopped.
    let stopped = nix::sys::wait::waitpid(pid, Some(WaitPidFlag::__WALL)).is_ok();
    let detached = stopped && nix::sys::ptrace::detach(pid, None).is_ok();
    Report::new("ptrace-pid", true, format!("attached to {pid}")).with("detached", detached)
}

fn env() -> Report {
    let vars: Map<String, Value> = std::env::vars_os()
        .map(|(key, value)| {
            (
                key.to_string_lossy().into_owned(),
                json!(value.to_string_lossy()),
            )
        })
        .collect();
    Report::new("env", true, format!("{} variables", vars.len())).with("env", vars)
}

fn hostname() -> Report {
    match nix::unistd::gethostname() {
        Ok(name) => {
            let name = name.to_string_lossy().into_owned();
            Report::new("hostname", true, name.clone()).with("hostname", name)
        }
        Err(errno) => Report::errno("hostname", errno),
    }
}

/// One `Key:\tvalue` line of /proc/self/status.
fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        Some(value.trim().to_owned())
    })
}

fn whoami() -> Report {
    let (status, detail) = match fs::read_to_string("/proc/self/status") {
        Ok(status) => (status, "read /proc/self/status".to_owned()),
        Err(err) => (String::new(), format!("/proc/self/status: {err}")),
    };
    let number = |key: &str| status_field(&status, key).and_then(|v| v.parse::<u64>().ok());
    Report::new("whoami", true, detail)
        .with("uid", nix::unistd::getuid().as_raw())
        .with("euid", nix::unistd::geteuid().as_raw())
        .with("gid", nix::unistd::getgid().as_raw())
        .with("cap_eff", status_field(&status, "CapEff"))
        .with("no_new_privs", number("NoNewPrivs"))
        .with("seccomp", number("Seccomp"))
}

/// Forks sleeping children until fork fails or the limit is reached, reports, then waits to be
/// killed. The children are never waited for.
fn fork_bomb() -> ! {
    let mut forks: u64 = 0;
    let mut detail = String::new();
    while forks < FORK_BOMB_LIMIT {
        // SAFETY: the probe is single-threaded, and each child only sleeps and calls _exit.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Parent { .. }) => forks += 1,
            Ok(ForkResult::Child) => sleep_then_exit(Duration::from_secs(60)),
            Err(errno) => {
                detail = errno.to_string();
                break;
            }
        }
    }
    Report::new("fork-bomb", forks >= FORK_BOMB_LIMIT, detail)
        .with("forks", forks)
        .print();
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(0)
}

/// Sleeps, then leaves without running anything the parent set up (used in forked children).
fn sleep_then_exit(duration: Duration) -> ! {
    std::thread::sleep(duration);
    // SAFETY: _exit ends the process at once; it has no preconditions.
    unsafe { libc::_exit(0) }
}

/// Allocates and touches memory in 8 MiB chunks, keeping all of it, until killed or refused.
fn mem_hog() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk: Vec<u8> = Vec::new();
        if chunks.try_reserve(1).is_err() || chunk.try_reserve_exact(MEM_CHUNK).is_err() {
            let mib = chunks.len() * (MEM_CHUNK >> 20);
            // Give the memory back first, so the report itself can allocate.
            drop(chunk);
            drop(chunks);
            Report::new("mem-hog", false, "allocation failed")
                .with("mib", mib)
                .print();
            std::process::exit(0);
        }
        // Writing every byte (nonzero, so no page can stay shared with the zero page) makes the
        // kernel back every page of the chunk.
        chunk.resize(MEM_CHUNK, 0xa5);
        chunks.push(std::hint::black_box(chunk));
    }
}

fn spin() -> ! {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

/// Ignores the polite signals, says so, and sleeps until killed with something stronger.
fn ignore_term() -> ! {
    let mut failed = Vec::new();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: SigIgn installs no handler code, so no handler can run in an unsafe context.
        if let Err(errno) = unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) } {
            failed.push(format!("{signal}: {errno}"));
        }
    }
    if failed.is_empty() {
        Report::new("ignore-term", true, "ignoring SIGTERM").print();
    } else {
        Report::new("ignore-term", false, failed.join("; ")).print();
    }
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Writes to stdout as fast as it can; stops quietly when stdout goes away.
fn flood() -> ! {
    let block = [b'x'; FLOOD_BLOCK];
    let mut out = io::stdout().lock();
    loop {
        if out.write_all(&block).is_err() {
            std::process::exit(0);
        }
    }
}

fn sleep(duration: Duration) -> Report {
    std::thread::sleep(duration);
    Report::new("sleep", true, format!("slept {} s", duration.as_secs_f64()))
}

/// The `host:port` of the HTTP proxy in `HTTP_PROXY` or `http_proxy`, if one is set.
fn proxy_from_env() -> Option<String> {
    let url = ["HTTP_PROXY", "http_proxy"]
        .into_iter()
        .filter_map(|key| std::env::var(key).ok())
        .find(|value| !value.trim().is_empty())?;
    let url = url.trim();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:80")
    })
}

/// Sends a bare `GET /` down `stream` and reads up to 64 KiB of answer: what it read, and the error
/// that ended reading early, if any.
fn get_root(stream: &TcpStream, reader: &mut impl Read) -> (Vec<u8>, Option<io::Error>) {
    let mut writer = stream;
    if let Err(err) = writer.write_all(b"GET / HTTP/1.0\r\n\r\n") {
        return (Vec::new(), Some(err));
    }
    let mut body = Vec::new();
    let mut buf = [0u8; 8192];
    while body.len() < HTTP_BODY_LIMIT {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n.min(HTTP_BODY_LIMIT - body.len())]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return (body, Some(err)),
        }
    }
    (body, None)
}

fn body_preview(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

fn http_get(target: &str) -> Report {
    let proxy = proxy_from_env();
    let via = proxy.as_deref().unwrap_or(target);
    let stream = match connect(via, HTTP_TIMEOUT) {
        Ok((stream, _)) => stream,
        Err(err) => {
            return Report::io_error("http-get", &err)
                .with("stage", "connect")
                .with("proxy", proxy);
        }
    };
    let _ = stream.set_read_timeout(Some(HTTP_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HTTP_TIMEOUT));
    let mut reader = BufReader::new(&stream);

    let Some(proxy) = proxy else {
        let (body, err) = get_root(&stream, &mut reader);
        let ok = !body.is_empty();
        let detail = match err {
            Some(err) => format!("direct: {} bytes, then {err}", body.len()),
            None => format!("direct: {} bytes", body.len()),
        };
        return Report::new("http-get", ok, detail)
            .with("proxy", Value::Null)
            .with("status", Value::Null)
            .with("body", body_preview(&body));
    };

    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    if let Err(err) = (&stream).write_all(request.as_bytes()) {
        return Report::io_error("http-get", &err)
            .with("stage", "connect-request")
            .with("proxy", proxy);
    }
    let mut status = String::new();
    if let Err(err) = reader.read_line(&mut status) {
        return Report::io_error("http-get", &err)
            .with("stage", "connect-response")
            .with("proxy", proxy)
            .with("status", status.trim_end());
    }
    let status = status.trim_end().to_owned();
    // Skip the rest of the proxy's header, up to the blank line.
    for _ in 0..100 {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {}
        }
    }
    if status.split_whitespace().nth(1) != Some("200") {
        return Report::new("http-get", false, format!("proxy refused: {status}"))
            .with("proxy", proxy)
            .with("status", status)
            .with("body", "");
    }

    let (body, err) = get_root(&stream, &mut reader);
    let ok = !body.is_empty();
    let detail = match err {
        Some(err) => format!("tunnel: {} bytes, then {err}", body.len()),
        None => format!("tunnel: {} bytes", body.len()),
    };
    Report::new("http-get", ok, detail)
        .with("proxy", proxy)
        .with("status", status)
        .with("body", body_preview(&body))
}
