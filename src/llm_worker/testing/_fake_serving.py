"""Serving one connection of `FakeProviderServer`: its requests in turn, each reply sent with the
faults its script asks for while the client is watched.

Invariants:
* Requests on a connection are served one after another; a reply is taken only once its request
  has been read whole and recorded.
* While a reply is being sent, a watcher reads the socket concurrently; when the client leaves,
  the reply is cancelled at once and the disconnect is counted (mid-stream if the stream's headers
  had gone out, before the response otherwise). Neither task outlives `_respond`.
* This module keeps no state beyond one connection: the server's queue, records and counters are
  reached only through the `ServerBooks` it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from ._fake_http import (
    LAST_CHUNK,
    BadRequest,
    Connection,
    Request,
    chunk,
    read_request,
    response_head,
)
from ._fake_protocols import error_body
from ._fake_replies import ErrorReply, JsonReply, Reply, StreamReply
from ._fake_wire import malformed_event

#: How long closing politely, and stopping the server, may take.
STOP_GRACE = 2.0

_Outcome = Literal["keep", "close", "gone"]  # after a reply: serve on, close politely, or done


class Count(Protocol):
    """Adds to the server's counters (names of `ServerStats` fields)."""

    def __call__(self, **deltas: int) -> None: ...


@dataclass(frozen=True)
class ServerBooks:
    """What a connection needs of the server: the next reply, the request log, the counters."""

    take_reply: Callable[[Request], Reply]
    record: Callable[[Request], None]
    count: Count


class _Dropped(Exception):
    """The script says: abort the connection here."""


class _Progress:
    """How far one reply got, for classifying a disconnect."""

    def __init__(self) -> None:
        self.stream_started = False


async def serve_connection(conn: Connection, books: ServerBooks) -> None:
    """Requests on one connection, one after another, until it closes.

    Cancellation: stops at once (the server's ``stop()``); the caller aborts the socket.
    """
    while True:
        try:
            request = await read_request(conn)
        except BadRequest as exc:
            books.count(bad_requests=1)
            body = json.dumps({"error": {"message": str(exc), "type": "bad_request"}})
            await _send_json(conn, exc.status, body.encode(), keep_alive=False)
            await _close_gracefully(conn)
            return
        if request is None:
            return
        books.record(request)
        outcome = await _respond(conn, request, books)
        if outcome == "close":
            await _close_gracefully(conn)
        if outcome != "keep":
            return


async def _respond(conn: Connection, request: Request, books: ServerBooks) -> _Outcome:
    """Send one reply while watching for the client leaving."""
    reply = books.take_reply(request)
    if reply.drop_before_headers:
        conn.abort()
        return "gone"
    progress = _Progress()
    watcher = asyncio.ensure_future(conn.wait_closed_by_peer())
    sender = asyncio.ensure_future(_send_reply(conn, request, reply, progress, books.count))
    try:
        await asyncio.wait((watcher, sender), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        sender.cancel()  # a no-op once it has finished
        await asyncio.wait((watcher, sender))
    if not sender.cancelled():
        exc = sender.exception()
        if exc is None:
            return "keep" if sender.result() else "close"
        if isinstance(exc, _Dropped):
            books.count(streams_dropped=1)
            conn.abort()
            return "gone"
        if not isinstance(exc, ConnectionError):
            raise exc
    # The client went away (the watcher saw EOF, or a write failed).
    if progress.stream_started:
        books.count(disconnects_mid_stream=1)
    else:
        books.count(disconnects_before_response=1)
    return "gone"


async def _send_reply(
    conn: Connection, request: Request, reply: Reply, progress: _Progress, count: Count
) -> bool:
    """Send ``reply``; True if the connection can serve another request."""
    if reply.delay:
        await asyncio.sleep(reply.delay)
    if isinstance(reply, StreamReply):
        # HTTP/1.0 has no chunked encoding: the body then ends where the connection does.
        framed = request.version == "HTTP/1.1"
        keep_alive = request.keep_alive and framed
        await _send_stream(conn, reply, progress, count, keep_alive=keep_alive, framed=framed)
        return keep_alive
    if isinstance(reply, JsonReply):
        body, content_type = reply.body, reply.content_type
    elif isinstance(reply, ErrorReply):
        body = reply.body or error_body(reply.status, request.path, reply.message)
        content_type = reply.content_type
    else:  # pragma: no cover - Reply() itself cannot be built
        raise TypeError(f"cannot serve {type(reply).__name__}")
    if request.method == "HEAD":
        body = b""
    keep_alive = request.keep_alive
    await _send_json(
        conn, reply.status, body, keep_alive, content_type=content_type, extra=reply.headers
    )
    return keep_alive


async def _send_json(
    conn: Connection,
    status: int,
    body: bytes,
    keep_alive: bool,
    *,
    content_type: str = "application/json",
    extra: Iterable[tuple[str, str]] = (),
) -> None:
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("connection", "keep-alive" if keep_alive else "close"),
    ]
    await conn.send(response_head(status, _merge(headers, extra)) + body)


async def _send_stream(
    conn: Connection,
    reply: StreamReply,
    progress: _Progress,
    count: Count,
    *,
    keep_alive: bool,
    framed: bool,
) -> None:
    headers = [
        ("content-type", reply.content_type),
        ("cache-control", "no-cache"),
        ("connection", "keep-alive" if keep_alive else "close"),
    ]
    if framed:
        headers.insert(1, ("transfer-encoding", "chunked"))
    await conn.send(response_head(reply.status, _merge(headers, reply.headers)))
    progress.stream_started = True
    count(streams_started=1)
    sent = 0
    for index, event in enumerate(reply.events):
        await _apply_faults(reply, index, pace=index > 0)
        data = malformed_event(reply.content_type) if index == reply.malformed_at else event
        if data:  # an empty chunk would end the body
            await conn.send(chunk(data) if framed else data)
        sent = index + 1
    await _apply_faults(reply, sent, pace=False, at_end=True)
    if framed:
        await conn.send(LAST_CHUNK)
    count(streams_completed=1)


async def _apply_faults(
    reply: StreamReply, index: int, *, pace: bool, at_end: bool = False
) -> None:
    """The faults scheduled before event ``index`` (``at_end``: before the last chunk, where
    every position past the end also lands)."""
    if pace and reply.pace:
        await asyncio.sleep(reply.pace)
    if _due(reply.drop_after, index, at_end):
        raise _Dropped
    if _due(reply.stall_after, index, at_end):
        if reply.stall is None:
            await asyncio.get_running_loop().create_future()  # until cancelled
        else:
            await asyncio.sleep(reply.stall)


async def _close_gracefully(conn: Connection) -> None:
    """Let the last response reach the client before the socket closes."""
    conn.writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.writer.wait_closed(), STOP_GRACE)


def _due(position: int | None, index: int, at_end: bool) -> bool:
    return position is not None and (position == index or (at_end and position > index))


def _merge(
    defaults: Iterable[tuple[str, str]], extra: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Default headers, with same-named ones replaced by the reply's own."""
    extra = list(extra)
    names = {name for name, _ in extra}
    return [(n, v) for n, v in defaults if n not in names] + extra
