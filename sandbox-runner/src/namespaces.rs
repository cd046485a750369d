//! The `namespaces` tier: the sandbox's init, its private root, and the program's exec.
//!
//! The runner `clone`s a child into new user, pid, mount, network, IPC and UTS namespaces. That
//! child is PID 1 of the sandbox, a small init: it waits until the runner has written its uid
//! and gid maps and moved it into the sandbox's cgroups, enters a new cgroup namespace, brings up
//! loopback, builds a private root (a tmpfs with read-only binds of the system directories, the
//! working directory read-write, fresh /proc, /dev, /tmp), `pivot_root`s into it, and forks the
//! program. The program's process sets rlimits, `no_new_privs`, drops every capability, applies
//! Landlock and seccomp, and `execve`s. The init then reaps every process of the sandbox and
//! forwards signals to the program; when the program ends it reports how on the status pipe and
//! exits, and the kernel kills whatever the program left behind in the pid namespace.
//!
//! Everything here runs in the forked children, before `execve`: no async runtime, no threads.

#![allow(unsafe_code)] // System calls without safe wrappers; each block says why it is sound.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, dup2_stderr, dup2_stdout, fork, pivot_root, read};

use crate::confine::{self, FsRules, Rlimits};

/// The hostname inside every sandbox.
pub const HOSTNAME: &str = "mcp-sandbox";
/// The loopback port of the proxy inside the sandbox's network namespace.
pub const PROXY_PORT: u16 = 3128;

/// System directories bound read-only when the host has them (or recreated as the same
/// symlinks, on merged-/usr systems).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];
/// Files and directories of /etc a program may need: the dynamic linker's cache, TLS roots,
/// name-service configuration, time zones. Never shadow, sudoers or keys.
pub(crate) const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "nsswitch.conf",
    "localtime",
    "mime.types",
    "protocols",
    "services",
];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Everything the sandbox's init and the program's process need, prepared by the runner before
/// the clone (so the children allocate little and decide nothing).
pub(crate) struct Plan {
    /// An empty directory of the runner's where the new root is mounted.
    pub(crate) new_root: PathBuf,
    pub(crate) workdir: PathBuf,
    pub(crate) read_only: Vec<PathBuf>,
    pub(crate) writable: Vec<PathBuf>,
    pub(crate) program: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) rlimits: Rlimits,
    pub(crate) landlock_abi: Option<i32>,
    pub(crate) seccomp: Vec<seccompiler::BpfProgram>,
    pub(crate) proxy: bool,
    /// Contents of /etc/passwd and /etc/group inside.
    pub(crate) passwd: String,
    pub(crate) group: String,
}

/// The pipes between the runner and the sandbox's processes (the children's ends).
pub(crate) struct ChildFds {
    /// The runner writes one byte when maps and cgroups are in place; EOF means give up.
    pub(crate) go: OwnedFd,
    /// Written by the program's process if anything before `execve` fails; closed by a
    /// successful `execve` (it is close-on-exec).
    pub(crate) exec_error: OwnedFd,
    /// The init writes `exit N` or `signal N` when the program has ended.
    pub(crate) status: OwnedFd,
    /// Where the init sends the proxy's listening socket (SCM_RIGHTS).
    pub(crate) proxy: Option<OwnedFd>,
    /// The program's stdout and stderr, when relayed (else it inherits the runner's).
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: OwnedFd,
}

/// The body of the sandbox's init (PID 1). Returns the init's exit code.
pub(crate) fn init(plan: &Plan, fds: &ChildFds) -> isize {
    match init_inner(plan, fds) {
        Ok(code) => code,
        Err(message) => {
            let _ = nix::unistd::write(&fds.exec_error, message.as_bytes());
            126
        }
    }
}

