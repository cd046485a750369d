"""A 2024-11-05 HTTP+SSE MCP server, built with the Python SDK, for the gateway's SSE upstream test.

It binds 127.0.0.1 on a port the kernel picks before it serves, prints its SSE URL as the first
line on stdout, and serves until killed.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("legacy-sse")


@server.tool()
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


async def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = server.sse_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning")
    print(f"http://127.0.0.1:{port}/sse", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(main())
