//! The escape battery: `sandbox-runner run` starts `sandbox-probe` in each tier, and every
//! attempt to reach the host (its network, sockets, files, processes, environment, kernel
//! surface) or to exhaust a resource is asserted, with a positive control beside each kind so
//! that a probe that could never succeed does not pass by accident.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandbox-probe"))
}

/// `sandbox-runner`, built beside this crate's binaries.
fn runner() -> PathBuf {
    let bin_dir = probe().parent().expect("bin dir").to_path_buf();
    let runner = bin_dir.join("sandbox-runner");
    assert!(
        runner.exists(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        runner.display()
    );
    runner
}

/// What one run reported: its events, and the probe's JSON line (if it printed one).
struct Run {
    events: Vec<Value>,
    probe: Option<Value>,
}

impl Run {
    fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == name)
    }

    fn limit_hit(&self, limit: &str) -> bool {
        self.events
            .iter()
            .any(|e| e["event"] == "limit_hit" && e["limit"] == limit)
    }

    fn ok(&self) -> bool {
        let probe = self
            .probe
            .as_ref()
            .unwrap_or_else(|| panic!("the probe printed nothing; events: {:#?}", self.events));
        probe["ok"].as_bool().expect("ok is a bool")
    }
}

fn run_in(tier: &str, workdir: &Path, options: &[&str], case: &[&str]) -> Run {
    run_with_env(tier, workdir, options, case, &[])
}

/// As [`run_in`], with more variables in the runner's own environment.
fn run_with_env(
    tier: &str,
    workdir: &Path,
    options: &[&str],
    case: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let probe = probe();
    let mut command = Command::new(runner());
    command
        .args(["run", "--tier", tier, "--workdir"])
        .arg(workdir)
        .arg("--read-only")
        .arg(&probe)
        .args(options)
        .arg("--")
        .arg(&probe)
        .args(case)
        // Something of the host's environment that must not leak in.
        .env("MCP_ESCAPE_SECRET", "host-secret")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let output = command.output().expect("sandbox-runner runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line {l:?}: {e}")))
        .collect();
    let stdout: String = events
        .iter()
        .filter(|e| e["event"] == "output" && e["stream"] == "stdout")
        .filter_map(|e| e["data"].as_str())
        .collect();
    let probe = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok());
    Run { events, probe }
}

fn run(workdir: &Path, case: &[&str]) -> Run {
    run_in("namespaces", workdir, &[], case)
}

/// The isolating tiers this host has: `namespaces`, and `gvisor` where runsc is installed
/// (`scripts/install-test-deps.sh` installs it, and `scripts/test.sh` says when it could not).
fn tiers() -> Vec<&'static str> {
    let mut tiers = vec!["namespaces"];
    if Path::new("/usr/bin/runsc").exists() {
        tiers.push("gvisor");
    } else {
        eprintln!("runsc is not installed: the gvisor tier is not tested");
    }
    tiers
}

fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn the_sandbox_starts_confined_and_reports_how() {
    let dir = workdir();
    let run = run(dir.path(), &["whoami"]);
    let started = run.event("started").expect("a started event");
    assert_eq!(started["tier"], "namespaces");
    assert_eq!(started["tier_requested"], "namespaces");
    let isolation = &started["isolation"];
    for ns in ["user", "pid", "mount", "net", "ipc", "uts", "cgroup"] {
        assert!(
            isolation["namespaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == ns)),
            "{isolation}"
        );
    }
    assert_eq!(isolation["seccomp"], true);
    let me = run.probe.as_ref().expect("probe output");
    assert_eq!(me["cap_eff"], "0000000000000000", "{me}");
    assert_eq!(me["no_new_privs"], 1, "{me}");
    assert_eq!(me["seccomp"], 2, "{me}");
    assert_ne!(me["uid"], 0, "{me}");
    let exited = run.event("exited").expect("an exited event");
    assert_eq!(exited["code"], 0);
}

#[test]
fn the_host_network_is_unreachable() {
    let dir = workdir();
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let loopback = format!("127.0.0.1:{port}");
    // Positive control: the probe reaches the listener from outside a sandbox.
    let direct = Command::new(probe())
        .args(["tcp", &loopback])
        .output()
        .expect("probe runs");
    assert!(String::from_utf8_lossy(&direct.stdout).contains("\"ok\":true"));
    for tier in tiers() {
        let run = |case: &[&str]| run_in(tier, dir.path(), &[], case);
        assert!(!run(&["tcp", &loopback]).ok(), "{tier}: TCP to loopback");
        if let Some(address) = host_address() {
            let external = format!("{address}:{port}");
            assert!(!run(&["tcp", &external]).ok(), "{tier}: TCP to {external}");
        }
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        udp.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let target = udp.local_addr().expect("addr").to_string();
        let _ = run(&["udp", &target]);
        let mut buf = [0u8; 64];
        assert!(
            udp.recv_from(&mut buf).is_err(),
            "{tier}: a datagram from the sandbox reached the host"
        );
    }
}

/// The machine's first non-loopback IPv4 address, if it has one.
fn host_address() -> Option<String> {
    let output = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find(|a| a.contains('.') && !a.starts_with("127."))
        .map(str::to_owned)
}

#[test]
fn host_unix_sockets_are_unreachable() {
    let dir = workdir();
    let outside = workdir();
    let path = outside.path().join("host.sock");
    let _path_listener = UnixListener::bind(&path).expect("bind path socket");
    let name = format!("mcp-escape-{}", std::process::id());
    let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let _abstract_listener = UnixListener::bind_addr(&abstract_addr).expect("bind abstract");
    // Positive control, from outside.
    let direct = Command::new(probe())
        .args(["unix-abstract", &name])
        .output()
        .expect("probe runs");
    assert!(String::from_utf8_lossy(&direct.stdout).contains("\"ok\":true"));
    for tier in tiers() {
        let run = |case: &[&str]| run_in(tier, dir.path(), &[], case);
        assert!(!run(&["unix-abstract", &name]).ok(), "{tier}");
        assert!(
            !run(&["unix-path", &path.display().to_string()]).ok(),
            "{tier}"
        );
    }
}

#[test]
fn only_the_working_directory_is_writable_and_host_files_are_hidden() {
    for tier in tiers() {
        let dir = workdir();
        let outside = workdir();
        let run = |case: &[&str]| run_in(tier, dir.path(), &[], case);
        // Positive controls: the working directory is readable and writable.
        let inside_file = dir.path().join("made-inside");
        assert!(
            run(&["write", &inside_file.display().to_string()]).ok(),
            "{tier}"
        );
        assert_eq!(
            std::fs::read_to_string(&inside_file).expect("written"),
            "probe\n"
        );
        assert!(
            run(&["read", &inside_file.display().to_string()]).ok(),
            "{tier}"
        );

        // Beside the working directory is the sandbox's private /tmp: a write may land there,
        // and never on the host.
        let escaped = outside.path().join("escaped");
        let _ = run(&["write", &escaped.display().to_string()]);
        assert!(!escaped.exists(), "{tier}");
        // The probe's own binary is visible read-only, and cannot be replaced.
        assert!(
            !run(&["write", &probe().display().to_string()]).ok(),
            "{tier}"
        );
        assert!(!run(&["write", "/etc/passwd"]).ok(), "{tier}");
        assert!(!run(&["write", "/usr/escaped"]).ok(), "{tier}");

        assert!(!run(&["read", "/etc/shadow"]).ok(), "{tier}");
        let public = outside.path().join("world-readable");
        std::fs::write(&public, "host data").expect("write");
        assert!(
            !run(&["read", &public.display().to_string()]).ok(),
            "{tier}"
        );
    }
}

#[test]
fn host_processes_are_invisible_and_unsignallable() {
    let dir = workdir();
    let me: u64 = std::process::id().into();
    for tier in tiers() {
        let run = |case: &[&str]| run_in(tier, dir.path(), &[], case);
        let seen = run(&["see-pid", &me.to_string()]);
        let pids = seen.probe.as_ref().expect("probe")["pids"]
            .as_array()
            .expect("pids")
            .clone();
        assert!(
            pids.len() < 10,
            "{tier}: the sandbox should see only its own processes: {pids:?}"
        );
        // A small pid may name a process of the sandbox itself; the test's is never in it.
        if !pids.iter().any(|p| p.as_u64() == Some(me)) {
            assert!(!seen.ok(), "{tier}");
            assert!(!run(&["kill", &me.to_string()]).ok(), "{tier}");
            assert!(!run(&["ptrace-pid", &me.to_string()]).ok(), "{tier}");
        }
    }
}

#[test]
fn kernel_surface_is_closed() {
    let dir = workdir();
    for tier in tiers() {
        for case in [
            &["userns"][..],
            &["mount", "/tmp"],
            &["io-uring"],
            &["ptrace"],
        ] {
            let run = run_in(tier, dir.path(), &[], case);
            assert!(!run.ok(), "{tier} {case:?}: {:?}", run.probe);
        }
    }
}

#[test]
fn the_host_environment_and_hostname_do_not_leak_in() {
    let dir = workdir();
    for tier in tiers() {
        let env = run_in(tier, dir.path(), &[], &["env"]);
        let vars = env.probe.as_ref().expect("probe")["env"].clone();
        assert!(vars.get("MCP_ESCAPE_SECRET").is_none(), "{tier}: {vars}");
        let host_home = std::env::var("HOME").unwrap_or_default();
        assert_ne!(
            vars.get("HOME").and_then(|h| h.as_str()),
            Some(host_home.as_str()),
            "{tier}: {vars}"
        );
        let named = run_in(tier, dir.path(), &[], &["hostname"]);
        let inside = named.probe.as_ref().expect("probe")["hostname"].clone();
        assert_eq!(inside, "mcp-sandbox", "{tier}");
        assert_ne!(inside, nix_hostname().as_str());
    }
}

fn nix_hostname() -> String {
    let mut name = String::new();
    let _ = std::fs::File::open("/proc/sys/kernel/hostname")
        .and_then(|mut f| f.read_to_string(&mut name));
    name.trim().to_owned()
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let dir = workdir();
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--pids", "32", "--wall-secs", "3", "--kill-grace-ms", "100"],
        &["fork-bomb"],
    );
    let probe = run.probe.as_ref().expect("the bomb reports");
    assert!(probe["forks"].as_u64().expect("forks") < 32, "{probe}");
    let started = run.event("started").expect("started");
    let enforced = started["isolation"]["limits"].to_string();
    if enforced.contains("pids: cgroup") {
        assert!(run.limit_hit("pids"), "{:#?}", run.events);
    }
    assert!(run.event("exited").is_some());
}

