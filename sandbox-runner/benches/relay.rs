//! What the runner adds to one request and answer on a warm sandbox: the round trip of a
//! 200-byte line through `cat`, started directly and inside `sandbox-runner launch` (with the
//! server's stdout relayed by the runner, and handed to it directly). Run with
//! `cargo bench -p sandbox-runner --bench relay`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark that cannot run should stop loudly"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use command_fds::{CommandFdExt, FdMapping};

const ROUND_TRIPS: usize = 20_000;

fn round_trips(child: &mut Child) -> Vec<u64> {
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let line = format!("{}\n", "x".repeat(199));
    let mut answer = String::new();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 500 {
        let began = Instant::now();
        stdin.write_all(line.as_bytes()).expect("write");
        answer.clear();
        stdout.read_line(&mut answer).expect("read");
        // The first 500 warm up.
        if i >= 500 {
            samples.push(began.elapsed().as_nanos() as u64);
        }
    }
    drop(stdin);
    samples.sort_unstable();
    samples
}

fn launched(
    tier: &str,
    stdout: &str,
    workdir: &std::path::Path,
) -> (Child, std::os::unix::net::UnixStream) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sandbox-runner"));
    command
        .args(["launch", "--control-fd", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
        .fd_mappings(vec![FdMapping {
            parent_fd: theirs.into(),
            child_fd: 3,
        }])
        .expect("fd mapping");
    let child = command.spawn().expect("sandbox-runner starts");
    let spec = serde_json::json!({
        "command": "/bin/cat",
        "workdir": workdir,
        "tier": tier,
        "stdout": stdout,
    });
    let mut control = ours;
    writeln!(control, "{spec}").expect("spec");
    // Acknowledge every event, so the runner never waits on us.
    let reader = control.try_clone().expect("clone");
    let mut writer = control.try_clone().expect("clone");
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let _ = writeln!(writer, "{{\"ack\":{}}}", event["seq"]);
        }
    });
    (child, control)
}

fn report(name: &str, samples: &[u64], base: Option<u64>) -> u64 {
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    let added = base.map_or_else(String::new, |b| {
        format!("{:+.1} µs", (p50 as f64 - b as f64) / 1000.0)
    });
    println!(
        "| {name} | {:.1} µs | {:.1} µs | {added} |",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0
    );
    p50
}

fn main() {
    let workdir = tempfile::tempdir().expect("tempdir");
    println!("| path | p50 | p99 | added to p50 |");
    println!("| --- | --- | --- | --- |");
    let mut direct = Command::new("/bin/cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cat");
    let base = report("cat, a direct child", &round_trips(&mut direct), None);
    let _ = direct.wait();
    for (tier, stdout) in [
        ("namespaces", "relay"),
        ("namespaces", "direct"),
        ("process", "relay"),
    ] {
        let (mut child, _control) = launched(tier, stdout, workdir.path());
        let samples = round_trips(&mut child);
        report(
            &format!("cat in the runner, {tier} tier, stdout {stdout}"),
            &samples,
            Some(base),
        );
        let _ = child.wait();
    }
}
