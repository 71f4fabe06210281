"""A small MCP server for examples/mcp_stop.py, written with the official SDK (``mcp``).

``count`` counts slowly and reports each step as progress; when the client cancels the call it
stops, and says on its stderr which reason it was given.
"""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

app = MCPServer("counter")


@app.tool()
async def count(limit: int, ctx: Context) -> str:
    """Count to `limit`, one step every 0.1 s, reporting each step."""
    for step in range(1, limit + 1):
        await ctx.report_progress(step, limit, f"counted {step}")
        await anyio.sleep(0.1)
    return f"counted to {limit}"


_dispatch_notification = JSONRPCDispatcher._dispatch_notification


def _say_why(self: JSONRPCDispatcher, message, *args, **kwargs):  # type: ignore[no-untyped-def]
    if message.method == "notifications/cancelled":
        print(f"counter: asked to stop: {message.params['reason']}", file=sys.stderr, flush=True)
    return _dispatch_notification(self, message, *args, **kwargs)


JSONRPCDispatcher._dispatch_notification = _say_why  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run()
