"""The connection's two streams, watched: which request is whose, and when the server is gone.

Invariants:
* A ``tools/call`` request is written in the task that awaits it, so the call in progress there
  (`current_call`) learns its JSON-RPC id as the request goes out: that is the id our own
  ``notifications/cancelled`` names.
* Once we told the server why a call stops (``cancelled_by_us``), the SDK's own courtesy cancels
  for the requests of that call (the call itself, and the ping after our cancel: "caller
  cancelled", sent when the SDK stops waiting) are not written: the server hears about each
  cancelled call once, with the run's reason.
* The end of the read stream (the process exited, the pipe broke) is reported once, at once, so
  a dead connection is never handed to the next call.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import anyio
from mcp.client._transport import ReadStream, WriteStream
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCRequest, RequestId

__all__ = ["CallWire", "WatchedReadStream", "WatchedWriteStream", "current_call"]


@dataclass(eq=False)
class CallWire:
    """What the wire knows of one ``tools/call``: its request id, and whether we cancelled it."""

    request_id: RequestId | None = None  # the tools/call request
    sent: set[RequestId] = field(default_factory=set)  # every request written for this call
    cancelled_by_us: bool = False  # set once our own cancel was written


current_call: ContextVar[CallWire | None] = ContextVar("llm_worker_mcp_call", default=None)


class WatchedWriteStream:
    """The session's write stream: records call ids, drops a second cancel for the same call."""

    def __init__(self, inner: WriteStream[SessionMessage]) -> None:
        self._inner = inner

    async def send(self, item: SessionMessage, /) -> None:
        call = current_call.get()
        message = item.message
        if call is not None:
            if isinstance(message, JSONRPCRequest):
                call.sent.add(message.id)
                if message.method == "tools/call":
                    call.request_id = message.id
            elif (
                call.cancelled_by_us
                and isinstance(message, JSONRPCNotification)
                and message.method == "notifications/cancelled"
                and (message.params or {}).get("requestId") in call.sent
            ):
                return  # the SDK's courtesy cancel: the server was already told, with the reason
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class WatchedReadStream:
    """The session's read stream: calls ``on_end()`` once when the server's side is gone."""

    def __init__(
        self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._on_end = on_end

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
