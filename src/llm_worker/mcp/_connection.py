"""One live session with an MCP server, held open by a task of its own.

Invariants:
* The SDK's transport and `ClientSession` are entered and left in one task, the host task
  (`spawn_host_task`): it opens the transport, initialises the session, and then only waits.
  Callers in any task of the same loop use ``session``; they never enter or leave anything.
* Starting is bounded (``start_timeout``) and a caller that stops waiting for it (its run was
  cancelled) leaves the host going: the next use finds the server ready, ``close()`` stops it.
* The connection is ``lost`` — and its host winds down at once — when the server's side ends
  (the process exited, the transport failed), or when a request was refused and a ping is
  refused too (an HTTP service that dropped our session); a lost connection is never reused.
* ``close()`` is shielded and bounded (``close_timeout``): when it returns the host task has
  ended, so the process is reaped, the pipes, the HTTP client and the stderr file are closed —
  or the bound was hit, which is logged.
* A stdio server's stderr goes to a temporary file, not to our terminal; its tail is quoted in
  every error about that server (``stderr_tail``), also after the connection ended.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TextIO

import anyio
import mcp_types as types
from mcp import ClientSession, MCPError
from mcp.client._transport import TransportStreams

from ..cancel import shielded
from ._errors import MCPStartError
from ._host import spawn_host_task
from ._wire import WatchedReadStream, WatchedWriteStream

__all__ = ["Connection", "OpenTransport"]

logger = logging.getLogger("llm_worker.mcp")

OpenTransport = Callable[["TextIO | None"], AbstractAsyncContextManager[TransportStreams]]
_STDERR_TAIL = 4000
_PING_BOUND = 5.0  # a live server answers a ping at once


class Connection:
    """A session with one server: ``start()`` it, use ``session``, ``close()`` it once."""

    def __init__(
        self,
        *,
        server: str,
        target: str,
        open_transport: OpenTransport,
        capture_stderr: bool,
        start_timeout: float,
        close_timeout: float,
        on_tools_changed: Callable[[], None],
    ) -> None:
        self.server = server
        self.target = target  # the command line or the URL, for messages
        self.session: ClientSession | None = None
        self.lost = False
        self._open = open_transport
        self._start_timeout = start_timeout
        self._close_timeout = close_timeout
        self._on_tools_changed = on_tools_changed
        self._stderr: TextIO | None = (
            tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            if capture_stderr
            else None
        )
        self._stderr_final = ""
        self._life: anyio.CancelScope | None = None
        self._closing = False
        self._started = False
        self._ready = anyio.Event()
        self._done = anyio.Event()
        self._error: BaseException | None = None

    # -- starting ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the host task and wait until the session is initialised.

        Raises `MCPStartError` (naming the command or URL, quoting stderr) if it cannot be.
        Cancellation: stops waiting; the host goes on starting (``close()`` stops it).
        """
        self._started = True
        spawn_host_task(self._host, name=f"MCP server {self.server}")
        await self.wait_ready()

    async def wait_ready(self) -> None:
        """Wait for the start to end; raise its error. Cancellation: stops waiting only."""
        await self._ready.wait()
        if self._error is not None:
            raise self._error

    async def _host(self) -> None:
        deadline = anyio.current_time() + self._start_timeout
        try:
            with anyio.CancelScope(deadline=deadline) as life:
                self._life = life
                if self._closing:
                    life.cancel()
                async with self._open(self._stderr) as (read, write):
                    session = ClientSession(
                        WatchedReadStream(read, self._mark_lost),
                        WatchedWriteStream(write),
                        message_handler=self._on_message,
                    )
                    async with session:
                        await session.initialize()
                        life.deadline = math.inf
                        self.session = session
                        self._ready.set()
                        await anyio.sleep_forever()
            if not self._ready.is_set():
                why = "closed while starting" if self._closing else "did not answer in time"
                self._fail(f"{why} ({self._start_timeout:g}s)")
        except anyio.get_cancelled_exc_class():  # the event loop is ending
            self._fail("the event loop ended while it was starting")
            raise
        except Exception as exc:  # reported to whoever waits for the start, or logged
            if not self._ready.is_set():
                self._fail(_describe(exc))
            elif not self._closing:
                logger.warning("MCP server %s: connection ended: %s", self.server, _describe(exc))
        finally:
            self.lost = True
            self.session = None
            self._stderr_final = self.stderr_tail()
            if self._stderr is not None:
                self._stderr.close()
            self._ready.set()
            self._done.set()

    def _fail(self, why: str) -> None:
        if self._error is None:
            self._error = MCPStartError(
                f"could not start MCP server {self.server!r} ({self.target}): {why}",
                server=self.server,
                stderr=self.stderr_tail(),
            )

    # -- while it runs -----------------------------------------------------------------------

    def _mark_lost(self) -> None:
        """The server's side ended: wind the host down so the process is reaped now."""
        self.lost = True
        if self._life is not None:
            self._life.cancel()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):  # a transport failure (HTTP): this session is done
            logger.warning("MCP server %s: %s", self.server, _describe(message))
            self._mark_lost()
        elif isinstance(message, types.ToolListChangedNotification):
            self._on_tools_changed()

    async def confirm_alive(self) -> bool:
        """After a refused request: ping; a server that cannot answer (a dropped HTTP session
        answers "session not found" to everything) marks the connection lost.

        Cancellation: stops waiting; nothing is marked.
        """
        session = self.session
        if session is None or self.lost:
            return False
        try:
            with anyio.fail_after(_PING_BOUND):
                await session.send_ping()
        except (MCPError, TimeoutError):
            self._mark_lost()
            return False
        return True

    def stderr_tail(self) -> str:
        """The end of what the server wrote to stderr (stdio servers; "" for HTTP)."""
        if self._stderr is None or self._stderr.closed:
            return self._stderr_final
        try:
            self._stderr.flush()
            size = self._stderr.seek(0, 2)
            self._stderr.seek(max(0, size - _STDERR_TAIL))
            return self._stderr.read()
        except (OSError, ValueError):
            return self._stderr_final

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the server and wait for the host task to end (shielded, bounded)."""
        self._closing = True
        if self._life is not None:
            self._life.cancel()
        if not self._started:
            return
        # A host spawned but not yet scheduled sees ``_closing`` when it runs, and ends at once.
        with shielded(self._close_timeout, f"closing MCP server {self.server}") as region:
            await self._done.wait()
        if region.overran:
            logger.warning(
                "MCP server %s did not close within %gs", self.server, self._close_timeout
            )


def _describe(exc: BaseException) -> str:
    """One line for an error, looking inside the exception groups anyio and the SDK raise."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, BaseExceptionGroup) else text
