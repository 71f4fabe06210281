"""An MCP server the tests run (stdio, or streamable HTTP with ``--http PORT``), built on the SDK.

Every notification it receives is appended, as one JSON line, to the file named by
``MCP_PROBE_LOG`` (if set), so a test can see the ``notifications/cancelled`` it was sent and
its reason. ``MCP_PROBE_START_DELAY`` and ``MCP_PROBE_LIST_DELAY`` (seconds) delay the start
and each listing. The ``hang`` tool makes the server deaf: it then reads and ignores everything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

LOG = os.environ.get("MCP_PROBE_LOG")


def _record(event: dict[str, Any]) -> None:
    if LOG:
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(event) + "\n")


_dispatch = JSONRPCDispatcher._dispatch
_deaf = False  # set by ``hang``: from then on the server reads its input and ignores all of it


async def _recording_dispatch(self: Any, item: Any, *args: Any, **kwargs: Any) -> None:
    message = getattr(item, "message", None)
    if isinstance(message, types.JSONRPCNotification):
        _record({"notification": message.method, "params": message.params, "ignored": _deaf})
    if not _deaf:
        await _dispatch(self, item, *args, **kwargs)


JSONRPCDispatcher._dispatch = _recording_dispatch  # type: ignore[method-assign]

app = MCPServer("probe")

if list_delay := float(os.environ.get("MCP_PROBE_LIST_DELAY", "0")):
    _list_tools = MCPServer.list_tools

    async def _slow_list_tools(self: Any) -> Any:
        await anyio.sleep(list_delay)
        return await _list_tools(self)

    MCPServer.list_tools = _slow_list_tools  # type: ignore[method-assign]


@app.tool()
async def echo(text: str) -> str:
    """Return the text as it came."""
    return text


@app.tool(annotations=types.ToolAnnotations(destructive_hint=True))
async def count(steps: int, ctx: Context, delay: float = 0.05) -> str:
    """Count slowly, reporting progress; stops when cancelled."""
    try:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"counted {step}")
            await anyio.sleep(delay)
    except anyio.get_cancelled_exc_class():
        _record({"tool": "count", "stopped_at": step})
        raise
    return f"counted to {steps}"


@app.tool(annotations=types.ToolAnnotations(read_only_hint=True))
async def hang(ctx: Context, seconds: float = 30.0) -> str:
    """Report once, then ignore everything: cancels, pings, every request (a wedged server)."""
    global _deaf
    await ctx.report_progress(1, None, "about to hang")
    _deaf = seconds > 0
    with anyio.CancelScope(shield=True):
        await anyio.sleep(seconds)
    _deaf = False
    return "woke up"


@app.tool()
async def crash(ctx: Context) -> str:
    """Report once, then die."""
    await ctx.report_progress(1, None, "about to crash")
    print("probe: crashing on purpose", file=sys.stderr, flush=True)
    await anyio.sleep(0.05)
    os._exit(3)


@app.tool()
async def picture() -> types.CallToolResult:
    """Return text, an image and an embedded resource."""
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text="a red dot"),
            types.ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png"),
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(
                    uri="file:///notes.txt", mime_type="text/plain", text="the notes"
                ),
            ),
        ]
    )


@app.tool()
async def refuse() -> types.CallToolResult:
    """An error result the model should see."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text="no such city")], is_error=True
    )


def main() -> None:
    time.sleep(float(os.environ.get("MCP_PROBE_START_DELAY", "0")))
    _record({"started": os.getpid()})
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()


if __name__ == "__main__":
    main()
