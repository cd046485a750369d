"""Stdio servers run inside the sandbox: real third-party servers work unchanged and can reach
nothing but their working directory, and a server that crashes, hogs memory or forks without
end is contained while the gateway goes on serving everyone else."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from mcp import MCPError

from conftest import _toml_string, serving, write_config
from support import (
    GATEWAY_BIN,
    HANG_GUARD_SECS,
    NODE,
    NPM_MODULES,
    TIME_SERVER,
    TOOLS,
    connected,
    gateway_env,
    require,
)

pytestmark = pytest.mark.anyio

FILESYSTEM = NPM_MODULES / "server-filesystem" / "dist" / "index.js"
UNRULY_SERVER = Path(__file__).parent / "servers" / "unruly_server.py"


@pytest.fixture
def sandboxed(tmp_path: Path, gateway_log) -> Iterator[tuple[str, Path]]:
    """A gateway with server-filesystem (allowed `/`: only the sandbox confines it), the unruly
    server under memory and pids limits, and mcp-server-time. Yields its URL and the
    filesystem server's working directory."""
    workdir = tmp_path / "fs"
    workdir.mkdir()
    config = write_config(
        tmp_path,
        f"""\
[timeouts]
call_secs = 20

[servers.fs]
command = {_toml_string(require(NODE))}
args = [{_toml_string(require(FILESYSTEM))}, "/"]
cwd = {_toml_string(workdir)}

[servers.unruly]
command = {_toml_string(sys.executable)}
args = [{_toml_string(UNRULY_SERVER)}]

[servers.unruly.sandbox.limits]
memory = "256M"
pids = 64

[servers.time]
command = {_toml_string(require(TIME_SERVER))}
"""
    )
    with gateway_log("gateway.stderr") as log, serving(config, log) as url:
        yield url, workdir


def audit_records(tmp_path: Path, *filters: str) -> list[dict]:
    """The records `mcp-gateway audit query FILTERS` prints for the gateway configured in
    `tmp_path`."""
    done = subprocess.run(
        [require(GATEWAY_BIN), "audit", "query", *filters, "--config", tmp_path / "gateway.toml"],
        capture_output=True,
        text=True,
        env=gateway_env(),
        timeout=HANG_GUARD_SECS,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["record"] for line in done.stdout.splitlines()]


def text(result) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def readyz(url: str) -> str:
    base = url.rsplit("/mcp", 1)[0]
    with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
        return response.read().decode()


async def test_every_stdio_server_runs_in_the_namespaces_tier(sandboxed) -> None:
    url, _ = sandboxed
    status = readyz(url)
    for server in ("fs", "unruly", "time"):
        assert f"{server} ready tier=namespaces requested=namespaces" in status, status
    assert "sandbox namespaces available=true" in status, status


async def test_server_filesystem_reads_and_writes_its_workdir_and_nothing_else(sandboxed, tmp_path: Path) -> None:
    url, workdir = sandboxed
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host data")
    async with connected(url, "auto") as client:
        wrote = await client.call_tool(
            "fs__write_file", {"path": str(workdir / "note.txt"), "content": "inside"}
        )
        assert not wrote.is_error, text(wrote)
        assert (workdir / "note.txt").read_text() == "inside"
        read = await client.call_tool("fs__read_text_file", {"path": str(workdir / "note.txt")})
        assert text(read) == "inside"

        # The server itself allows `/`; the sandbox is what stops it.
        for path in (str(secret), "/etc/shadow", str(Path.home() / ".bashrc")):
            denied = await client.call_tool("fs__read_text_file", {"path": path})
            assert denied.is_error, f"{path}: {text(denied)}"
            assert "host data" not in text(denied)
        # Beside the working directory is the sandbox's own private /tmp: a write there may
        # succeed, and never reaches the host.
        outside = tmp_path / "escaped.txt"
        await client.call_tool("fs__write_file", {"path": str(outside), "content": "x"})
        assert not outside.exists()
        denied = await client.call_tool("fs__write_file", {"path": "/usr/escaped.txt", "content": "x"})
        assert denied.is_error
        assert not Path("/usr/escaped.txt").exists()


async def test_mcp_server_time_works_unchanged(sandboxed) -> None:
    url, _ = sandboxed
    async with connected(url, "legacy") as client:
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error
        assert json.loads(text(result))["timezone"] == "UTC"


async def test_the_host_network_and_files_are_out_of_reach(sandboxed) -> None:
    url, _ = sandboxed
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        async with connected(url, "auto") as client:
            result = await client.call_tool("unruly__connect", {"host": "127.0.0.1", "port": port})
            assert text(result).startswith("refused"), text(result)
            result = await client.call_tool("unruly__read", {"path": "/etc/shadow"})
            assert text(result).startswith("refused"), text(result)