#[test]
fn a_memory_hog_is_oom_killed_at_the_memory_limit() {
    let dir = workdir();
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--memory", "64M", "--wall-secs", "20"],
        &["mem-hog"],
    );
    let exited = run.event("exited").expect("exited");
    let started = run.event("started").expect("started");
    if started["isolation"]["limits"]
        .to_string()
        .contains("memory: cgroup")
    {
        assert!(run.limit_hit("memory"), "{:#?}", run.events);
        assert_eq!(exited["signal"], "SIGKILL", "{exited}");
    } else {
        // Under RLIMIT_DATA the allocation fails instead of the kernel killing the process.
        assert!(!run.ok(), "{:?}", run.probe);
    }
    let peak = exited["usage"]["peak_memory_bytes"].as_u64().unwrap_or(0);
    assert!(peak <= 80 << 20, "peak {peak}");
}

#[test]
fn a_cpu_spinner_is_killed_at_the_cpu_limit() {
    let dir = workdir();
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--cpu-seconds", "1", "--wall-secs", "30"],
        &["spin"],
    );
    assert!(run.limit_hit("cpu"), "{:#?}", run.events);
    assert!(run.event("timed_out").is_none());
    let usage = &run.event("exited").expect("exited")["usage"];
    assert!(usage["cpu_user_ms"].as_u64().unwrap_or(0) >= 900, "{usage}");
}

