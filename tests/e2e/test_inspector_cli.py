"""The MCP Inspector's command-line client through the gateway, over HTTP and over stdio.

Each test runs the Inspector once, as a script would: `--format json` prints one JSON object,
`{"result": ...}` on success.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support import GATEWAY_BIN, HANG_GUARD_SECS, INSPECTOR, NODE, require

# The Inspector's `--protocol-era`: "legacy" (its default for an ad-hoc server) uses
# `initialize`; "auto" negotiates the 2026-07-28 era when the server offers it.
ERAS = ["legacy", "auto"]


def inspect(tmp_path: Path, *args: str) -> Any:
    """Runs the Inspector CLI with `args` and returns the `result` of its JSON output."""
    # The Inspector keeps a catalog and client settings under $HOME; give it a fresh one.
    home = tmp_path / "inspector-home"
    home.mkdir(exist_ok=True)
    done = subprocess.run(
        [require(NODE), require(INSPECTOR), "--cli", "--format", "json", *args],
        capture_output=True,
        text=True,
        env={"HOME": str(home), "PATH": str(Path(NODE).parent), "NO_COLOR": "1"},
        timeout=HANG_GUARD_SECS,
    )
    assert done.returncode == 0, f"exit code {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return json.loads(done.stdout)["result"]


def stdio_target(gateway_config: Path) -> list[str]:
    # `-e` sets the gateway's environment (plain log lines in the Inspector's stderr). The
    # command comes after `--`, so that the gateway's own `--config` is not read as the Inspector's.
    return ["-e", "NO_COLOR=1", "--", str(GATEWAY_BIN), "stdio", "--config", str(gateway_config)]


@pytest.mark.parametrize("era", ERAS)
def test_lists_tools_over_http(gateway_url: str, tmp_path: Path, era: str) -> None:
    result = inspect(tmp_path, gateway_url, "--transport", "http", "--protocol-era", era, "--method", "tools/list")

    names = {tool["name"] for tool in result["tools"]}
    assert {"everything__echo", "everything__get-sum", "time__get_current_time", "time__convert_time"} <= names


@pytest.mark.parametrize("era", ERAS)
def test_calls_tools_over_http(gateway_url: str, tmp_path: Path, era: str) -> None:
    http = [gateway_url, "--transport", "http", "--protocol-era", era, "--method", "tools/call"]

    now = inspect(tmp_path, *http, "--tool-name", "time__get_current_time", "--tool-arg", "timezone=UTC")
    total = inspect(tmp_path, *http, "--tool-name", "everything__get-sum", "--tool-arg", "a=2", "b=3")

    assert now["isError"] is False
    assert now["structuredContent"]["timezone"] == "UTC"
    assert total["content"] == [{"type": "text", "text": "The sum of 2 and 3 is 5."}]


def test_lists_tools_over_stdio(gateway_config: Path, tmp_path: Path) -> None:
    result = inspect(tmp_path, "--method", "tools/list", *stdio_target(gateway_config))

    names = {tool["name"] for tool in result["tools"]}
    assert {"everything__echo", "time__get_current_time"} <= names


def test_calls_a_tool_over_stdio(gateway_config: Path, tmp_path: Path) -> None:
    result = inspect(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "everything__echo",
        "--tool-arg",
        "message=over stdio",
        *stdio_target(gateway_config),
    )

    assert result["content"] == [{"type": "text", "text": "Echo: over stdio"}]
