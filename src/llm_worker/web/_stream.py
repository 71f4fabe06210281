"""`ChatStream`: the ASGI response of ``POST /api/chat`` — one run, streamed as UI chunks.

Invariants:
* The chat is acquired before the headers go out (so a chat locked elsewhere is a JSON 409)
  and released however the response ends; the run is started with ``supersede=True``, so a
  newer message on the same chat stops the older run (cause ``superseded``), whose stream then
  delivers what it kept, ``abort``, and ends.
* A task watches the ASGI receive channel for ``http.disconnect`` for the whole response: a
  client that goes away cancels the run through the run's own token ("the client
  disconnected"), promptly even while a tool runs silently. After that nothing more is sent,
  but the run is still drained to its end, so its clean-up and commits complete.
* The stream always ends with one ending chunk (`UIStreamEncoder`) and ``data: [DONE]``.
* If the request task itself is cancelled (server shutdown), the worker's stream stops the run
  as ``external`` and the framework's cancellation propagates after the chat is released.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import anyio
from starlette.types import Receive, Scope, Send

from .._observe import incoming_trace
from ..cancel import CancelToken
from ..errors import Cancelled
from ..run_stream import RunStream
from ._chats import ChatRegistry
from ._protocol import HEADERS, Chunk, UIStreamEncoder, sse, sse_done
from ._requests import ApiError, error_response

__all__ = ["DISCONNECTED", "ChatStream"]

DISCONNECTED = "the client disconnected"


class ChatStream:
    """Streams one run of chat ``name``: ``text`` as new input, or None to continue."""

    def __init__(self, registry: ChatRegistry, name: str, text: str | None) -> None:
        self.registry = registry
        self.name = name
        self.text = text
        self.token = CancelToken(f"web chat {name}")
        self._gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Cancellation: the run is stopped (``external``) and cleaned up; the chat released."""
        try:
            chat = self.registry.acquire(
                self.name, first_text=self.text, settle=self.text is not None
            )
        except ApiError as exc:
            await error_response(exc.status, exc.message)(scope, receive, send)
            return
        try:
            # Registered before the first await: a Stop that arrives from now on reaches it.
            stream = chat.worker.stream(self.text, token=self.token, supersede=True)
            tracing = incoming_trace(scope["headers"])  # a W3C traceparent parents the run
            headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive)
                try:
                    with tracing:
                        await self._stream(stream, send)
                finally:
                    group.cancel_scope.cancel()
        finally:
            self.registry.release(chat)

    async def _watch_disconnect(self, receive: Receive) -> None:
        """Cancel the run when the client goes away. Cancellation: plain (the response ended)."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                self.token.cancel(DISCONNECTED)
                return

    async def _stream(self, stream: RunStream, send: Send) -> None:
        encoder = UIStreamEncoder(f"msg-{uuid.uuid4().hex[:16]}")
        await self._write(send, encoder.start())
        async with stream as run:
            async for event in run:
                chunks = encoder.encode(event)
                if chunks:
                    await self._write(send, chunks)
        if not encoder.ended:  # ended before it started (superseded or stopped while waiting)
            error = stream.error
            kind, reason = "superseded", "a newer message replaced it"
            if isinstance(error, Cancelled):
                kind, reason = error.cause.kind, error.reason or reason
            await self._write(send, encoder.interrupted(kind, reason))
        await self._send(send, sse_done(), more=False)

    async def _write(self, send: Send, chunks: Sequence[Chunk]) -> None:
        await self._send(send, b"".join(sse(chunk) for chunk in chunks), more=True)

    async def _send(self, send: Send, body: bytes, *, more: bool) -> None:
        """Cancellation: plain; a client gone (or going) means nothing more is sent."""
        if self._gone:
            return
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more})
        except OSError:  # the connection broke under the write: the watcher cancels the run
            self._gone = True
            self.token.cancel(DISCONNECTED)
