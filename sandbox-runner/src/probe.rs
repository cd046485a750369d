//! What this host offers each tier, found by trying: `sandbox-runner probe` prints it, and the
//! gateway reports it in `mcp-gateway status` and `/readyz`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroups;
use crate::protocol::{LaunchSpec, Limits, StdoutMode, Tier};

/// The probe's findings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    pub tiers: Vec<TierReport>,
    /// From the `landlock_create_ruleset` version call.
    pub landlock_abi: Option<i32>,
    /// Cgroup controllers the runner may use for limits.
    pub cgroups: Vec<String>,
    /// The runner's effective uid.
    pub uid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TierReport {
    pub tier: Tier,
    pub available: bool,
    pub detail: String,
}

fn report(tier: Tier, result: Result<String, String>) -> TierReport {
    let available = result.is_ok();
    let detail = result.unwrap_or_else(|reason| reason);
    TierReport {
        tier,
        available,
        detail,
    }
}

/// Probes every tier. The `namespaces` tier is probed by starting a real sandbox running
/// `true`, so a host that would fail at any step (namespaces, mounts, Landlock, seccomp) says so.
pub fn probe() -> Report {
    let namespaces = report(Tier::Namespaces, probe_namespaces());
    let gvisor = report(Tier::Gvisor, probe_gvisor());
    let process = TierReport {
        tier: Tier::Process,
        available: true,
        detail: "rlimits and a clean environment only; refused in production".into(),
    };
    Report {
        tiers: vec![namespaces, gvisor, process],
        landlock_abi: crate::confine::landlock_abi(),
        cgroups: Cgroups::probe(),
        uid: nix::unistd::geteuid().as_raw(),
    }
}

/// Runs `true` in a gVisor sandbox: runsc being installed is not enough to trust the tier.
fn probe_gvisor() -> Result<String, String> {
    if let Some(reason) = crate::gvisor::unavailable_reason() {
        return Err(reason);
    }
    let began = std::time::Instant::now();
    let running = crate::sandbox::start(&true_spec(Tier::Gvisor)).map_err(|r| r.message)?;
    let status = nix::sys::wait::waitpid(running.pid, None).map_err(|e| e.to_string())?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(format!(
            "runsc (ptrace platform, network none); a sandbox running `true` took {} ms",
            began.elapsed().as_millis()
        )),
        other => Err(format!(
            "a test sandbox running `true` ended with {other:?}"
        )),
    }
}

fn true_spec(tier: Tier) -> LaunchSpec {
    LaunchSpec {
        command: "true".into(),
        args: Vec::new(),
        env: Default::default(),
        workdir: std::env::temp_dir(),
        tier,
        fallback: None,
        limits: Limits::default(),
        allow_net: Vec::new(),
        read_only: Vec::new(),
        writable: Vec::new(),
        allowed_commands: Vec::new(),
        production: false,
        stdout: StdoutMode::Direct,
    }
}

fn probe_namespaces() -> Result<String, String> {
    let spec = true_spec(Tier::Namespaces);
    let mut running = crate::sandbox::start(&spec).map_err(|r| r.message)?;
    let _ = nix::sys::wait::waitpid(running.pid, None);
    let mut status = String::new();
    if let Some(fd) = running.status.take() {
        let _ = std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut status);
    }
    if status.trim() != "exit 0" {
        return Err(format!(
            "a test sandbox running `true` ended with `{}`",
            status.trim()
        ));
    }
    let isolation = &running.isolation;
    let mut detail = format!(
        "{} namespaces; landlock {}; seccomp; started in {} µs",
        isolation.namespaces.join(", "),
        isolation
            .landlock_abi
            .map_or_else(|| "unavailable".to_owned(), |abi| format!("ABI {abi}")),
        running.start_us
    );
    for note in &isolation.notes {
        detail.push_str("; ");
        detail.push_str(note);
    }
    Ok(detail)
}
