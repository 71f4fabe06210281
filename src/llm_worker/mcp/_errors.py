"""What can go wrong with an MCP server, as `LLMWorkerError`s that name the server.

Invariant: every message says which server (its name and its command or URL), and a stdio
server's captured stderr is attached (``stderr``) and quoted at the end, so the reason a server
failed is never lost in its own process.
"""

from __future__ import annotations

from .._error_base import LLMWorkerError

__all__ = ["MCPCallFailed", "MCPConnectionLost", "MCPServerError", "MCPStartError"]


class MCPServerError(LLMWorkerError, RuntimeError):
    """An MCP server failed; ``server`` names it, ``stderr`` is what it wrote (stdio)."""

    def __init__(self, message: str, *, server: str, stderr: str = "") -> None:
        tail = f"\n--- its stderr (last lines) ---\n{stderr.rstrip()}" if stderr.strip() else ""
        super().__init__(f"{message}{tail}")
        self.server = server
        self.stderr = stderr


class MCPStartError(MCPServerError):
    """The server could not be started or connected to (bad command, early exit, handshake)."""


class MCPConnectionLost(MCPServerError):
    """The server went away (a crash, a dropped connection); it is restarted on the next use."""


class MCPCallFailed(MCPServerError):
    """The server refused a request with a protocol error (unknown tool, bad parameters)."""
