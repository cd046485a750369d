//! The `gvisor` tier: gVisor's `runsc` runs the program on an OCI bundle the runner writes.
//!
//! The program's system calls go to gVisor's user-space kernel (the `ptrace` platform, which
//! needs no virtualization), never to the host's. The bundle's root is an empty read-only
//! directory; the system directories, the spec's paths and the working directory are bound
//! into it, the network is `none`, every capability is dropped, `no_new_privs` is set, and the
//! same seccomp deny-list as the `namespaces` tier applies inside. Limits go to runsc as OCI
//! resources (it applies them with cgroups).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::protocol::LaunchSpec;

/// Where `runsc` is, if installed: `SANDBOX_RUNSC` when set, else the usual places.
pub fn runsc() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SANDBOX_RUNSC") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    ["/usr/bin/runsc", "/usr/local/bin/runsc", "/usr/sbin/runsc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Why the tier cannot be used on this host, or `None` when it can.
pub fn unavailable_reason() -> Option<String> {
    runsc()
        .is_none()
        .then(|| "runsc is not installed".to_owned())
}

/// Threads of gVisor itself (sentry and gofer) counted against a pids limit.
pub const GVISOR_THREADS: u64 = 128;

use crate::namespaces::{ETC_ENTRIES, SYSTEM_DIRS};

/// Where, inside a gVisor sandbox, the runner's egress proxy is reached: the Unix socket the
/// runner serves it on, bind-mounted here.
pub const EGRESS_SOCKET: &str = "/run/mcp-egress.sock";

/// How a gVisor sandbox reaches the runner's egress proxy, which has no network of its own to
/// offer: the runner serves the proxy on a Unix socket (`socket`, on the host), runsc lets the
/// sandbox connect to it (`--host-uds=open`), and the sandbox's first process is the runner's
/// own `egress-shim` (`shim`: its program and the arguments before the subcommand), which
/// listens on the proxy's usual address inside, forwards each connection to the socket, and
/// runs the server.
#[derive(Debug)]
pub struct Egress {
    pub socket: PathBuf,
    pub shim: Vec<String>,
}

/// What ties a gVisor sandbox to its runner: the runner's cgroups, named relative to runsc's own
/// (`cgroupsPath`), and the way to its egress proxy.
#[derive(Debug, Default)]
pub struct Ties<'a> {
    pub cgroups_path: Option<&'a str>,
    pub egress: Option<&'a Egress>,
}

/// A written bundle, removed (with runsc's state of it) when dropped.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub id: String,
    runsc: PathBuf,
    /// Whether the sandbox may connect to host Unix sockets bind-mounted into it (the egress
    /// proxy's, and no other is mounted).
    host_uds: bool,
    /// What the runner created under `dir`, in creation order.
    created: Vec<PathBuf>,
}

impl Bundle {
    fn make_dir(&mut self, path: &Path) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut at = path.to_path_buf();
        while !at.exists() {
            missing.push(at.clone());
            match at.parent() {
                Some(parent) => at = parent.to_path_buf(),
                None => break,
            }
        }
        for dir in missing.into_iter().rev() {
            fs::create_dir(&dir)?;
            self.created.push(dir);
        }
        Ok(())
    }

    fn make_file(&mut self, path: &Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            self.make_dir(parent)?;
        }
        if !path.exists() {
            fs::write(path, b"")?;
            self.created.push(path.to_path_buf());
        }
        Ok(())
    }

    /// The arguments that run the bundle: `runsc ... run --bundle DIR ID`.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.runsc);
        command.args(self.global_args());
        command
            .arg("run")
            .arg("--bundle")
            .arg(&self.dir)
            .arg(&self.id);
        command
    }

    fn global_args(&self) -> Vec<String> {
        let mut args = vec![
            "--platform=ptrace".to_owned(),
            "--network=none".to_owned(),
            "--oci-seccomp".to_owned(),
            format!("--root={}", self.dir.join("state").display()),
        ];
        if self.host_uds {
            args.push("--host-uds=open".to_owned());
        }
        if !nix::unistd::geteuid().is_root() {
            args.push("--rootless".to_owned());
        }
        args
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // The sandbox is gone, or goes now; then runsc's state of it.
        let _ = std::process::Command::new(&self.runsc)
            .args(self.global_args())
            .args(["delete", "--force", &self.id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = fs::remove_dir_all(self.dir.join("state"));
        // runsc names the sandbox's cgroups after the container, and may leave them.
        crate::cgroup::remove_named(&self.id);
        let _ = fs::remove_file(self.dir.join("config.json"));
        // Only what the runner made, deepest first, and never recursively: a bind that
        // outlived its sandbox would otherwise be emptied on the host.
        for path in self.created.iter().rev() {
            let _ = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
        }
    }
}

fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn bind(destination: &Path, source: &Path, writable: bool) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", if writable { "rw" } else { "ro" }, "nosuid", "nodev"],
    })
}

