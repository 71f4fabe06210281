"""MCPServer: an MCP server (a stdio process or a streamable-HTTP service) as a tool source.

Invariants:
* At most one live `Connection` per server. It is started on first use (listing, or a call after
  a crash), kept across runs, and replaced only when it is lost: a crashed process is started
  again, a dropped HTTP connection is opened again, on the next use.
* Starting happens under a lock, so concurrent calls after a crash start one process, not many.
* ``tools_version`` moves after ``notifications/tools/list_changed`` and with every new
  connection, so each toolset holding the server lists it again then (and only then).
* ``aclose()`` stops the server and leaves nothing behind (process, pipes, task, HTTP client,
  stderr file); it is shielded and bounded, and the server can be used (started) again after it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Self, TextIO
from urllib.parse import urlsplit

import anyio
import mcp_types as types
from mcp import MCPError, StdioServerParameters, stdio_client
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from ..cancel import checked_duration
from ._connection import Connection, OpenTransport
from ._errors import MCPCallFailed, MCPConnectionLost
from ._listing import MCPTool

__all__ = ["MCPServer"]


class MCPServer:
    """An MCP server whose tools a `Worker` offers to its model: ``Worker(tools=[server])``.

    Make one with `MCPServer.stdio` or `MCPServer.http`. The worker lists its tools when a run
    first needs them, keeps the server across runs, and closes it with the worker (``async with
    worker:`` or ``await worker.aclose()``); ``async with server:`` / ``await server.aclose()``
    work too. Stopping a run tells the server (``notifications/cancelled`` with the reason).
    """

    def __init__(
        self,
        *,
        name: str,
        target: str,
        open_transport: OpenTransport,
        capture_stderr: bool,
        start_timeout: float = 30.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.target = target
        self._open = open_transport
        self._capture_stderr = capture_stderr
        self.start_timeout = checked_duration(start_timeout, "start_timeout") or 30.0
        self.close_timeout = checked_duration(close_timeout, "close_timeout") or 10.0
        self._connection: Connection | None = None
        self._lock = anyio.Lock()
        self._tools_version = 0

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> MCPServer:
        """A server run as a child process speaking MCP on its stdin/stdout.

        ``env`` replaces the SDK's small default environment (None: that default); its stderr
        is captured and quoted when it fails. ``name`` defaults to the command's file name.
        """
        parameters = StdioServerParameters(
            command=command, args=list(args), env=dict(env) if env is not None else None, cwd=cwd
        )

        def open_transport(errlog: TextIO | None) -> AbstractAsyncContextManager[TransportStreams]:
            assert errlog is not None
            return stdio_client(parameters, errlog=errlog)

        return cls(
            name=name or os.path.basename(command) or "mcp",
            target=shlex.join([command, *args]),
            open_transport=open_transport,
            capture_stderr=True,
            start_timeout=start_timeout,
        )

    @classmethod
    def http(
        cls,
        url: str,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        *,
        start_timeout: float = 30.0,
    ) -> MCPServer:
        """A streamable-HTTP MCP endpoint (e.g. ``http://127.0.0.1:8000/mcp``), with ``headers``."""
        fixed_headers = dict(headers or {})

        @asynccontextmanager
        async def open_transport(errlog: TextIO | None) -> AsyncIterator[TransportStreams]:
            async with (
                create_mcp_http_client(headers=fixed_headers) as client,
                streamable_http_client(url, http_client=client) as streams,
            ):
                yield streams

        return cls(
            name=name or urlsplit(url).hostname or "mcp",
            target=url,
            open_transport=open_transport,
            capture_stderr=False,
            start_timeout=start_timeout,
        )

    def __repr__(self) -> str:
        return f"<MCPServer {self.name} ({self.target})>"

    # -- ToolSource ---------------------------------------------------------------------------

    @property
    def tools_version(self) -> int:
        """Moves when the server said its tools changed, and with every new connection."""
        return self._tools_version

    async def list_tools(self) -> list[MCPTool]:
        """The server's tools, starting it if needed; one reconnect if the connection was lost.

        Cancellation: stops waiting (for the start or the answer); the server stays usable.
        """
        for attempt in (1, 2):
            connection = await self.connection()
            session = connection.session
            try:
                if session is None:
                    raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed")
                tools: list[types.Tool] = []
                params: types.PaginatedRequestParams | None = None
                while True:
                    page = await session.list_tools(params=params)
                    tools.extend(page.tools)
                    if not page.next_cursor:
                        break
                    params = types.PaginatedRequestParams(cursor=page.next_cursor)
                return [MCPTool(self, listed) for listed in tools]
            except MCPError as exc:
                if exc.code != types.CONNECTION_CLOSED:
                    await connection.confirm_alive()  # a dropped HTTP session refuses all
                if connection.lost and attempt == 1:
                    continue
                kind = MCPConnectionLost if connection.lost else MCPCallFailed
                raise kind(
                    f"MCP server {self.name!r} ({self.target}) could not list its tools: "
                    f"{exc.message}",
                    server=self.name,
                    stderr=connection.stderr_tail(),
                ) from exc
        raise AssertionError("unreachable")

    # -- the connection -----------------------------------------------------------------------

    async def connection(self) -> Connection:
        """The live connection, started (or started again after it was lost) if needed.

        Raises `MCPStartError`. Cancellation: stops waiting; a start in progress goes on and
        the next caller finds it (``aclose()`` stops it).
        """
        async with self._lock:
            current = self._connection
            if current is None or current.lost:
                if current is not None:
                    await current.close()  # reap what a lost connection left
                current = self._connection = Connection(
                    server=self.name,
                    target=self.target,
                    open_transport=self._open,
                    capture_stderr=self._capture_stderr,
                    start_timeout=self.start_timeout,
                    close_timeout=self.close_timeout,
                    on_tools_changed=self._mark_tools_changed,
                )
                self._tools_version += 1  # a new process may offer other tools
                await current.start()
            else:
                await current.wait_ready()
            return current

    def stderr_tail(self) -> str:
        """The end of what the server wrote to stderr (stdio servers; "" for HTTP)."""
        return self._connection.stderr_tail() if self._connection is not None else ""

    def _mark_tools_changed(self) -> None:
        self._tools_version += 1

    async def aclose(self) -> None:
        """Stop the server; nothing it started is left. Shielded and bounded (``close_timeout``)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
