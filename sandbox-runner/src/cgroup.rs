//! Cgroups for one sandbox: limits for memory, pids and CPU where the host delegates them, and
//! the figures the runner reports (peak memory, CPU time, OOM kills, refused forks).
//!
//! Both hierarchies are handled, because hosts have both: cgroup v1 controllers mounted one per
//! directory, and a v2 tree that may have no controllers enabled but whose `cgroup.kill` and
//! `cpu.stat` still work. Each sandbox gets a directory named `mcp-sandbox-<runner pid>-<random>`
//! beside the runner's own cgroup in every hierarchy it may write; the runner removes them when
//! the sandbox is gone, and removes those of runners that died before they could.

use std::fs;
use std::path::{Path, PathBuf};

use crate::protocol::Limits;

const PREFIX: &str = "mcp-sandbox-";
const CFS_PERIOD_US: u64 = 100_000;

/// One hierarchy's directory for this sandbox.
#[derive(Debug)]
struct Dir {
    /// `memory`, `pids`, `cpu`, `cpuacct` (v1) or `unified` (v2).
    controller: &'static str,
    path: PathBuf,
}

/// The cgroups of one sandbox.
#[derive(Debug, Default)]
pub struct Cgroups {
    /// The directory name, the same in every hierarchy.
    name: String,
    dirs: Vec<Dir>,
    /// How each limit is enforced, for the `started` event.
    pub enforced: Vec<String>,
    /// Limits that no cgroup enforces here; the caller falls back to rlimits.
    pub memory: bool,
    pub pids: bool,
    pub cpu_time: bool,
}

/// A mounted hierarchy: its mount point and the runner's own cgroup within it.
#[derive(Debug)]
struct Hierarchy {
    controllers: Vec<String>,
    v2: bool,
    base: PathBuf,
    /// The mount point (the hierarchy's root, as far as this mount shows it).
    mount: Option<PathBuf>,
}

/// The mounted hierarchies with a controller the runner uses (`all`: every hierarchy, such as
/// `devices` or `name=systemd`, where runsc also makes cgroups).
fn hierarchies(all: bool) -> Vec<Hierarchy> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fstype)) = (fields.get(4), right.first()) else {
            continue;
        };
        let mount_root = fields.get(3).copied().unwrap_or("/");
        let super_opts = right.get(2).copied().unwrap_or("");
        let (v2, controllers): (bool, Vec<String>) = match *fstype {
            "cgroup2" => (true, Vec::new()),
            "cgroup" => (
                false,
                super_opts
                    .split(',')
                    .filter(|o| {
                        all || matches!(
                            *o,
                            "memory" | "pids" | "cpu" | "cpuacct" | "freezer" | "cpuset"
                        )
                    })
                    .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "noatime"))
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => continue,
        };
        if !v2 && controllers.is_empty() {
            continue;
        }
        // The runner's own cgroup in this hierarchy, from /proc/self/cgroup.
        let own_path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = if v2 {
                list.is_empty()
            } else {
                list.split(',').any(|c| controllers.iter().any(|k| k == c))
            };
            matches.then(|| path.to_owned())
        });
        let Some(own_path) = own_path else { continue };
        let relative = own_path
            .strip_prefix(mount_root)
            .unwrap_or(&own_path)
            .trim_start_matches('/');
        found.push(Hierarchy {
            controllers,
            v2,
            base: Path::new(mount_point).join(relative),
            mount: Some(PathBuf::from(mount_point)),
        });
    }
    found
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    fs::write(path, value)
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file such as `memory.events`.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        return format!(
            "{:x}",
            std::time::UNIX_EPOCH
                .elapsed()
                .unwrap_or_default()
                .as_nanos()
        );
    }
    hex::encode(bytes)
}

/// Removes the (empty) cgroup `name` at the top of every hierarchy and beside the runner's own.
pub fn remove_named(name: &str) {
    for hierarchy in hierarchies(true) {
        let mut places = vec![hierarchy.base.join(name)];
        if let Some(root) = hierarchy.mount.as_deref() {
            places.push(root.join(name));
        }
        for place in places {
            let _ = fs::remove_dir(place);
        }
    }
}

/// Removes the cgroups runsc left for sandboxes of runners that are gone, in every hierarchy.
pub fn sweep_all() {
    for hierarchy in hierarchies(true) {
        if let Some(root) = hierarchy.mount.as_deref() {
            sweep(root);
        }
    }
}

