"""The Python MCP SDK (`mcp` 2.x) through the gateway's Streamable HTTP front door.

Every test runs in both of the SDK's client modes (`client_mode`): `auto`, which negotiates the
2026-07-28 era through `server/discover`, and `legacy`, which uses `initialize` and a session.
The upstreams are third-party servers, so a test here fails when the gateway mistranslates
something one of those servers or the SDK actually does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
import pytest
from mcp import MCPError
from mcp.types import INVALID_PARAMS, TextContent, TextResourceContents

from support import all_pages, connected

pytestmark = pytest.mark.anyio

DOCUMENT_URI = "demo://resource/static/document/architecture.md"


def text_of(content: list[Any]) -> str:
    assert len(content) == 1, content
    assert isinstance(content[0], TextContent), content
    return content[0].text


async def test_lists_the_tools_of_both_servers_prefixed(gateway_url: str, client_mode: str) -> None:
    async with connected(gateway_url, client_mode) as client:
        tools = await all_pages(lambda cursor: client.list_tools(cursor=cursor), "tools")

    names = {tool.name for tool in tools}
    assert {"time__get_current_time", "time__convert_time"} <= names
    assert {"everything__echo", "everything__get-sum", "everything__trigger-long-running-operation"} <= names
    assert all(name.startswith(("everything__", "time__")) for name in names), names
    echo = next(tool for tool in tools if tool.name == "everything__echo")
    assert echo.input_schema["required"] == ["message"]


async def test_calls_a_tool_of_the_time_server(gateway_url: str, client_mode: str) -> None:
    async with connected(gateway_url, client_mode) as client:
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["timezone"] == "UTC"
    assert datetime.fromisoformat(result.structured_content["datetime"]).utcoffset().total_seconds() == 0


async def test_calls_tools_of_the_everything_server(gateway_url: str, client_mode: str) -> None:
    async with connected(gateway_url, client_mode) as client:
        echo = await client.call_tool("everything__echo", {"message": "through the gateway"})
        total = await client.call_tool("everything__get-sum", {"a": 2, "b": 3})

    assert not echo.is_error
    assert text_of(echo.content) == "Echo: through the gateway"
    assert not total.is_error
    assert text_of(total.content) == "The sum of 2 and 3 is 5."


async def test_reads_a_resource_through_its_rewritten_uri(gateway_url: str, client_mode: str) -> None:
    uri = f"everything+{DOCUMENT_URI}"
    async with connected(gateway_url, client_mode) as client:
        resources = await all_pages(lambda cursor: client.list_resources(cursor=cursor), "resources")
        read = await client.read_resource(uri)

    uris = {str(resource.uri) for resource in resources}
    assert uri in uris
    assert all(u.startswith("everything+") for u in uris), uris
    assert len(read.contents) == 1
    document = read.contents[0]
    assert isinstance(document, TextResourceContents)
    assert str(document.uri) == uri
    assert document.mime_type == "text/markdown"
    assert document.text.startswith("# Everything Server")


async def test_gets_prompts_of_the_everything_server(gateway_url: str, client_mode: str) -> None:
    async with connected(gateway_url, client_mode) as client:
        prompts = await all_pages(lambda cursor: client.list_prompts(cursor=cursor), "prompts")
        simple = await client.get_prompt("everything__simple-prompt")
        with_args = await client.get_prompt("everything__args-prompt", {"city": "Paris", "state": "Texas"})

    assert {"everything__simple-prompt", "everything__args-prompt"} <= {prompt.name for prompt in prompts}
    assert [m.content.text for m in simple.messages] == ["This is a simple prompt without arguments."]
    assert [m.content.text for m in with_args.messages] == ["What's weather in Paris, Texas?"]


async def test_relays_every_progress_notification(gateway_url: str, client_mode: str) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with connected(gateway_url, client_mode) as client:
        result = await client.call_tool(
            "everything__trigger-long-running-operation",
            {"duration": 1, "steps": 4},
            progress_callback=on_progress,
        )

    assert text_of(result.content) == "Long running operation completed. Duration: 1 seconds, Steps: 4."
    # server-everything sends one notification per step, the last one just before its result.
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


async def test_a_cancelled_call_leaves_the_session_usable(gateway_url: str, client_mode: str) -> None:
    first_progress = anyio.Event()
    finished = False

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        first_progress.set()

    async with connected(gateway_url, client_mode) as client:

        async def long_call() -> None:
            nonlocal finished
            # Ten minutes, one step a second: it only ends by being cancelled.
            await client.call_tool(
                "everything__trigger-long-running-operation",
                {"duration": 600, "steps": 600},
                progress_callback=on_progress,
            )
            finished = True

        async with anyio.create_task_group() as group:
            group.start_soon(long_call)
            # Cancel once the call is known to be running upstream.
            await first_progress.wait()
            group.cancel_scope.cancel()

        assert not finished
        # The time server, so this checks the session and not the everything server's results.
        after = await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    assert not after.is_error
    assert after.structured_content is not None
    assert after.structured_content["timezone"] == "UTC"


@pytest.mark.parametrize("name", ["nosuchserver__echo", "everything__no-such-tool", "echo"])
async def test_an_unknown_tool_is_an_error(gateway_url: str, client_mode: str, name: str) -> None:
    async with connected(gateway_url, client_mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool(name, {"message": "hello"})
        # The session outlives the error.
        after = await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    assert raised.value.code == INVALID_PARAMS
    assert name in raised.value.message
    assert not after.is_error