fn init_inner(plan: &Plan, fds: &ChildFds) -> Result<isize, String> {
    // The runner dies: so does the sandbox (PID 1 dying takes the pid namespace with it).
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut byte = [0u8; 1];
    match read(&fds.go, &mut byte) {
        Ok(1) => {}
        _ => return Err("the runner gave up before the sandbox started".into()),
    }
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("cgroup namespace: {e}"))?;
    nix::unistd::sethostname(HOSTNAME).map_err(|e| format!("sethostname: {e}"))?;
    loopback_up().map_err(|e| format!("bringing up loopback: {e}"))?;
    if let Some(channel) = &fds.proxy {
        send_proxy_listener(channel)?;
    }
    build_root(plan)?;
    // Block the signals the init handles before forking, so none arrives between the fork and
    // the wait loop; the program's process unblocks them.
    let handled = handled_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled), None).map_err(|e| e.to_string())?;
    // SAFETY: the init is single-threaded (a fresh clone of the single-threaded runner), so the
    // child may run arbitrary code until `execve`.
    let program = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let message = exec_program(plan, fds);
            let _ = nix::unistd::write(&fds.exec_error, message.as_bytes());
            // SAFETY: `_exit` skips the atexit handlers that belong to the runner.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => child,
    };
    // The init keeps only the status pipe: the runner sees EOF on the exec-error pipe once the
    // program has exec'd, and on the output pipes once the program's processes are gone.
    let mut owned = vec![fds.exec_error.as_raw_fd(), fds.stderr.as_raw_fd()];
    owned.extend(fds.stdout.as_ref().map(AsRawFd::as_raw_fd));
    for fd in owned {
        // SAFETY: these descriptors are never used by the init again, and its `ChildFds` is
        // never dropped (the init leaves through `exit`), so nothing closes them twice.
        unsafe { libc::close(fd) };
    }
    Ok(supervise(program, &handled, &fds.status))
}

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// The init's loop: forward signals to the program, reap every child, and when the program
/// ends report its status and end the sandbox.
fn supervise(program: Pid, handled: &SigSet, status: &OwnedFd) -> isize {
    loop {
        let Ok(signal) = handled.wait() else { continue };
        if signal != Signal::SIGCHLD {
            let _ = kill(program, signal);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == program => {
                    return finish(status, &format!("exit {code}\n"));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == program => {
                    return finish(status, &format!("signal {}\n", signal as i32));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn finish(status: &OwnedFd, line: &str) -> isize {
    let _ = nix::unistd::write(status, line.as_bytes());
    // Whatever the program left running dies with the init; reap them first so their usage is
    // counted in the runner's figures.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while waitpid(Pid::from_raw(-1), None).is_ok() {}
    0
}

/// Runs in the program's process: confine, then `execve`. Returns only on failure, with why.
fn exec_program(plan: &Plan, fds: &ChildFds) -> String {
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
        return format!("signal mask: {e}");
    }
    // Its own session: no controlling terminal to inject input into.
    if let Err(e) = nix::unistd::setsid() {
        return format!("setsid: {e}");
    }
    if let Some(stdout) = &fds.stdout
        && let Err(e) = dup2_stdout(stdout)
    {
        return format!("stdout: {e}");
    }
    if let Err(e) = dup2_stderr(&fds.stderr) {
        return format!("stderr: {e}");
    }
    if let Err(e) = chdir(&plan.workdir) {
        return format!(
            "cannot enter the working directory {}: {e}",
            plan.workdir.display()
        );
    }
    if let Err(e) = plan.rlimits.apply() {
        return format!("rlimits: {e}");
    }
    if let Err(e) = confine::no_new_privs() {
        return format!("no_new_privs: {e}");
    }
    if let Err(e) = confine::drop_capabilities() {
        return format!("dropping capabilities: {e}");
    }
    if let Some(abi) = plan.landlock_abi {
        let mut read: Vec<PathBuf> = SYSTEM_DIRS.iter().map(PathBuf::from).collect();
        read.extend(["/etc", "/proc"].map(PathBuf::from));
        read.extend(plan.read_only.iter().cloned());
        let mut write = vec![
            plan.workdir.clone(),
            PathBuf::from("/tmp"),
            PathBuf::from("/dev"),
        ];
        write.extend(plan.writable.iter().cloned());
        read.retain(|p| p.exists());
        write.retain(|p| p.exists());
        let rules = FsRules {
            read,
            write,
            connect_port: plan.proxy.then_some(PROXY_PORT),
        };
        if let Err(e) = confine::landlock(&rules, abi) {
            return format!("landlock: {e}");
        }
    }
    // Every descriptor but stdin, stdout and stderr closes on exec, whatever the runner had open.
    // SAFETY: close_range with the CLOEXEC flag only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if let Err(e) = confine::apply_seccomp(&plan.seccomp) {
        return format!("seccomp: {e}");
    }
    match nix::unistd::execve(&plan.program, &plan.argv, &plan.envp) {
        Ok(never) => match never {},
        Err(e) => format!("exec {}: {e}", plan.program.to_string_lossy()),
    }
}

/// Brings up `lo` in the sandbox's network namespace, so programs can use loopback (and reach
/// the proxy).
fn loopback_up() -> Result<(), String> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| e.to_string())?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one `ifreq`, which lives until the call returns.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    nix::errno::Errno::result(rc)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Opens the proxy's listening socket inside the sandbox's network namespace and hands it to
/// the runner, which serves it from outside: the program reaches the proxy at a loopback
/// address, and no host socket is ever visible inside.
fn send_proxy_listener(channel: &OwnedFd) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT))
        .map_err(|e| format!("proxy listener: {e}"))?;
    let fds = [listener.as_raw_fd()];
    let control = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let payload = [std::io::IoSlice::new(b"L")];
    nix::sys::socket::sendmsg::<()>(
        channel.as_raw_fd(),
        &payload,
        &control,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending the proxy listener: {e}"))?;
    Ok(())
}