/// Removes the cgroups of runners that are gone (a runner killed with SIGKILL cannot clean up).
fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        // `mcp-sandbox-PID-...`, or runsc's `mcp-sandbox-root-PID-...`.
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .map(|r| r.trim_start_matches("root-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

impl Cgroups {
    /// Creates this sandbox's cgroups and sets the limits they can enforce. Nothing here fails:
    /// a hierarchy the runner may not write is skipped, and `enforced` says what was set.
    pub fn create(limits: &Limits) -> Self {
        let name = format!("{PREFIX}{}-{}", std::process::id(), random_suffix());
        let mut cgroups = Cgroups::default();
        cgroups.name.clone_from(&name);
        for hierarchy in hierarchies(false) {
            sweep(&hierarchy.base);
            if let Some(root) = hierarchy.mount.as_deref()
                && root != hierarchy.base
            {
                sweep(root);
            }
            let path = hierarchy.base.join(&name);
            if fs::create_dir(&path).is_err() {
                continue;
            }
            if hierarchy.v2 {
                cgroups.setup_v2(&path, limits);
                cgroups.dirs.push(Dir {
                    controller: "unified",
                    path,
                });
                continue;
            }
            let mut used = None;
            for controller in &hierarchy.controllers {
                let controller: &'static str = match controller.as_str() {
                    "memory" => "memory",
                    "pids" => "pids",
                    "cpu" => "cpu",
                    "cpuacct" => "cpuacct",
                    _ => continue,
                };
                if cgroups.setup_v1(controller, &path, limits) {
                    used = Some(controller);
                }
            }
            match used {
                Some(controller) => cgroups.dirs.push(Dir { controller, path }),
                None => {
                    let _ = fs::remove_dir(&path);
                }
            }
        }
        cgroups
    }

    fn setup_v1(&mut self, controller: &'static str, dir: &Path, limits: &Limits) -> bool {
        match controller {
            "memory" => {
                if let Some(bytes) = limits.memory_bytes {
                    if write(&dir.join("memory.limit_in_bytes"), &bytes.to_string()).is_err() {
                        return false;
                    }
                    // No swap on top: memory+swap gets the same limit, where swap accounting exists.
                    let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
                    self.memory = true;
                    self.enforced.push("memory: cgroup v1".into());
                }
                true
            }
            "pids" => {
                if let Some(pids) = limits.pids {
                    if write(&dir.join("pids.max"), &pids.to_string()).is_err() {
                        return false;
                    }
                    self.pids = true;
                    self.enforced.push("pids: cgroup v1".into());
                }
                true
            }
            "cpu" => {
                if let Some(cpus) = limits.cpus {
                    let quota = ((cpus * CFS_PERIOD_US as f64) as u64).max(1_000);
                    if write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string()).is_err()
                        || write(&dir.join("cpu.cfs_quota_us"), &quota.to_string()).is_err()
                    {
                        return false;
                    }
                    self.enforced.push("cpus: cgroup v1".into());
                }
                true
            }
            "cpuacct" => {
                self.cpu_time = true;
                true
            }
            _ => false,
        }
    }

    fn setup_v2(&mut self, dir: &Path, limits: &Limits) {
        let controllers = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if let Some(bytes) = limits.memory_bytes
            && !self.memory
            && has("memory")
            && write(&dir.join("memory.max"), &bytes.to_string()).is_ok()
        {
            let _ = write(&dir.join("memory.swap.max"), "0");
            self.memory = true;
            self.enforced.push("memory: cgroup v2".into());
        }
        if let Some(pids) = limits.pids
            && !self.pids
            && has("pids")
            && write(&dir.join("pids.max"), &pids.to_string()).is_ok()
        {
            self.pids = true;
            self.enforced.push("pids: cgroup v2".into());
        }
        if let Some(cpus) = limits.cpus
            && has("cpu")
            && !self.enforced.iter().any(|e| e.starts_with("cpus:"))
        {
            let quota = ((cpus * CFS_PERIOD_US as f64) as u64).max(1_000);
            if write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}")).is_ok() {
                self.enforced.push("cpus: cgroup v2".into());
            }
        }
        // `cpu.stat` exists without the cpu controller: CPU time is measured either way.
        self.cpu_time = true;
    }

    /// The cgroups' name, relative to the runner's own cgroup in every hierarchy, if any was
    /// made: what a gVisor sandbox's OCI `cgroupsPath` names, so that runsc puts the sandbox in
    /// them (it uses cgroups that exist as they are, and leaves them to their maker).
    pub fn relative_path(&self) -> Option<&str> {
        (!self.dirs.is_empty()).then_some(self.name.as_str())
    }

    /// Whether a cgroup v1 hierarchy holds the sandbox (a v2-only host has none).
    pub fn has_v1(&self) -> bool {
        self.dirs.iter().any(|d| d.controller != "unified")
    }

    /// Moves a process (and so everything it will start) into every cgroup of the sandbox.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            write(&dir.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controller == controller)
            .map(|d| d.path.as_path())
    }

    /// CPU time of the whole sandbox so far, in microseconds.
    pub fn cpu_usage_us(&self) -> Option<u64> {
        if let Some(dir) = self.dir("cpuacct") {
            return read_u64(&dir.join("cpuacct.usage")).map(|ns| ns / 1_000);
        }
        if let Some(dir) = self.dir("cpu")
            && let Some(ns) = read_u64(&dir.join("cpuacct.usage"))
        {
            return Some(ns / 1_000);
        }
        self.dir("unified")
            .and_then(|dir| read_key(&dir.join("cpu.stat"), "usage_usec"))
    }

    /// User and system CPU time of the whole sandbox, in microseconds, processes killed
    /// unreaped included.
    pub fn cpu_split_us(&self) -> Option<(u64, u64)> {
        if let Some(dir) = self.dir("cpuacct") {
            let user = read_u64(&dir.join("cpuacct.usage_user"))?;
            let system = read_u64(&dir.join("cpuacct.usage_sys"))?;
            return Some((user / 1_000, system / 1_000));
        }
        let dir = self.dir("unified")?;
        let stat = dir.join("cpu.stat");
        Some((
            read_key(&stat, "user_usec")?,
            read_key(&stat, "system_usec")?,
        ))
    }

    /// Peak memory of the whole sandbox, in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        if let Some(dir) = self.dir("memory") {
            return read_u64(&dir.join("memory.max_usage_in_bytes"));
        }
        self.dir("unified")
            .and_then(|dir| read_u64(&dir.join("memory.peak")))
    }

    /// Processes the kernel's OOM killer killed in the sandbox.
    pub fn oom_kills(&self) -> u64 {
        if let Some(dir) = self.dir("memory") {
            let path = dir.join("memory.oom_control");
            return read_key(&path, "oom_kill").unwrap_or(0);
        }
        self.dir("unified")
            .and_then(|dir| read_key(&dir.join("memory.events"), "oom_kill"))
            .unwrap_or(0)
    }

    /// Memory limit hits, counted by the controller (an OOM kill or an allocation refused).
    pub fn memory_failures(&self) -> u64 {
        self.dir("memory")
            .and_then(|dir| read_u64(&dir.join("memory.failcnt")))
            .unwrap_or(0)
    }

    /// Forks refused because the pids limit was reached.
    pub fn pids_refused(&self) -> u64 {
        self.dir("pids")
            .or_else(|| self.dir("unified"))
            .and_then(|dir| read_key(&dir.join("pids.events"), "max"))
            .unwrap_or(0)
    }

    /// Kills every process in the sandbox's v2 cgroup, where `cgroup.kill` exists.
    pub fn kill_all(&self) {
        if let Some(dir) = self.dir("unified") {
            let _ = write(&dir.join("cgroup.kill"), "1");
        }
    }

    /// The controllers this host lets the runner use: for `sandbox-runner probe`.
    pub fn probe() -> Vec<String> {
        let probe = Cgroups::create(&Limits {
            memory_bytes: Some(1 << 30),
            pids: Some(1024),
            cpus: Some(1.0),
            ..Limits::default()
        });
        let mut found: Vec<String> = probe
            .enforced
            .iter()
            .map(|e| e.replace(": ", " "))
            .collect();
        if probe.dir("unified").is_some() {
            found.push("cgroup.kill (v2)".into());
        }
        found
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // A cgroup can be removed once its last process has been reaped, which may take the
            // kernel a moment after the runner's wait returned, longer on a loaded host. Wait up
            // to about two seconds; what is still there then, the next runner's sweep removes.
            let mut pause = std::time::Duration::from_millis(1);
            for attempt in 0..20 {
                if fs::remove_dir(&dir.path).is_ok() || !dir.path.exists() {
                    break;
                }
                if attempt == 0 {
                    let _ = write(&dir.path.join("cgroup.kill"), "1");
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
        }
    }
}