/// Writes the OCI bundle of `spec` into `dir` (an empty directory of the runner's).
pub fn write_bundle(
    dir: &Path,
    spec: &LaunchSpec,
    command: &Path,
    read_only: &[PathBuf],
    env: &[(String, String)],
    denied_syscalls: &[&str],
    ties: Ties<'_>,
) -> Result<Bundle, String> {
    let Ties {
        cgroups_path,
        egress,
    } = ties;
    let runsc = runsc().ok_or("runsc is not installed")?;
    crate::cgroup::sweep_all();
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mcp-sandbox".into());
    let mut bundle = Bundle {
        dir: dir.to_path_buf(),
        id,
        runsc,
        host_uds: egress.is_some(),
        created: Vec::new(),
    };
    let rootfs = dir.join("rootfs");
    let io = |e: std::io::Error| e.to_string();
    bundle.make_dir(&rootfs).map_err(io)?;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for name in ["proc", "dev", "tmp", "etc"] {
        bundle.make_dir(&rootfs.join(name)).map_err(io)?;
    }
    for system in SYSTEM_DIRS {
        let source = Path::new(system);
        let target = under(&rootfs, source);
        match fs::symlink_metadata(source) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(source).map_err(io)?;
                symlink(&link, &target).map_err(io)?;
                bundle.created.push(target);
            }
            Ok(meta) if meta.is_dir() => {
                bundle.make_dir(&target).map_err(io)?;
                mounts.push(bind(source, source, false));
            }
            _ => {}
        }
    }
    for entry in ETC_ENTRIES {
        let source = Path::new("/etc").join(entry);
        let Ok(meta) = fs::metadata(&source) else {
            continue;
        };
        let target = under(&rootfs, &source);
        if meta.is_dir() {
            bundle.make_dir(&target).map_err(io)?;
        } else {
            bundle.make_file(&target).map_err(io)?;
        }
        mounts.push(bind(&source, &source, false));
    }
    let mut extra: Vec<(PathBuf, bool)> = read_only.iter().map(|p| (p.clone(), false)).collect();
    extra.extend(spec.writable.iter().map(|p| (p.clone(), true)));
    extra.push((spec.workdir.clone(), true));
    extra.sort_by_key(|(p, _)| p.components().count());
    for (path, writable) in extra {
        let target = under(&rootfs, &path);
        if path.is_dir() {
            bundle.make_dir(&target).map_err(io)?;
        } else {
            bundle.make_file(&target).map_err(io)?;
        }
        mounts.push(bind(&path, &path, writable));
    }
    let limits = &spec.limits;
    let mut resources = json!({});
    if let Some(bytes) = limits.memory_bytes {
        resources["memory"] = json!({"limit": bytes, "swap": bytes});
    }
    if let Some(pids) = limits.pids {
        // The limit applies to the whole sandbox, gVisor's own threads included.
        resources["pids"] = json!({"limit": pids + GVISOR_THREADS});
    }
    if let Some(cpus) = limits.cpus {
        resources["cpu"] = json!({"quota": (cpus * 100_000.0) as i64, "period": 100_000});
    }
    let open_files = limits.open_files.unwrap_or(1024);
    let mut args: Vec<String> = std::iter::once(command.display().to_string())
        .chain(spec.args.iter().cloned())
        .collect();
    if let Some(egress) = egress {
        let socket = under(&rootfs, Path::new(EGRESS_SOCKET));
        bundle.make_file(&socket).map_err(io)?;
        mounts.push(bind(Path::new(EGRESS_SOCKET), &egress.socket, false));
        if let Some(program) = egress.shim.first() {
            let program = Path::new(program);
            let target = under(&rootfs, program);
            if !target.exists() {
                bundle.make_file(&target).map_err(io)?;
                mounts.push(bind(program, program, false));
            }
        }
        let shim = egress.shim.iter().cloned().chain([
            "egress-shim".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{}", crate::namespaces::PROXY_PORT),
            "--socket".to_owned(),
            EGRESS_SOCKET.to_owned(),
            "--".to_owned(),
        ]);
        args = shim.chain(args).collect();
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "hostname": crate::HOSTNAME,
        "root": {"path": "rootfs", "readonly": true},
        "process": {
            "terminal": false,
            // The runner's own ids, so the working directory is the program's by ownership,
            // as in the namespaces tier; with no capabilities that is all it has.
            "user": {"uid": nix::unistd::geteuid().as_raw(), "gid": nix::unistd::getegid().as_raw()},
            "args": args,
            "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": spec.workdir,
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": open_files, "soft": open_files},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
            ],
            "noNewPrivileges": true,
        },
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
            ],
            "resources": resources,
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": denied_syscalls, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}],
            },
        },
    });
    if let Some(path) = cgroups_path {
        // Relative: under runsc's own cgroup (the runner's) in each hierarchy, where the runner
        // made them and set the limits.
        config["linux"]["cgroupsPath"] = path.into();
    }
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    fs::write(dir.join("config.json"), text).map_err(io)?;
    Ok(bundle)
}