fn locked_flags(path: &Path) -> MsFlags {
    // Flags the kernel locked on a mount made in an ancestor namespace must be kept on remount.
    let mut flags = MsFlags::MS_NOSUID;
    if let Ok(stat) = statvfs(path) {
        let have = stat.flags();
        if have.contains(FsFlags::ST_NODEV) {
            flags |= MsFlags::MS_NODEV;
        }
        if have.contains(FsFlags::ST_NOEXEC) {
            flags |= MsFlags::MS_NOEXEC;
        }
        if have.contains(FsFlags::ST_NOATIME) {
            flags |= MsFlags::MS_NOATIME;
        }
        if have.contains(FsFlags::ST_NODIRATIME) {
            flags |= MsFlags::MS_NODIRATIME;
        }
        if have.contains(FsFlags::ST_RELATIME) {
            flags |= MsFlags::MS_RELATIME;
        }
    }
    flags
}

/// Binds `source` at `target` (which exists), read-only unless `writable`.
fn bind(source: &Path, target: &Path, writable: bool) -> Result<(), String> {
    bind_with(source, target, writable, MsFlags::MS_NODEV)
}

/// As [`bind`], with `extra` flags on the remount (device nodes must not get `nodev`).
fn bind_with(source: &Path, target: &Path, writable: bool, extra: MsFlags) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {}: {e}", source.display()))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | locked_flags(source) | extra;
    if !writable {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("remount {}: {e}", source.display()))
}

/// Creates the mount point for `source` under the new root: a directory or an empty file.
fn mount_point(source: &Path, target: &Path) -> Result<(), String> {
    if target.exists() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let made = if source.is_dir() {
        fs::create_dir(target)
    } else {
        fs::write(target, b"")
    };
    made.map_err(|e| format!("{}: {e}", target.display()))
}

fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn build_root(plan: &Plan) -> Result<(), String> {
    let root = &plan.new_root;
    // Nothing mounted here propagates back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=16m"),
    )
    .map_err(|e| format!("root tmpfs: {e}"))?;
    for dir in SYSTEM_DIRS {
        let source = Path::new(dir);
        let target = under(root, source);
        match fs::symlink_metadata(source) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(source).map_err(|e| format!("{dir}: {e}"))?;
                symlink(&link, &target).map_err(|e| format!("{dir}: {e}"))?;
            }
            Ok(meta) if meta.is_dir() => {
                fs::create_dir(&target).map_err(|e| format!("{dir}: {e}"))?;
                bind(source, &target, false)?;
            }
            _ => {}
        }
    }
    let etc = root.join("etc");
    fs::create_dir(&etc).map_err(|e| format!("/etc: {e}"))?;
    for entry in ETC_ENTRIES {
        let source = Path::new("/etc").join(entry);
        if fs::symlink_metadata(&source).is_err() {
            continue;
        }
        let target = etc.join(entry);
        if let Ok(link) = fs::read_link(&source) {
            symlink(&link, &target).map_err(|e| format!("{}: {e}", source.display()))?;
            continue;
        }
        mount_point(&source, &target)?;
        bind(&source, &target, false)?;
    }
    let files = [
        ("passwd", plan.passwd.as_str()),
        ("group", plan.group.as_str()),
        ("hostname", "mcp-sandbox\n"),
        ("hosts", "127.0.0.1 localhost mcp-sandbox\n::1 localhost\n"),
        ("resolv.conf", ""),
    ];
    for (name, contents) in files {
        fs::write(etc.join(name), contents).map_err(|e| format!("/etc/{name}: {e}"))?;
    }
    let proc = root.join("proc");
    fs::create_dir(&proc).map_err(|e| format!("/proc: {e}"))?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting /proc: {e}"))?;
    build_dev(root)?;
    let tmp = root.join("tmp");
    fs::create_dir(&tmp).map_err(|e| format!("/tmp: {e}"))?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=64m"),
    )
    .map_err(|e| format!("/tmp: {e}"))?;
    let mut extra: Vec<(&PathBuf, bool)> = plan.read_only.iter().map(|p| (p, false)).collect();
    extra.extend(plan.writable.iter().map(|p| (p, true)));
    extra.push((&plan.workdir, true));
    // Shallow paths first, so a deeper bind lands on top of the one that contains it.
    extra.sort_by_key(|(p, _)| p.components().count());
    for (path, writable) in extra {
        let target = under(root, path);
        mount_point(path, &target)?;
        bind(path, &target, writable)?;
    }
    let old = root.join(".old-root");
    fs::create_dir(&old).map_err(|e| format!("old root: {e}"))?;
    pivot_root(root, &old).map_err(|e| format!("pivot_root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    umount2("/.old-root", MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching the host root: {e}"))?;
    fs::remove_dir("/.old-root").map_err(|e| format!("old root: {e}"))?;
    // The root itself (and /etc in it) is read-only from here on; /tmp and the binds keep theirs.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| format!("read-only root: {e}"))
}

fn build_dev(root: &Path) -> Result<(), String> {
    let dev = root.join("dev");
    fs::create_dir(&dev).map_err(|e| format!("/dev: {e}"))?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| format!("/dev: {e}"))?;
    for name in DEVICES {
        let source = Path::new("/dev").join(name);
        if !source.exists() {
            continue;
        }
        let target = dev.join(name);
        fs::write(&target, b"").map_err(|e| format!("/dev/{name}: {e}"))?;
        // Devices are bound read-write: writing /dev/null is how programs discard output.
        bind_with(&source, &target, true, MsFlags::empty())?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| format!("/dev/{name}: {e}"))?;
    }
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(|e| format!("/dev/shm: {e}"))?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=64m"),
    )
    .map_err(|e| format!("/dev/shm: {e}"))
}

/// The namespaces a sandbox of this tier gets, by name.
pub(crate) const NAMESPACES: &[&str] = &["user", "pid", "mount", "net", "ipc", "uts", "cgroup"];

/// The clone flags of the init (the cgroup namespace comes later, once the init is in its
/// cgroups).
pub(crate) fn clone_flags() -> CloneFlags {
    CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
}

/// The uid and gid the program has inside, mapped to the runner's own.
pub const INSIDE_ID: u32 = 1000;

/// Writes the child's user namespace maps: the runner's uid and gid appear as [`INSIDE_ID`].
pub(crate) fn write_id_maps(child: Pid) -> std::io::Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let proc = PathBuf::from(format!("/proc/{child}"));
    fs::write(proc.join("setgroups"), "deny")?;
    fs::write(proc.join("uid_map"), format!("{INSIDE_ID} {uid} 1\n"))?;
    fs::write(proc.join("gid_map"), format!("{INSIDE_ID} {gid} 1\n"))
}
