//! What the sandboxed program's own process does to itself just before `execve`: rlimits,
//! `no_new_privs`, every capability dropped, Landlock, and the seccomp filter, in that order
//! (seccomp last, so that nothing the runner needs is filtered).

#![allow(unsafe_code)] // System calls without safe wrappers; each block says why it is sound.

use std::collections::BTreeMap;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The Landlock ABI of the running kernel, from the `landlock_create_ruleset` version call
/// (not from /sys, which may be absent or show a different view).
pub(crate) fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, zero size and the VERSION flag the call only
    // returns a number; it reads and writes no memory of ours.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (abi > 0).then_some(abi as i32)
}

fn abi_enum(version: i32) -> ABI {
    match version {
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

/// Paths the program may read (and execute) and paths it may also write.
#[derive(Debug, Clone, Default)]
pub(crate) struct FsRules {
    pub(crate) read: Vec<PathBuf>,
    pub(crate) write: Vec<PathBuf>,
    /// A loopback port the program may connect to (the proxy), if any.
    pub(crate) connect_port: Option<u16>,
}

/// Restricts this process and its future children with Landlock: file access beyond the rules,
/// TCP bind and connect (but to the proxy port), abstract Unix sockets and signals outside the
/// sandbox are all refused. Returns the ABI enforced.
pub(crate) fn landlock(rules: &FsRules, version: i32) -> Result<i32, String> {
    let abi = abi_enum(version);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?;
    if version >= 4 {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| e.to_string())?;
    }
    if version >= 6 {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset
        .create()
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(&rules.read, AccessFs::from_read(abi)))
        .map_err(|e| e.to_string())?
        .add_rules(path_beneath_rules(&rules.write, AccessFs::from_all(abi)))
        .map_err(|e| e.to_string())?
        // Listing directories is harmless inside the private root, and programs walk up from
        // their working directory.
        .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))
        .map_err(|e| e.to_string())?;
    if version >= 4
        && let Some(port) = rules.connect_port
    {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| e.to_string())?;
    }
    created.restrict_self().map_err(|e| e.to_string())?;
    Ok(version)
}

/// The resource limits of the program's process. `memory`, `pids` and `cpu_seconds` are set
/// only where no cgroup enforces them for the whole sandbox.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rlimits {
    pub(crate) open_files: u64,
    pub(crate) memory: Option<u64>,
    pub(crate) pids: Option<u64>,
    pub(crate) cpu_seconds: Option<u64>,
}

impl Rlimits {
    pub(crate) fn apply(&self) -> nix::Result<()> {
        setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
        setrlimit(Resource::RLIMIT_NOFILE, self.open_files, self.open_files)?;
        if let Some(bytes) = self.memory {
            // RLIMIT_DATA, not RLIMIT_AS: runtimes such as V8 reserve far more address space
            // than they use, and would not start under an address-space limit.
            setrlimit(Resource::RLIMIT_DATA, bytes, bytes)?;
        }
        if let Some(pids) = self.pids {
            setrlimit(Resource::RLIMIT_NPROC, pids, pids)?;
        }
        if let Some(secs) = self.cpu_seconds {
            // SIGXCPU at the soft limit, SIGKILL a second later.
            setrlimit(Resource::RLIMIT_CPU, secs, secs + 1)?;
        }
        Ok(())
    }
}

/// Sets `no_new_privs`: nothing executed from here on gains privileges (setuid bits, file
/// capabilities), and an unprivileged process may install a seccomp filter.
pub(crate) fn no_new_privs() -> nix::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Drops every capability: the bounding set, the ambient set, and the effective, permitted and
/// inheritable sets.
pub(crate) fn drop_capabilities() -> nix::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        // SAFETY: integer arguments only. EINVAL for a capability this kernel lacks is fine.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 && nix::errno::Errno::last() != nix::errno::Errno::EINVAL {
            return Err(nix::errno::Errno::last());
        }
    }
    // SAFETY: integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    nix::errno::Errno::result(rc)?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs, laid out as the kernel's
    // `__user_cap_header_struct` and `__user_cap_data_struct` (version 3).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    nix::errno::Errno::result(rc).map(drop)
}

const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// System calls the program never gets: they reach kernel surface a tool server has no use for
/// (io_uring, BPF, keyrings, modules), or would undo the sandbox (mount, namespaces, ptrace).
const DENIED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
    libc::SYS_pidfd_getfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// The names of [`DENIED_SYSCALLS`] (but the x86-only ones), for an OCI seccomp profile.
pub(crate) const DENIED_SYSCALL_NAMES: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "vhangup",
    "pidfd_getfd",
];

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

/// The two seccomp filters: the first answers `clone3` with ENOSYS (its flags live in memory a
/// filter cannot read, so C libraries fall back to `clone`, whose flags it can); the second
/// answers EPERM to the denied calls, to `clone` with a namespace flag, and to TIOCSTI.
pub(crate) fn seccomp_filters() -> Result<Vec<BpfProgram>, String> {
    let arch = target_arch()?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|&call| (call, Vec::new()))
        .collect();
    let clone_rules = CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_clone, clone_rules);
    let tiocsti = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        #[allow(
            clippy::unnecessary_cast,
            reason = "the request type differs by libc target"
        )]
        (libc::TIOCSTI as u64),
    )
    .and_then(|c| SeccompRule::new(vec![c]))
    .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_ioctl, vec![tiocsti]);
    let denied = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    [clone3, denied]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(|e| e.to_string()))
        .collect()
}

/// Installs prepared filters on this thread (the program is single-threaded before `execve`).
pub(crate) fn apply_seccomp(filters: &[BpfProgram]) -> Result<(), String> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|e| e.to_string())?;
    }
    Ok(())
}
