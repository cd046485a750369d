"""Identity, policy, rate limits and argument validation, end to end: the Python SDK as the
client, with API keys made by `mcp-gateway clients create`, through the real gateway binary to
third-party upstreams (server-everything) and a Python SDK server that records its calls.

Every test runs in both of the SDK's client modes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import INVALID_PARAMS

from conftest import _toml_string, serving
from support import EVERYTHING, GATEWAY_BIN, HANG_GUARD_SECS, NODE, all_pages, require

pytestmark = pytest.mark.anyio

NOTES_SERVER = Path(__file__).parent / "servers" / "notes_server.py"
RATE_LIMITED = -32029

POLICY = """
@id("ops-everything")
permit(principal in Mcp::Group::"ops", action, resource);

@id("dev-reads")
permit(principal in Mcp::Group::"dev", action in Mcp::Action::"tools", resource is Mcp::Tool)
when { resource has readOnlyHint && resource.readOnlyHint };

@id("dev-sums")
permit(principal in Mcp::Group::"dev", action in Mcp::Action::"tools", resource == Mcp::Tool::"everything__get-sum");
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "policy.cedar").write_text(POLICY)
    notes_dir = tmp_path / "notes"
    notes_dir.mkdir(exist_ok=True)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""\
[storage]
data_dir = {_toml_string(tmp_path / "data")}

[auth]

[policy]
file = "policy.cedar"

{extra}

[servers.everything]
command = {_toml_string(require(NODE))}
args = [{_toml_string(require(EVERYTHING))}, "stdio"]

[servers.notes]
command = {_toml_string(sys.executable)}
args = [{_toml_string(NOTES_SERVER)}, {_toml_string(notes_dir / "notes.txt")}]
# The notes file is in the server's working directory: the one host directory its sandbox
# may write.
cwd = {_toml_string(notes_dir)}
"""
    )
    return config


def create_key(config: Path, client: str, *groups: str) -> str:
    """An API key made the way an operator makes one."""
    args = [GATEWAY_BIN, "clients", "create", client, "--config", config, "--json"]
    for group in groups:
        args += ["--group", group]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=HANG_GUARD_SECS)
    return json.loads(out.stdout)["key"]


@asynccontextmanager
async def client_with_key(url: str, key: str, mode: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    with anyio.fail_after(HANG_GUARD_SECS):
        async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


@pytest.fixture
def access_gateway(tmp_path: Path, gateway_log) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A gateway with the policy above and keys for alice (ops), bob (dev) and carol (none)."""
    config = write_config(tmp_path)
    keys = {
        "alice": create_key(config, "alice", "ops"),
        "bob": create_key(config, "bob", "dev"),
        "carol": create_key(config, "carol"),
    }
    with gateway_log("gateway.stderr") as log, serving(config, log) as url:
        yield url, tmp_path, keys


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in await all_pages(lambda cursor: client.list_tools(cursor=cursor), "tools")}


async def test_two_keys_in_different_groups_see_different_tools(access_gateway, client_mode: str) -> None:
    url, _, keys = access_gateway
    async with client_with_key(url, keys["alice"], client_mode) as alice:
        everything = await tool_names(alice)
    async with client_with_key(url, keys["bob"], client_mode) as bob:
        reads = await tool_names(bob)
    async with client_with_key(url, keys["carol"], client_mode) as carol:
        nothing = await tool_names(carol)

    assert {"notes__write_note", "notes__read_notes", "everything__get-sum"} <= everything
    assert {"notes__read_notes", "everything__get-sum"} <= reads
    assert "notes__write_note" not in reads
    assert reads < everything
    assert nothing == set()


async def test_a_denied_call_never_reaches_the_upstream(access_gateway, client_mode: str) -> None:
    url, tmp_path, keys = access_gateway
    notes = tmp_path / "notes" / "notes.txt"
    async with client_with_key(url, keys["bob"], client_mode) as bob:
        with pytest.raises(MCPError) as denied:
            await bob.call_tool("notes__write_note", {"text": "from bob"})
        with pytest.raises(MCPError) as missing:
            await bob.call_tool("notes__no_such_tool", {})
    # Refused exactly as a tool that does not exist would be.
    assert denied.value.error.code == missing.value.error.code
    assert "from bob" not in (notes.read_text() if notes.exists() else "")

    async with client_with_key(url, keys["alice"], client_mode) as alice:
        result = await alice.call_tool("notes__write_note", {"text": "from alice"})
    assert not result.is_error
    assert notes.read_text().splitlines() == ["write_note from alice"]


