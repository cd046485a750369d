//! The `sandbox-runner` binary: will start one MCP server inside an isolation tier and relay its stream.
//!
//! It is not implemented yet (the sandbox issue builds it). Until then the gateway starts stdio
//! upstreams as plain child processes and says so in its logs and status, and this binary refuses
//! to run rather than pretend to isolate anything.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("sandbox-runner: not implemented yet; no isolation tier is available");
    ExitCode::from(2)
}
