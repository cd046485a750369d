"""Sampling and elicitation asked by a legacy-era upstream (server-everything) in the middle of a call.

A legacy client (`legacy`) gets ordinary server-to-client requests inside its call. A 2026-07-28
client (`auto`) cannot receive those, so the gateway answers it with an input-required result,
keeps the upstream call waiting, and resumes it when the client retries with its answer. The
Python SDK drives those rounds through the same callbacks either way, so both modes must end with
the upstream having received the client's answer.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CreateMessageResult, ElicitResult, TextContent

from support import HANG_GUARD_SECS, NEGOTIATED_VERSION

pytestmark = pytest.mark.anyio


async def sample(context: Any, params: Any) -> CreateMessageResult:
    prompt = params.messages[0].content.text
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=f"sampled answer to: {prompt}"),
        model="test-model",
        stop_reason="endTurn",
    )


async def elicit(context: Any, params: Any) -> ElicitResult:
    assert "name" in params.requested_schema["properties"]
    return ElicitResult(action="accept", content={"name": "Ada Lovelace"})


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_sampling_reaches_the_client_that_made_the_call(gateway_url: str, client_mode: str) -> None:
    with anyio.fail_after(HANG_GUARD_SECS):
        async with Client(gateway_url, mode=client_mode, sampling_callback=sample) as client:
            assert client.protocol_version == NEGOTIATED_VERSION[client_mode]
            result = await client.call_tool("everything__trigger-sampling-request", {"prompt": "two plus two"})

    assert not result.is_error, result
    assert "sampled answer to: Resource trigger-sampling-request context: two plus two" in text(result)


async def test_elicitation_reaches_the_client_that_made_the_call(gateway_url: str, client_mode: str) -> None:
    with anyio.fail_after(HANG_GUARD_SECS):
        async with Client(gateway_url, mode=client_mode, elicitation_callback=elicit) as client:
            result = await client.call_tool("everything__trigger-elicitation-request", {})

    assert not result.is_error, result
    assert "User provided the requested information" in text(result)
    assert "Ada Lovelace" in text(result)


async def test_sampling_is_not_asked_of_a_legacy_client_that_did_not_declare_it(gateway_url: str) -> None:
    """A client that declared no sampling capability is never sent `sampling/createMessage`: the
    gateway refuses the upstream's request itself, and the call ends at once instead of waiting
    for an answer that a client which ignores the request never sends."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}

    def messages(body: str) -> list[dict[str, Any]]:
        lines = [line.removeprefix("data:").strip() for line in body.splitlines() if line.startswith("data:")]
        return [json.loads(line) for line in lines if line]

    with anyio.fail_after(HANG_GUARD_SECS):
        async with create_mcp_http_client() as http:
            opened = await http.post(
                gateway_url,
                headers=headers,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "no-sampling", "version": "1"},
                    },
                },
            )
            assert opened.status_code == 200, opened.text
            headers["mcp-session-id"] = opened.headers["mcp-session-id"]
            headers["mcp-protocol-version"] = "2025-11-25"
            await http.post(gateway_url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            called = await http.post(
                gateway_url,
                headers=headers,
                json={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "everything__trigger-sampling-request", "arguments": {"prompt": "hi"}},
                },
            )

    sent = messages(called.text)
    assert not [m for m in sent if m.get("method") == "sampling/createMessage"], sent
    answer = [m for m in sent if m.get("id") == 2]
    assert answer, sent
    assert "error" in answer[0] or answer[0]["result"].get("isError"), answer[0]
