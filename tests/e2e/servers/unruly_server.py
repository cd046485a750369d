"""A stdio MCP server, built with the Python SDK, whose tools misbehave on purpose: the sandbox
end-to-end tests call them to show that the gateway contains each one and keeps serving.

    python unruly_server.py
"""

from __future__ import annotations

import os
import signal
import socket
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("unruly")


def echo(text: str) -> str:
    return text


calls = 0


def count() -> int:
    """How many times this process was called: 1 every time in a per-call sandbox."""
    global calls
    calls += 1
    return calls


def crash() -> str:
    """Dies by SIGKILL in the middle of the call."""
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def hog() -> str:
    """Allocates memory until something stops it."""
    chunks = []
    while True:
        chunks.append(bytearray(8 << 20))


def fork_bomb() -> str:
    """Forks until something stops it; reports how far it got."""
    forks = 0
    try:
        while forks < 100_000:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            forks += 1
    except OSError as error:
        return f"stopped after {forks} forks: {error}"
    return f"{forks} forks"


def connect(host: str, port: int) -> str:
    """Tries a TCP connection to the host."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as error:
        return f"refused: {error}"
    return "connected"


def read(path: str) -> str:
    """Reads a file of the host."""
    try:
        with open(path) as file:
            return file.read()
    except OSError as error:
        return f"refused: {error}"


for tool in (echo, count, crash, hog, fork_bomb, connect, read):
    server.add_tool(tool)

if __name__ == "__main__":
    server.run("stdio")