async def test_bad_arguments_are_refused_with_the_path(access_gateway, client_mode: str) -> None:
    url, _, keys = access_gateway
    async with client_with_key(url, keys["bob"], client_mode) as bob:
        ok = await bob.call_tool("everything__get-sum", {"a": 2, "b": 3})
        assert not ok.is_error
        with pytest.raises(MCPError) as refused:
            await bob.call_tool("everything__get-sum", {"a": "two", "b": 3})
    error = refused.value.error
    assert error.code == INVALID_PARAMS
    assert error.data["path"] == "/a"
    assert error.data["rule"] == "type"
    assert "/a" in error.message


async def test_the_call_past_the_limit_is_refused_with_a_retry_after(
    tmp_path: Path, gateway_log, client_mode: str
) -> None:
    config = write_config(
        tmp_path,
        '[[limits.rules]]\nscope = "client"\nmethods = ["tools/call"]\nrequests = 3\nper_secs = 3600\n',
    )
    alice = create_key(config, "alice", "ops")
    bob = create_key(config, "bob", "ops")
    with gateway_log("gateway.stderr") as log, serving(config, log) as url:
        async with client_with_key(url, alice, client_mode) as client:
            for n in range(3):
                await client.call_tool("everything__get-sum", {"a": n, "b": 1})
            with pytest.raises(MCPError) as refused:
                await client.call_tool("everything__get-sum", {"a": 9, "b": 1})
        async with client_with_key(url, bob, client_mode) as other:
            assert not (await other.call_tool("everything__get-sum", {"a": 1, "b": 1})).is_error
    error = refused.value.error
    assert error.code == RATE_LIMITED
    assert error.data["retryAfterSecs"] > 0
    assert error.data["scope"] == "client"


async def test_a_redis_backed_limit_holds_across_two_gateways(
    tmp_path: Path, gateway_log, client_mode: str
) -> None:
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("TEST_REDIS_URL is not set")
    limits = (
        f'[limits]\nbackend = "redis"\nredis_url = {_toml_string(redis_url)}\n'
        f'redis_prefix = "e2e-{uuid.uuid4()}"\n'
        '[[limits.rules]]\nscope = "global"\nmethods = ["tools/call"]\nrequests = 4\nper_secs = 3600\n'
    )
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first, second = write_config(first_dir, limits), write_config(second_dir, limits)
    key_a, key_b = create_key(first, "alice", "ops"), create_key(second, "alice", "ops")
    with ExitStack() as stack:
        url_a = stack.enter_context(serving(first, stack.enter_context(gateway_log("a.stderr"))))
        url_b = stack.enter_context(serving(second, stack.enter_context(gateway_log("b.stderr"))))
        async with client_with_key(url_a, key_a, client_mode) as a, client_with_key(url_b, key_b, client_mode) as b:
            for client in (a, b, a, b):
                assert not (await client.call_tool("everything__get-sum", {"a": 1, "b": 2})).is_error
            for client in (a, b):
                with pytest.raises(MCPError) as refused:
                    await client.call_tool("everything__get-sum", {"a": 1, "b": 2})
                assert refused.value.error.code == RATE_LIMITED
                assert refused.value.error.data["retryAfterSecs"] > 0


async def test_calls_and_reads_are_in_the_audit_trail(access_gateway, client_mode: str) -> None:
    url, tmp_path, keys = access_gateway
    uri = "everything+demo://resource/static/document/architecture.md"
    async with client_with_key(url, keys["alice"], client_mode) as alice:
        await alice.read_resource(uri)
        await alice.call_tool("everything__get-sum", {"a": 1, "b": 2})
    async with client_with_key(url, keys["bob"], client_mode) as bob:
        with pytest.raises(MCPError):
            await bob.call_tool("notes__write_note", {"text": "no"})
    config = tmp_path / "gateway.toml"
    out = subprocess.run(
        [GATEWAY_BIN, "audit", "export", "--config", config],
        check=True, capture_output=True, text=True, timeout=HANG_GUARD_SECS,
    )
    records = [json.loads(line)["record"] for line in out.stdout.splitlines()]
    outcomes = [r for r in records if r["kind"] == "outcome"]
    assert any(r["method"] == "resources/read" and r["resource"] == uri and r["outcome"]["status"] == "success" for r in outcomes)
    assert any(r["method"] == "tools/call" and r["tool"] == "everything__get-sum" for r in outcomes)
    denied = [r for r in records if r["kind"] == "decision" and r["decision"] == "deny"]
    assert any(r["client"] == "bob" and r["tool"] == "notes__write_note" for r in denied)
    verify = subprocess.run([GATEWAY_BIN, "audit", "verify", "--config", config], capture_output=True, text=True, timeout=HANG_GUARD_SECS)
    assert verify.returncode == 0, verify.stdout + verify.stderr
