"""MCP servers as tool sources, whose cancellation reaches the server.

::

    from llm_worker.mcp import MCPServer

    time_server = MCPServer.stdio("mcp-server-time", args=[], name="time")
    docs = MCPServer.http("http://127.0.0.1:8001/mcp", headers={"Authorization": "..."})
    async with Worker(model, tools=[search, time_server, docs]) as worker:
        await worker.run("What time is it in Tokyo?")

One job per module: `_server` (MCPServer: the source, its one connection, listing), `_connection`
(a session held open by its own task: start, loss, stderr, close), `_host` (that task, on asyncio
or trio), `_wire` (which request is whose; the end of the server's side), `_listing` (a listed
tool as a `Tool`: schema as is, names, annotations), `_call` (one call: cancel with the reason,
ping, partial progress), `_content` (results → text and attachments), `_errors`.
Needs the ``mcp`` extra: ``pip install 'llm-worker[mcp]'``.
"""

try:
    import mcp as _mcp  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "llm_worker.mcp needs the official MCP SDK: pip install 'llm-worker[mcp]'"
    ) from exc

from ._errors import MCPCallFailed, MCPConnectionLost, MCPServerError, MCPStartError
from ._listing import MCPTool
from ._server import MCPServer

__all__ = [
    "MCPCallFailed",
    "MCPConnectionLost",
    "MCPServer",
    "MCPServerError",
    "MCPStartError",
    "MCPTool",
]