#[test]
fn a_process_ignoring_sigterm_is_killed_at_the_wall_clock_limit() {
    let dir = workdir();
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--wall-secs", "1", "--kill-grace-ms", "200"],
        &["ignore-term"],
    );
    assert!(run.ok(), "the probe ignored SIGTERM: {:?}", run.probe);
    assert!(run.event("timed_out").is_some(), "{:#?}", run.events);
    assert_eq!(run.event("exited").expect("exited")["signal"], "SIGKILL");
}

#[test]
fn an_output_flood_is_cut_at_the_output_cap() {
    let dir = workdir();
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--output-bytes", "1M", "--wall-secs", "20"],
        &["flood"],
    );
    assert!(run.limit_hit("output"), "{:#?}", run.events.len());
    let usage = &run.event("exited").expect("exited")["usage"];
    assert!(
        usage["output_bytes"].as_u64().unwrap_or(0) < 2 << 20,
        "{usage}"
    );
}

#[test]
fn the_proxy_reaches_the_allowed_endpoint_and_nothing_else() {
    let dir = workdir();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let other = TcpListener::bind("127.0.0.1:0").expect("bind");
    let allowed_addr = allowed.local_addr().expect("addr").to_string();
    let other_addr = other.local_addr().expect("addr").to_string();
    // An HTTP server on the allowed port, one response per connection.
    std::thread::spawn(move || {
        for mut stream in allowed.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            );
        }
    });
    let allow = ["--allow-net", allowed_addr.as_str()];
    // In gVisor the proxy is reached through the runner's egress shim.
    for tier in tiers() {
        let good = run_in(tier, dir.path(), &allow, &["http-get", &allowed_addr]);
        assert!(good.ok(), "{tier}: {:?} {:#?}", good.probe, good.events);
        assert!(good.event("connected").is_some(), "{tier}");
        let bad = run_in(tier, dir.path(), &allow, &["http-get", &other_addr]);
        assert!(!bad.ok(), "{tier}: {:?}", bad.probe);
        let denied = bad.event("denied").expect("a denied event");
        assert_eq!(denied["target"], other_addr.as_str(), "{tier}");
        // Going around the proxy does not work either.
        let direct = run_in(tier, dir.path(), &allow, &["tcp", &allowed_addr]);
        assert!(!direct.ok(), "{tier}");
    }
}

#[test]
fn a_thousand_sandboxes_leave_no_process_and_no_cgroup_behind() {
    let dir = workdir();
    for _ in 0..1000 {
        let run = run_in("namespaces", dir.path(), &["--pids", "16"], &["exit", "0"]);
        assert_eq!(run.event("exited").expect("exited")["code"], 0);
    }
    // A sandbox killed mid-run takes its whole tree with it.
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--wall-secs", "0.5", "--kill-grace-ms", "100"],
        &["fork-bomb"],
    );
    assert!(run.event("timed_out").is_some());
    // No wait needed: the init's exit (which the runner waited for) waits for every process
    // of its pid namespace to be gone.
    let probe = probe();
    let leftover: Vec<_> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe == probe))
        .collect();
    assert!(
        leftover.is_empty(),
        "{} probe processes remain",
        leftover.len()
    );
    // Every runner of this test has exited: none may have left a cgroup or a root directory.
    // Runners of other tests may be killed with SIGKILL at any time (a dropped gateway kills
    // its runners), and their sandboxes take a moment to die; what they leave, a later runner
    // removes. So start runners until a sweep finds nothing, and give up after 30 of them.
    let mut cgroups = Vec::new();
    for _ in 0..30 {
        let _ = run_in("namespaces", dir.path(), &["--pids", "16"], &["exit", "0"]);
        cgroups = leaked(&cgroup_dirs());
        if cgroups.is_empty() {
            break;
        }
    }
    let described: Vec<String> = cgroups.iter().map(|c| describe_cgroup(c)).collect();
    assert_eq!(described, Vec::<String>::new());
    let roots: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .filter(|p| name_of(p).starts_with("mcp-sandbox-root-"))
        .collect();
    assert_eq!(leaked(&roots), Vec::<PathBuf>::new());
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The paths among `paths` whose runner (the pid after the prefix) is gone.
fn leaked(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter(|p| {
            let name = name_of(p);
            let rest = name
                .trim_start_matches("mcp-sandbox-root-")
                .trim_start_matches("mcp-sandbox-");
            rest.split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .cloned()
        .collect()
}

/// A leaked cgroup with what keeps it from being removed: its processes and child cgroups.
fn describe_cgroup(path: &Path) -> String {
    let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
    let procs: Vec<String> = procs
        .split_whitespace()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let state: String = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, r)| r.chars().take(1).collect())
                })
                .unwrap_or_default();
            format!("{pid} {} {state}", comm.trim())
        })
        .collect();
    let children: Vec<String> = std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| name_of(&e.path()))
                .collect()
        })
        .unwrap_or_default();
    let removal = match std::fs::remove_dir(path) {
        Ok(()) => "removable now".to_owned(),
        Err(e) => e.to_string(),
    };
    format!(
        "{}: processes {procs:?}, children {children:?}, rmdir: {removal}",
        path.display()
    )
}