async def call_until_answered(client, tool: str, arguments: dict) -> str:
    """Calls `tool` until the restarted server answers (the supervisor backs off first)."""
    with anyio.fail_after(30):
        while True:
            try:
                result = await client.call_tool(tool, arguments)
            except MCPError:
                await anyio.sleep(0.2)
                continue
            if not result.is_error:
                return text(result)
            await anyio.sleep(0.2)


async def test_a_server_killed_mid_call_gives_an_error_and_comes_back(sandboxed) -> None:
    url, _ = sandboxed
    async with connected(url, "auto") as client:
        with pytest.raises(MCPError):
            await client.call_tool("unruly__crash", {})
        assert await call_until_answered(client, "unruly__echo", {"text": "back"}) == "back"


async def test_a_memory_hog_and_a_fork_bomb_are_contained_while_others_are_served(sandboxed, tmp_path: Path) -> None:
    url, _ = sandboxed
    async with connected(url, "auto") as victim, connected(url, "legacy") as bystander:
        served: list[str] = []

        async def keep_asking() -> None:
            for _ in range(10):
                result = await bystander.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not result.is_error
                served.append(text(result))
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            group.start_soon(keep_asking)
            with pytest.raises(MCPError):
                await victim.call_tool("unruly__hog", {})
        assert len(served) == 10
        # The audit trail says why the call failed: the sandbox's memory limit.
        [hog] = [r for r in audit_records(tmp_path, "--tool", "unruly__hog") if r["kind"] == "outcome"]
        assert hog["outcome"]["degradation"] == "limit-hit", hog
        assert any(n["detail"].startswith("memory") for n in hog["sandbox"]["notices"]), hog

        assert await call_until_answered(victim, "unruly__echo", {"text": "again"}) == "again"
        result = await victim.call_tool("unruly__fork_bomb", {})
        assert "stopped after" in text(result), text(result)
        forks = int(text(result).split()[2])
        assert forks < 64
        result = await bystander.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error


PER_CALL_POLICY = """
@id("percall-sandboxed")
@sandbox("per-call")
permit(principal, action == Mcp::Action::"tools/call", resource in Mcp::Server::"percall");

@id("everything-else")
permit(principal, action, resource)
unless { action == Mcp::Action::"tools/call" && resource in Mcp::Server::"percall" };
"""


async def test_a_policy_gives_each_call_a_fresh_sandbox(tmp_path: Path, gateway_log) -> None:
    (tmp_path / "policy.cedar").write_text(PER_CALL_POLICY)
    script = _toml_string(UNRULY_SERVER)
    config = write_config(
        tmp_path,
        f"""\
[policy]
file = "policy.cedar"

[servers.warm]
command = {_toml_string(sys.executable)}
args = [{script}]

[servers.percall]
command = {_toml_string(sys.executable)}
args = [{script}]
"""
    )
    with gateway_log("gateway.stderr") as log, serving(config, log) as url:
        async with connected(url, "auto") as client:
            warm = [text(await client.call_tool("warm__count", {})) for _ in range(3)]
            fresh = [text(await client.call_tool("percall__count", {})) for _ in range(3)]
    # The long-lived server counts on; each per-call sandbox is a new process.
    assert warm == ["1", "2", "3"]
    assert fresh == ["1", "1", "1"]


@contextmanager
def importing(tmp_path: Path, gateway_log, servers: dict) -> Iterator[str]:
    """A gateway whose only servers are `servers`, imported unchanged from an `mcpServers` file."""
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": servers}))
    config = write_config(tmp_path, "", top='import_mcp_servers = ["mcp.json"]')
    with gateway_log("gateway.stderr") as log, serving(config, log) as url:
        yield url


async def test_an_unchanged_npx_mcp_servers_entry_runs_in_the_sandbox(tmp_path: Path, gateway_log) -> None:
    # The entry as Claude Desktop or Cursor has it. npx finds the package in the npm cache
    # (scripts/install-test-deps.sh fills it): the sandbox has no network.
    entry = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything@2026.8.31", "stdio"]}
    with importing(tmp_path, gateway_log, {"npx-everything": entry}) as url:
        status = readyz(url)
        assert "npx-everything ready tier=namespaces" in status, status
        async with connected(url, "auto") as client:
            result = await client.call_tool("npx-everything__echo", {"message": "via npx"})
            assert "via npx" in text(result)


async def test_an_unchanged_uvx_mcp_servers_entry_runs_in_the_sandbox(tmp_path: Path, gateway_log) -> None:
    # uvx finds the tool in uv's cache (scripts/install-test-deps.sh fills it) and runs it with
    # no network. `uvx` is named by path only because it is not on this PATH.
    entry = {"command": str(require(TOOLS / "venv" / "bin" / "uvx")), "args": ["mcp-server-time==2026.10.19"]}
    with importing(tmp_path, gateway_log, {"uvx-time": entry}) as url:
        status = readyz(url)
        assert "uvx-time ready tier=namespaces" in status, status
        async with connected(url, "auto") as client:
            result = await client.call_tool("uvx-time__get_current_time", {"timezone": "UTC"})
            assert json.loads(text(result))["timezone"] == "UTC"
