"""The MCP server the MCP benchmark calls (stdio, or streamable HTTP with ``--http PORT``).

``echo`` answers at once; ``count`` reports progress every 5 ms until cancelled. The moment a
``notifications/cancelled`` arrives is appended (``time.monotonic()``: one clock for every
process on the machine) to the file named by ``MCP_BENCH_LOG``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

LOG = os.environ.get("MCP_BENCH_LOG")
_dispatch_notification = JSONRPCDispatcher._dispatch_notification


def _stamp(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
    if message.method == "notifications/cancelled" and LOG:
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(f"{time.monotonic()} {message.params}\n")
    return _dispatch_notification(self, message, *args, **kwargs)


JSONRPCDispatcher._dispatch_notification = _stamp  # type: ignore[method-assign]
app = MCPServer("bench")


@app.tool()
async def echo(text: str) -> str:
    """Return the text."""
    return text


@app.tool()
async def count(ctx: Context) -> str:
    """Report progress every 5 ms, for a long time."""
    for step in range(1, 100_000):
        await ctx.report_progress(step, None, f"counted {step}")
        await anyio.sleep(0.005)
    return "done"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
