"""A stdio MCP server, built with the Python SDK, that writes down every call it receives:
the end-to-end tests read its file to prove that a refused call never reached an upstream.

    python notes_server.py NOTES_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

notes = Path(sys.argv[1])
server = MCPServer("notes")


def write_note(text: str) -> str:
    with notes.open("a") as file:
        file.write(f"write_note {text}\n")
    return "written"


def read_notes() -> str:
    with notes.open("a") as file:
        file.write("read_notes\n")
    return notes.read_text()


server.add_tool(write_note, annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
server.add_tool(read_notes, annotations=ToolAnnotations(readOnlyHint=True))

if __name__ == "__main__":
    server.run("stdio")
