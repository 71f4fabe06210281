"""One ``tools/call`` with a cancellation that reaches the server.

Invariants:
* The call runs with its own token (a child of the run's, from `ConcurrentMap`). When it is
  cancelled, the server is sent ``notifications/cancelled`` naming this request and the token's
  reason — once: the SDK's own "caller cancelled" for the same request is not sent (`_wire`).
* Then a ``ping`` follows: the server reads its input in order, so its answer proves the cancel
  was read by a server still alive. The call then returns at once with what the server reported
  through progress notifications (their messages) as partial output: ``interrupted``. A result
  that wins the race is kept instead.
* A server that never answers (it blocks its own loop, the pipe is wedged) keeps the call
  waiting until the map's grace runs out and the map stops it hard; `partial()` then gives the
  progress kept so far and the call is reported ``abandoned``. Grace and the hard stop are the
  map's alone: nothing here arms a timer.
* A server that goes away mid-call gives the call an error result (with its stderr); the
  connection is marked lost and the next use starts the server again. A refused call is
  followed by a ping: a server that refuses that too (an HTTP service that dropped our
  session) is lost as well, and the next use connects again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp import MCPError

from ..cancel import CancelToken, fail_on_cancel
from ..tools import ToolOutput
from ._content import tool_output
from ._errors import MCPCallFailed, MCPConnectionLost
from ._wire import CallWire, current_call

if TYPE_CHECKING:
    from ._connection import Connection
    from ._server import MCPServer

__all__ = ["MCPCall"]

_CANCEL_WRITE_BOUND = 2.0  # a wedged transport must not hold the cancel forever


class MCPCall:
    """``await call(token)`` → `ToolOutput`; ``partial()`` after a hard stop (`ReportsPartial`)."""

    def __init__(
        self,
        server: MCPServer,
        remote_name: str,
        arguments: dict[str, Any],
        on_progress: Callable[[float, float | None, str | None], None] | None,
    ) -> None:
        self._server = server
        self._remote_name = remote_name
        self._arguments = arguments
        self._on_progress = on_progress
        self._messages: list[str] = []
        self._wire: CallWire | None = None
        self.__name__ = f"{server.name}.{remote_name}"

    def partial(self) -> ToolOutput | None:
        """What the server reported through progress notifications so far; None if the request
        never went out (stopped while the server was starting)."""
        if self._wire is None or self._wire.request_id is None:
            return None
        return ToolOutput("\n".join(self._messages) or "(the server reported no progress)")

    async def __call__(self, token: CancelToken) -> ToolOutput:
        """Call the tool. Cancellation: see the module's invariants (cancel, ping, partial)."""
        with fail_on_cancel(token):  # a stop while the server (re)starts: the call never ran
            connection = await self._server.connection()
        wire = self._wire = CallWire()
        context = current_call.set(wire)
        result: types.CallToolResult | None = None
        error: MCPError | None = None
        try:
            async with anyio.create_task_group() as group:
                answered_stop = anyio.CancelScope()
                group.start_soon(
                    self._tell_server_on_cancel, token, connection, wire, answered_stop
                )
                try:
                    with answered_stop:
                        result = await self._send(connection)
                except MCPError as exc:
                    error = exc
                finally:
                    group.cancel_scope.cancel()
        finally:
            current_call.reset(context)
        if result is not None:
            return tool_output(result)
        if error is not None and not token.cancelled:
            if error.code != types.CONNECTION_CLOSED:
                await connection.confirm_alive()  # a dropped HTTP session refuses everything
            raise self._failure(connection, error) from error
        partial = self.partial()
        if partial is None:  # stopped before the request went out: the call never ran
            token.raise_if_cancelled()
            return ToolOutput("")
        return partial

    async def _send(self, connection: Connection) -> types.CallToolResult:
        session = connection.session
        if session is None:
            raise MCPError(code=types.CONNECTION_CLOSED, message="Connection closed")
        return await session.call_tool(
            self._remote_name, self._arguments, progress_callback=self._progress
        )

    async def _progress(self, progress: float, total: float | None, message: str | None) -> None:
        if message:
            self._messages.append(message)
        if self._on_progress is not None:
            self._on_progress(progress, total, message)

    async def _tell_server_on_cancel(
        self,
        token: CancelToken,
        connection: Connection,
        wire: CallWire,
        answered_stop: anyio.CancelScope,
    ) -> None:
        await token.wait()
        session = connection.session
        if wire.request_id is not None and session is not None:
            reason = token.reason or "cancelled"
            notification = types.CancelledNotification(
                params=types.CancelledNotificationParams(request_id=wire.request_id, reason=reason)
            )
            with anyio.move_on_after(_CANCEL_WRITE_BOUND):
                await session.send_notification(notification)
                wire.cancelled_by_us = True
            # Answered: the server read the cancel and is alive. An error: it went away, and
            # nothing more will come for this call either.
            with contextlib.suppress(MCPError):
                await session.send_ping()
        answered_stop.cancel()

    def _failure(self, connection: Connection, error: MCPError) -> Exception:
        server = self._server.name
        if error.code == types.CONNECTION_CLOSED or connection.lost:
            connection.lost = True
            return MCPConnectionLost(
                f"MCP server {server!r} went away during the call of {self._remote_name!r}"
                f" ({error.message}; it is started or connected again on the next use)",
                server=server,
                stderr=connection.stderr_tail(),
            )
        return MCPCallFailed(
            f"MCP server {server!r} refused the call of {self._remote_name!r}: {error.message}",
            server=server,
        )
