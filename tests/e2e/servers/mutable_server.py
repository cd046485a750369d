"""A stdio MCP server whose one tool is defined by a JSON file read at start-up, built with the
Python SDK: restart it after editing the file and the "same" server offers a changed tool.

    python mutable_server.py DEFINITION.json

DEFINITION.json: {"name": ..., "description": ..., "read_only": true|false,
                  "polite": true|false, "signature": "..."}

`polite` adds an optional `title` parameter (a changed input schema); `signature`, when given,
is served in the tool's `_meta` under `io.schemapin/signature`.
"""

from __future__ import annotations

import json
import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

definition = json.load(open(sys.argv[1]))
server = MCPServer("mutable")


def greet(who: str) -> str:
    return f"hello, {who}"


def greet_politely(who: str, title: str = "") -> str:
    return f"hello, {title + ' ' if title else ''}{who}"


signature = definition.get("signature")
server.add_tool(
    greet_politely if definition.get("polite") else greet,
    name=definition["name"],
    description=definition["description"],
    annotations=ToolAnnotations(readOnlyHint=definition.get("read_only", True)),
    meta={"io.schemapin/signature": signature} if signature else None,
)

if __name__ == "__main__":
    server.run("stdio")
