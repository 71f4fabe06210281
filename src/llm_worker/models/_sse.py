"""Server-sent events: the one SSE parser (`SSEDecoder`) and the reader of a streamed response
(`SSEResponseStream`) that every HTTP provider uses.

Invariants:
* One parser, by the WHATWG rules (see `SSEDecoder`); it is synchronous and keeps all unparsed
  bytes in itself, so a read cancelled between two ``feed`` calls loses no byte and no event
  (the property the tests check by cancelling between every feed).
* No SSE line, event or JSON body may exceed ``max_event_bytes`` (16 MiB by default):
  `EventTooLarge`, never retried; parsing is linear in the bytes received.
* Every async generator `SSEResponseStream` runs is finished in the task that iterated it, never
  left to the garbage collector, which would finalise it in a stray task (asyncio) or warn
  (trio); after the stream's last word (``[DONE]``, an error event) the body is read to its end
  (bounded), and a connection that breaks then loses nothing and is no error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import httpx2

from ..errors import ModelError
from ._errors import ServerReportedError, server_reported_error

logger = logging.getLogger("llm_worker.models")


class EventTooLarge(ModelError):
    """A stream event (or a line of one, or a whole JSON body) exceeded the size cap: the server
    is broken or hostile. Never retryable."""


#: The default cap on one stream event, one line of it, or a whole JSON body (`EventTooLarge`).
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: What `SSEResponseStream` yields for ``data: [DONE]`` when asked to (``report_done=True``).
SSE_DONE = "[DONE]"


class SSEDecoder:
    """An incremental parser of ``text/event-stream`` bytes, by the WHATWG rules.

    `feed` takes the body's bytes however they were split and returns the events completed so
    far as ``(event type, data)`` pairs; `end` finishes the body. The rules: one leading U+FEFF
    (byte order mark) is stripped; lines end in CRLF, LF or CR (also when a CRLF is split
    between two chunks); a line starting with ``:`` is a comment; ``field: value`` loses one
    space after the colon, a line without a colon is a field with an empty value; ``data``
    values are joined with ``\n``; ``event`` sets the type (trimmed: servers pad it);
    ``id``, ``retry`` and unknown fields are ignored; a blank line dispatches the event,
    unless no ``data`` line came (then nothing is dispatched, and the type is reset). One
    deviation, for compatible servers: `end` dispatches a last event whose blank line the body
    left out. Data is decoded as UTF-8 with replacement, as the standard says.

    Invariants: the time is linear in the bytes fed — an unfinished line is kept as a list of
    chunks and joined once, when its end arrives, and only the new bytes are searched for a
    line end; no line and no event's data may exceed ``max_event_bytes`` (`EventTooLarge`
    otherwise), so a server cannot make the client hold an unbounded line in memory.
    """

    __slots__ = (
        "_data",
        "_event",
        "_limit",
        "_line",
        "_line_size",
        "_size",
        "_skip_lf",
        "_started",
    )

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._limit = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        self._line: list[bytes] = []  # the chunks of an unfinished line
        self._line_size = 0
        self._data: list[bytes] = []  # the data lines of the event being read
        self._size = 0  # their bytes (with the joining newlines)
        self._event = b""
        self._skip_lf = False  # the last chunk ended in CR: a LF first in the next is its pair
        self._started = False  # the first line was seen (only it may start with a BOM)

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The events that ``chunk`` completes, in order (most often one, or none)."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            self._grow(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._line:
            self._grow(lines[0])
            lines[0] = b"".join(self._line)
            self._line.clear()
            self._line_size = 0
        tail = lines.pop()
        if tail:
            self._grow(tail)
        return self._lines(lines)

    def end(self) -> list[tuple[str, str]]:
        """The body ended: its unfinished last line and event, if any (see the deviation)."""
        lines = [b"".join(self._line), b""] if self._line else [b""]
        self._line.clear()
        self._line_size = 0
        return self._lines(lines)

    def _grow(self, part: bytes) -> None:
        self._line.append(part)
        self._line_size += len(part)
        if self._line_size > self._limit:
            raise _too_large(self._limit, "line")

    def _lines(self, lines: list[bytes]) -> list[tuple[str, str]]:
        """The events that complete ``lines`` dispatch (the hot path: state kept in locals)."""
        events: list[tuple[str, str]] = []
        if not self._started and lines:
            self._started = True
            if lines[0][:3] == _BOM:
                lines[0] = lines[0][3:]
        limit = self._limit
        data, size, kind = self._data, self._size, self._event
        for line in lines:
            if not line:  # a blank line: dispatch
                if data:
                    raw = data[0] if len(data) == 1 else b"\n".join(data)
                    event_type = kind.decode("utf-8", "replace") if kind else ""
                    events.append((event_type, raw.decode("utf-8", "replace")))
                    data = []
                    size = 0
                kind = b""
                continue
            if len(line) > limit:
                raise _too_large(limit, "line")
            # A comment (a keep-alive, OpenRouter's ": OPENROUTER PROCESSING") has no name.
            field, _, value = line.partition(b":")
            if field == b"data":
                if value[:1] == b" ":
                    value = value[1:]
                size += len(value) + 1
                if size > limit:
                    raise _too_large(limit, "event")
                data.append(value)
            elif field == b"event":
                kind = value.strip()
        self._data, self._size, self._event = data, size, kind
        return events


_BOM = b"\xef\xbb\xbf"


def _too_large(limit: int, what: str) -> EventTooLarge:
    return EventTooLarge(
        f"the server sent a stream {what} larger than {limit:,} bytes (max_event_bytes): refused"
    )


class SSEResponseStream:
    """An `SDKStream` over a raw streamed ``httpx2.Response``: each SSE event's JSON payload.

    Use it with the SDK's ``with_raw_response`` (the SDK still builds and sends the request and
    raises its typed errors for an HTTP error status); it replaces the SDK's ``AsyncStream``,
    which (openai 3.57) stops at ``[DONE]`` without closing the generator chain it reads through,
    leaving four async generators per request to the garbage collector — each finalised in a
    stray task on asyncio (after the run returned, breaking structured concurrency) and reported
    as a ResourceWarning on trio — and which builds a pydantic object per chunk (about 75 µs
    each, against about 3 µs for ``json.loads``).

    The body is parsed by `SSEDecoder` (the WHATWG rules: a leading byte order mark, any line
    ending, comments, ``event:`` / ``id:`` / ``retry:`` lines; a last event the body ends
    without its blank line is still read). An event whose data is empty carries nothing and
    is skipped. A server that ignores ``stream: true`` and answers ``Content-Type:
    application/json`` gets its whole body parsed and yielded as one payload (the converters
    recognise a complete response object); one whose JSON body is really SSE is read as SSE.
    No event, line or JSON body may exceed ``max_event_bytes`` (`EventTooLarge`).

    Invariants: after ``[DONE]`` the body is read to its end (at most ``drain_timeout`` seconds),
    so every layer's generator finishes normally and the connection goes back to the pool; the
    response is complete by then, so a connection that breaks during that read loses nothing
    and is no error. With ``report_done`` the marker `SSE_DONE` is yielded then, so a converter
    can tell a finished stream from one that was cut. An ``error`` event (or any payload with a
    non-empty ``"error"`` key) is drained the same way (a connection that breaks after it does
    not replace the server's message) and raised as `ServerReportedError`; with
    ``raise_errors=False`` an error whose payload is a JSON object is yielded like any payload
    instead, for a converter that reports errors itself. A payload that is not JSON raises
    ``ValueError``; transport errors come out as ``httpx2`` exceptions. Iterate it once.
    Cancellation: an await inside the body read is where a cancellation lands, and it unwinds
    every layer there; `close` releases the connection.
    """

    def __init__(
        self,
        response: httpx2.Response,
        *,
        drain_timeout: float = 0.1,
        report_done: bool = False,
        raise_errors: bool = True,
        max_event_bytes: int | None = None,
    ) -> None:
        self.response = response
        self.drain_timeout = drain_timeout
        self.report_done = report_done
        self.raise_errors = raise_errors
        self.max_event_bytes = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        self._bytes: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        if self._is_json_body():
            return self._whole_body()
        raw = self._bytes = self.response.aiter_bytes()
        return self._sse(raw)

    async def close(self) -> None:
        """Close the response (its connection is released), then unwind the body reader.

        Closing the byte iterator from the top cannot finish every layer (httpx2's transport
        stream leaves its inner generator to the garbage collector); with the response closed,
        one more read fails at the bottom and unwinds them all, here. Idempotent.
        """
        await self.response.aclose()
        raw = self._bytes
        if raw is not None:
            with anyio.move_on_after(self.drain_timeout):
                try:
                    async for _ in raw:
                        pass
                except Exception:  # the expected end: a read on a closed connection
                    pass
            await raw.aclose()

    async def _drain(self, raw: AsyncIterator[bytes]) -> None:
        """Read the rest of a body whose last word has come (``[DONE]``, an error event).

        Cancellation: the read is a cancellation point; the time is bounded by
        ``drain_timeout``. A transport error here is no error: nothing more was expected.
        """
        with anyio.move_on_after(self.drain_timeout):
            try:
                async for _ in raw:
                    pass
            except Exception as exc:
                logger.debug("the connection broke after the stream's last event: %r", exc)

    def _is_json_body(self) -> bool:
        content_type = self.response.headers.get("content-type", "").lower()
        media = content_type.split(";", 1)[0].strip()
        return media == "application/json" or media.endswith("+json")

    async def _whole_body(self) -> AsyncGenerator[Any, None]:
        """A ``application/json`` answer: the body as one payload (or as SSE, if it is SSE)."""
        raw = self._bytes = self.response.aiter_bytes()
        parts: list[bytes] = []
        size = 0
        async for part in raw:
            size += len(part)
            if size > self.max_event_bytes:
                raise _too_large(self.max_event_bytes, "body")
            parts.append(part)
        body = b"".join(parts)
        if body.startswith(_BOM):
            body = body[3:]
        if body.lstrip().startswith((b"data:", b"event:", b":", b"id:")):  # SSE, mislabelled
            async with aclosing(_once(body)) as source, aclosing(self._sse(source)) as payloads:
                async for payload in payloads:
                    yield payload
            return
        payload = json.loads(body)
        if type(payload) is not dict:
            raise ValueError(f"the response body is not a JSON object: {body[:100]!r}")
        if payload.get("error") and self.raise_errors:
            raise server_reported_error(payload["error"])
        yield payload

    async def _sse(self, raw: AsyncIterator[bytes]) -> AsyncGenerator[Any, None]:
        loads = json.loads
        decoder = SSEDecoder(self.max_event_bytes)
        feed = decoder.feed
        ended = False
        while not ended:
            try:
                chunk = await anext(raw)
            except StopAsyncIteration:
                events, ended = decoder.end(), True
            else:
                events = feed(chunk)
            for event, text in events:
                stripped = text.strip()  # no copy when there is nothing to strip
                if not stripped and event != "error":
                    continue  # an empty event carries nothing
                if stripped == "[DONE]":
                    await self._drain(raw)
                    if self.report_done:
                        yield SSE_DONE
                    return
                try:
                    payload = loads(text)
                except ValueError:
                    if event != "error":
                        raise
                    await self._drain(raw)
                    raise ServerReportedError(text[:300].strip() or "error event", text) from None
                if type(payload) is not dict:
                    raise ValueError(f"a stream event is not a JSON object: {text[:100]!r}")
                if (event == "error" or payload.get("error")) and self.raise_errors:
                    await self._drain(raw)
                    raise server_reported_error(payload.get("error", payload))
                yield payload


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body
