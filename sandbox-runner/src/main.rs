//! The `sandbox-runner` binary: see [`sandbox_runner::cli`].

fn main() -> std::process::ExitCode {
    sandbox_runner::cli::main_with(std::env::args_os())
}