/// The `mcp-sandbox-*` cgroups that exist now, in every hierarchy.
fn cgroup_dirs() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if name_of(&path).starts_with("mcp-sandbox-") {
                found.push(path);
            } else if path.components().count() < 9 {
                stack.push(path);
            }
        }
    }
    found
}

#[test]
fn the_process_tier_says_it_isolates_nothing_and_production_refuses_it() {
    let dir = workdir();
    let run = run_in("process", dir.path(), &[], &["env"]);
    let started = run.event("started").expect("started");
    assert_eq!(started["tier"], "process");
    assert!(
        started["isolation"]["notes"]
            .to_string()
            .contains("isolates nothing")
    );
    // Even here the environment is clean.
    let vars = run.probe.as_ref().expect("probe")["env"].clone();
    assert!(vars.get("MCP_ESCAPE_SECRET").is_none(), "{vars}");

    let refused = run_in("process", dir.path(), &["--production"], &["env"]);
    let failed = refused.event("failed").expect("refused");
    assert!(
        failed["message"]
            .to_string()
            .contains("refused in production"),
        "{failed}"
    );
    assert!(refused.probe.is_none());
}

#[test]
fn a_missing_tier_fails_closed_unless_a_fallback_is_named() {
    let dir = workdir();
    // gVisor as on a host without it.
    let without_runsc = [("SANDBOX_RUNSC", "/nonexistent/runsc")];
    let refused = run_with_env("gvisor", dir.path(), &[], &["exit", "0"], &without_runsc);
    let failed = refused.event("failed").expect("fails closed");
    assert!(failed["message"].to_string().contains("gvisor"), "{failed}");
    assert!(refused.event("started").is_none());

    let fallback = run_with_env(
        "gvisor",
        dir.path(),
        &["--fallback", "namespaces"],
        &["exit", "0"],
        &without_runsc,
    );
    let started = fallback.event("started").expect("started");
    assert_eq!(started["tier_requested"], "gvisor");
    assert_eq!(started["tier"], "namespaces");
    assert!(
        started["isolation"]["notes"]
            .to_string()
            .contains("fallback")
    );
}

