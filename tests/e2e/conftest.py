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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest

from support import CLIENT_MODES, EVERYTHING, GATEWAY_BIN, HANG_GUARD_SECS, NODE, TIME_SERVER, gateway_env, require

# The gateway's relay timeout. Longer than any call of a passing test, so no test passes only
# because the gateway gave up on a call.
CALL_SECS = 30

_GATEWAY_LOGS = pytest.StashKey[list[Path]]()


def _toml_string(value: object) -> str:
    # A JSON string is a valid TOML basic string for every path these tests write.
    return json.dumps(str(value))


def write_config(tmp_path: Path, body: str, top: str = "") -> Path:
    """`gateway.toml` in `tmp_path`: `top` (keys before any table), state there, anonymous
    clients, then `body`."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""\
{top}
[storage]
data_dir = {_toml_string(tmp_path / "data")}

[auth]
anonymous = true

{body}"""
    )
    return config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CLIENT_MODES)
def client_mode(request: pytest.FixtureRequest) -> str:
    """Each of the Python SDK's client modes in turn."""
    return request.param


@pytest.fixture
def gateway_config(tmp_path: Path) -> Path:
    """A gateway config with the `everything` and `time` upstreams, state kept in `tmp_path`."""
    require(GATEWAY_BIN)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""\
[storage]
data_dir = {_toml_string(tmp_path / "data")}

[auth]
anonymous = true

[timeouts]
call_secs = {CALL_SECS}

[servers.everything]
command = {_toml_string(require(NODE))}
args = [{_toml_string(require(EVERYTHING))}, "stdio"]

[servers.time]
command = {_toml_string(require(TIME_SERVER))}
"""
    )
    return config


@pytest.fixture
def gateway_log(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], TextIO]:
    """Opens a file in `tmp_path` for a gateway's stderr, shown in the report if the test fails."""

    def open_log(name: str) -> TextIO:
        path = tmp_path / name
        request.node.stash.setdefault(_GATEWAY_LOGS, []).append(path)
        return path.open("w")

    return open_log


@pytest.fixture
def gateway_url(gateway_config: Path, gateway_log: Callable[[str], TextIO]) -> Iterator[str]:
    """Runs `mcp-gateway serve` on a loopback port chosen by the kernel and yields its MCP URL.

    The gateway prints `listening on URL` once its upstreams are connected, so no test waits
    for anything else before it connects.
    """
    with gateway_log("gateway.stderr") as log, serving(gateway_config, log) as url:
        yield url


@contextmanager
def serving(config: Path, log: TextIO) -> Iterator[str]:
    """Runs `mcp-gateway serve --config CONFIG`, its stderr into `log`, and yields its MCP URL."""
    process = subprocess.Popen(
        [GATEWAY_BIN, "serve", "--config", config, "--bind", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=gateway_env(),
        text=True,
        # Its own process group, so teardown can end the upstreams too should the gateway
        # leave them behind.
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:
        for path in item.stash.get(_GATEWAY_LOGS, []):
            if path.exists():
                report.sections.append((f"gateway stderr ({path.name})", path.read_text()))
    return report
