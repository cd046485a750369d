//! Start-up of a sandbox, from the runner's start of the launch to the program's `execve`, as
//! the runner measures it (`start_us` of its `started` event), for each tier and with and
//! without cgroup limits. Run with `cargo bench -p sandbox-runner --bench start`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot run should stop loudly"
)]

use std::process::{Command, Stdio};

const RUNS: usize = 200;

fn start_us(args: &[&str], workdir: &std::path::Path) -> Option<u64> {
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox-runner"))
        .arg("run")
        .args(args)
        .arg("--workdir")
        .arg(workdir)
        .args(["--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("sandbox-runner runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let started: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    (started["event"] == "started").then(|| started["start_us"].as_u64())?
}

fn main() {
    let workdir = tempfile::tempdir().expect("tempdir");
    println!("| tier | limits | runs | p50 | p90 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let scenarios: [(&str, &str, &[&str]); 3] = [
        ("namespaces", "none", &["--tier", "namespaces"]),
        (
            "namespaces",
            "memory, pids, cpus (cgroups)",
            &[
                "--tier",
                "namespaces",
                "--memory",
                "256M",
                "--pids",
                "64",
                "--cpus",
                "1",
            ],
        ),
        ("process", "none", &["--tier", "process"]),
    ];
    for (tier, limits, args) in scenarios {
        let mut samples: Vec<u64> = (0..RUNS)
            .filter_map(|_| start_us(args, workdir.path()))
            .collect();
        if samples.is_empty() {
            println!("| {tier} | {limits} | 0 | unavailable here | | |");
            continue;
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "| {tier} | {limits} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            samples.len(),
            at(0.5) as f64 / 1000.0,
            at(0.9) as f64 / 1000.0,
            at(1.0) as f64 / 1000.0
        );
    }
}