#[test]
fn gvisor_contains_a_fork_bomb_a_memory_hog_and_a_process_ignoring_sigterm() {
    if !tiers().contains(&"gvisor") {
        return;
    }
    let dir = workdir();
    // Under gVisor the pids limit counts gVisor's own threads: a bomb ends the sandbox.
    let bomb = run_in(
        "gvisor",
        dir.path(),
        &[
            "--pids",
            "32",
            "--wall-secs",
            "10",
            "--kill-grace-ms",
            "100",
        ],
        &["fork-bomb"],
    );
    let exited = bomb.event("exited").expect("exited");
    assert_ne!(exited["code"], 0, "{exited}");
    // The runner's own cgroups hold the sandbox, so it tells which limit ended it.
    let hit = bomb.event("limit_hit").expect("a limit_hit event");
    assert_eq!(hit["limit"], "pids", "{hit}");
    let hog = run_in(
        "gvisor",
        dir.path(),
        &["--memory", "64M", "--wall-secs", "20"],
        &["mem-hog"],
    );
    assert!(hog.event("timed_out").is_none(), "{:#?}", hog.events);
    let exited = hog.event("exited").expect("exited");
    assert_ne!(exited["code"], 0, "{exited}");
    let hit = hog.event("limit_hit").expect("a limit_hit event");
    assert_eq!(hit["limit"], "memory", "{hit}");
    // The sandbox's peak, gVisor's own memory included, read from its cgroup: up to the limit.
    let peak = exited["usage"]["peak_memory_bytes"]
        .as_u64()
        .expect("peak memory");
    assert!(peak > 32 << 20 && peak <= 64 << 20, "{exited}");
    // CPU time is measured on the cgroup too (gVisor's own included) and cut at the limit.
    let spinner = run_in(
        "gvisor",
        dir.path(),
        &["--cpu-seconds", "1", "--wall-secs", "30"],
        &["spin"],
    );
    assert!(
        spinner.event("timed_out").is_none(),
        "{:#?}",
        spinner.events
    );
    let hit = spinner.event("limit_hit").expect("a limit_hit event");
    assert_eq!(hit["limit"], "cpu", "{hit}");
    assert!(spinner.event("exited").is_some());
    let stubborn = run_in(
        "gvisor",
        dir.path(),
        &["--wall-secs", "1", "--kill-grace-ms", "200"],
        &["ignore-term"],
    );
    assert!(stubborn.event("timed_out").is_some());
    assert!(stubborn.event("exited").is_some());
    // No runsc of a finished runner is left (others' runners may be running).
    let orphans: Vec<PathBuf> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c.starts_with("/usr/bin/runsc"))
        .filter_map(|c| {
            let start = c.find("mcp-sandbox-root-")?;
            let name = c[start..].split(['/', '\0']).next()?.to_owned();
            Some(std::env::temp_dir().join(name))
        })
        .collect();
    assert_eq!(leaked(&orphans), Vec::<PathBuf>::new());
}

#[test]
fn a_command_off_the_allow_list_is_denied() {
    let dir = workdir();
    let run = run_in(
        "namespaces",
        dir.path(),
        &["--allow-command", "/usr/bin/true"],
        &["exit", "0"],
    );
    assert!(run.event("denied").is_some(), "{:#?}", run.events);
    assert!(run.event("failed").is_some());
    assert!(run.event("started").is_none());
}

#[test]
fn an_unprivileged_user_gets_the_namespaces_tier_with_rlimits_said_plainly() {
    if !nix_is_root() {
        eprintln!("not root: this test drops to `nobody`, which only root can do");
        return;
    }
    let dir = workdir();
    // `nobody` must own its working directory, and reach the binaries (target/ is 0755).
    let status = Command::new("chown")
        .args(["65534:65534"])
        .arg(dir.path())
        .status()
        .expect("chown");
    assert!(status.success());
    let probe = probe();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(runner())
        .args(["run", "--workdir"])
        .arg(dir.path())
        .args(["--memory", "64M", "--pids", "32", "--read-only"])
        .arg(&probe)
        .arg("--")
        .arg(&probe)
        .arg("whoami")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let started = events
        .iter()
        .find(|e| e["event"] == "started")
        .unwrap_or_else(|| {
            panic!(
                "no started event: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert_eq!(started["tier"], "namespaces");
    let isolation = started["isolation"].to_string();
    // Without a delegated cgroup the limits are rlimits, and the event says so.
    assert!(isolation.contains("rlimit"), "{isolation}");
    let me: Value = events
        .iter()
        .filter(|e| e["event"] == "output")
        .find_map(|e| serde_json::from_str(e["data"].as_str()?.trim()).ok())
        .expect("probe output");
    assert_eq!(me["cap_eff"], "0000000000000000", "{me}");
    assert_eq!(me["seccomp"], 2, "{me}");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
