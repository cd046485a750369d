"""A remote upstream on the 2024-11-05 HTTP+SSE transport (`type = "sse"`), served by the Python SDK."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest
from mcp.types import TextContent

from conftest import _stop, _toml_string, serving
from support import GATEWAY_BIN, connected, require

pytestmark = pytest.mark.anyio

SSE_SERVER = Path(__file__).parent / "servers" / "legacy_sse_server.py"


@pytest.fixture
def sse_upstream(gateway_log: Callable[[str], TextIO]) -> Iterator[str]:
    with gateway_log("sse-server.stderr") as log:
        process = subprocess.Popen(
            [sys.executable, SSE_SERVER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None
            yield process.stdout.readline().strip()
        finally:
            _stop(process)


@pytest.fixture
def sse_gateway_url(tmp_path: Path, sse_upstream: str, gateway_log: Callable[[str], TextIO]) -> Iterator[str]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""\
[storage]
data_dir = {_toml_string(tmp_path / "data")}

[auth]
anonymous = true

[servers.old]
url = {_toml_string(sse_upstream)}
type = "sse"
"""
    )
    require(GATEWAY_BIN)
    with gateway_log("gateway.stderr") as log, serving(config, log) as url:
        yield url


async def test_lists_and_calls_the_tools_of_an_sse_server(sse_gateway_url: str, client_mode: str) -> None:
    async with connected(sse_gateway_url, client_mode) as client:
        tools = await client.list_tools()
        assert [tool.name for tool in tools.tools] == ["old__shout"]
        result = await client.call_tool("old__shout", {"text": "quiet"})

    assert not result.is_error
    assert isinstance(result.content[0], TextContent)
    assert result.content[0].text == "QUIET"
