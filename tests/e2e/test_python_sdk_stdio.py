"""The Python MCP SDK launching `mcp-gateway stdio` as its server command.

A stdio client starts the gateway itself and talks to it as soon as the handshake is done, so
these tests also check that the gateway is ready to serve its upstreams' tools by then.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pytest
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from support import GATEWAY_BIN, all_pages, connected

pytestmark = pytest.mark.anyio


async def test_lists_and_calls_tools_over_stdio(
    gateway_config: Path, gateway_log: Callable[[str], TextIO], client_mode: str
) -> None:
    server = StdioServerParameters(
        command=str(GATEWAY_BIN),
        args=["stdio", "--config", str(gateway_config)],
        env={"NO_COLOR": "1"},
    )
    with gateway_log("gateway-stdio.stderr") as log:
        async with connected(stdio_client(server, errlog=log), client_mode) as client:
            tools = await all_pages(lambda cursor: client.list_tools(cursor=cursor), "tools")
            # Checked before the calls, whose failure would hide an empty listing.
            assert {"everything__echo", "time__get_current_time"} <= {tool.name for tool in tools}
            echo = await client.call_tool("everything__echo", {"message": "over stdio"})
            now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    assert not echo.is_error
    assert echo.content == [TextContent(type="text", text="Echo: over stdio")]
    assert not now.is_error
    assert now.structured_content is not None
    assert now.structured_content["timezone"] == "UTC"
