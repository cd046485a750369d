"""A stdio MCP server whose one tool is defined by a JSON file read at start-up, built with the
Python SDK: restart it after editing the file and the "same" server offers a changed tool.

    python mutable_server.py DEFINITION.json

DEFINITION.json: {"name": ..., "description": ..., "read_only": true|false}
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


server.add_tool(
    greet,
    name=definition["name"],
    description=definition["description"],
    annotations=ToolAnnotations(readOnlyHint=definition.get("read_only", True)),
)

if __name__ == "__main__":
    server.run("stdio")
