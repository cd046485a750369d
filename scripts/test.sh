#!/usr/bin/env bash
# Runs every test of the project: the README's test command, and what .ci/run runs.
#
#   1. installs what the tests need when it is missing (a Python venv with pinned packages, Node 22
#      and pinned npm packages under .tools/; nothing system-wide but cargo-nextest if absent)
#   2. Rust: formatting, clippy, unit and service tests, end-to-end tests (cargo nextest)
#   3. Python SDK and MCP Inspector clients through the gateway (pytest, tests/e2e)
#   4. the official MCP conformance suite against the fixture and against the gateway
#
# Postgres and Redis tests run when TEST_DATABASE_URL / TEST_REDIS_URL are set; this script says
# at the end what it skipped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
tools="$root/.tools"
skipped=()

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing test dependencies (when missing)"
bash "$root/scripts/install-test-deps.sh"

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building binaries"
cargo build --workspace --bins --quiet

step "Rust tests"
if [[ ! -x /usr/bin/runsc ]]; then
    skipped+=("sandbox gvisor-tier cases (runsc is not installed)")
fi
if [[ -z "${TEST_DATABASE_URL:-}" ]]; then
    skipped+=("Postgres tests (TEST_DATABASE_URL is not set)")
fi
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

step "Python SDK and MCP Inspector end-to-end tests"
MCP_GATEWAY_BIN="$CARGO_TARGET_DIR/debug/mcp-gateway" \
MCP_TEST_TOOLS="$tools" \
    "$tools/venv/bin/python" -m pytest -q "$root/tests/e2e"

step "MCP conformance suite"
bash "$root/scripts/conformance.sh" fixture
bash "$root/scripts/conformance.sh" gateway

if ((${#skipped[@]})); then
    printf '\nskipped:\n' >&2
    printf '  %s\n' "${skipped[@]}" >&2
fi
echo "all tests passed"
