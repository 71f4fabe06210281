"""Shared plumbing of the HTTP providers: retries, timeouts, and leak-free closing.

Invariants:
* The SDKs' own retries are off (``max_retries=0``): this module retries, so back-off is a
  cancellation point of the run, each retry is reported as a `Retrying` event, ``Retry-After`` is
  honoured, and there is never a retry of a retry.
* A request is retried only while no content has reached the caller: usage reports that come before
  the first content event are held back (dropped if the request is retried, passed on before the
  error if it fails for good), and a transient failure — an HTTP error, a dropped connection, an
  error event, a retryable `StreamError`, a body that ends before it began — is retried up to that
  point. Once content has reached the caller, a failure is a `ModelError` (with everything streamed
  kept by the worker), never a silent re-generation. An empty 200 body is a transient failure, never
  a silently empty answer.
* Whatever happens — normal end, error, timeout, cancellation — the SDK stream and its HTTP
  response are closed in a shielded, time-bounded block before the context manager exits, so the
  connection goes back to the pool or is closed, never leaked.
* Every async generator on the stream path is finished in the task that iterated it (closed
  outermost first on the way out), never left to the garbage collector, which would finalise it
  in a stray task (asyncio) or warn (trio). `SSEResponseStream` reads a raw response that way;
  the SDKs' own ``AsyncStream`` does not (see there).
* Failures are classified by what the server said, not by how the connection ended: a body read
  after the stream's last word (``[DONE]``, an error event) may break without consequence, so an
  error event's message survives an abrupt close; an HTTP error status whose body was cut stays
  that status (`note_status`); a 400 — as a status or stated in an error object — is never
  retried. (After a response's terminal event the converters end normally on a broken
  connection: the answer is whole.)
* No SSE line, event or JSON body may exceed ``max_event_bytes`` (16 MiB by default):
  `EventTooLarge`, never retried; parsing is linear in the bytes received (`SSEDecoder`).
* No error text leaves this module with a credential in it: every `ModelError`, `StreamError`
  and `Retrying` of `provider_stream` is redacted (`Redactor`) against the client's key and
  credential headers — message, failure cause and chained exceptions.
* Timeouts: ``connect`` and ``idle`` are the HTTP client's connect and read timeouts (a read
  timeout is exactly "no byte for ``idle`` seconds", checked where the bytes are read, at no extra
  cost per event); ``first_event`` bounds the time from sending the request to the first event.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx2

from ..cancel import Cause, shielded
from ..errors import ModelError
from ..events import Retrying, StreamError, StreamEvent, UsageUpdate
from ..items import Usage

logger = logging.getLogger("llm_worker.models")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
#: Error ``type`` / ``code`` strings that servers put in a stream's error object for failures worth
#: trying again (OpenAI, OpenRouter, vLLM and friends; Anthropic's types are below).
TRANSIENT_ERROR_CODES = frozenset(
    {
        "server_error",
        "internal_error",
        "internal_server_error",
        "api_error",
        "rate_limit_exceeded",
        "rate_limit_error",
        "server_is_overloaded",
        "overloaded_error",
        "service_unavailable",
        "slow_down",
        "timeout",
        "timeout_error",
    }
)
#: The default cap on one stream event, one line of it, or a whole JSON body (`EventTooLarge`).
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: What `SSEResponseStream` yields for ``data: [DONE]`` when asked to (``report_done=True``).
SSE_DONE = "[DONE]"
#: The HTTP status an error *type* reported inside a stream stands for (Anthropic's error types).
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

T_co = TypeVar("T_co", covariant=True)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client the providers create: building one costs ~70 ms."""
    return httpx2.create_ssl_context()


class MissingCredentials(ValueError):
    """A provider needs an API key that is neither given nor in its environment variable."""


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential back-off; ``Retry-After`` wins when the server sends one."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed to connect, to get the first event, and between two events."""

    connect: float = 10.0
    first_event: float = 120.0
    idle: float = 60.0

    def for_httpx(self) -> httpx2.Timeout:
        """The HTTP client timeouts that implement ``connect`` and ``idle``."""
        return httpx2.Timeout(
            connect=self.connect, read=self.idle, write=self.idle, pool=self.connect
        )


class SDKStream(Protocol[T_co]):
    """What the official SDKs' ``AsyncStream`` offers."""

    def __aiter__(self) -> AsyncIterator[T_co]: ...
    async def close(self) -> None: ...


class StreamErrorEvent(Exception):
    """An error the server reported inside a stream that began with HTTP 200 (``body``: what it
    said); `classify` makes it a non-retryable `ModelError`."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.body = body


class EventTooLarge(ModelError):
    """A stream event (or a line of one, or a whole JSON body) exceeded the size cap: the server
    is broken or hostile. Never retryable."""


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
    stray task on asyncio (after the run returned: §2.2.9) and reported as a ResourceWarning on
    trio — and which builds a pydantic object per chunk (about 75 µs each, against about 3 µs
    for ``json.loads``).

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
    not replace the server's message) and raised as `StreamErrorEvent`; with
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
            raise _error_event(payload["error"])
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
                    raise StreamErrorEvent(text[:300].strip() or "error event", text) from None
                if type(payload) is not dict:
                    raise ValueError(f"a stream event is not a JSON object: {text[:100]!r}")
                if (event == "error" or payload.get("error")) and self.raise_errors:
                    await self._drain(raw)
                    raise _error_event(payload.get("error", payload))
                yield payload


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


def _error_event(error: Any) -> StreamErrorEvent:
    """The `StreamErrorEvent` for an error object (OpenAI's, Anthropic's, or a bare string)."""
    message = server_message(error)
    return StreamErrorEvent(message or "error event", error)


def server_message(body: Any) -> str | None:
    """The human message in an error body, whatever its shape: OpenAI's and Anthropic's
    ``{"error": {"message"}}``, Ollama's ``{"error": "..."}``, vLLM's ``{"message"}``,
    FastAPI's ``{"detail"}``, a list of such objects (Gemini's compat layer), or plain text."""
    for _ in range(3):  # unwrap {"error": {"error": ...}} a few levels, no more
        if isinstance(body, list) and body:
            body = body[0]
        if isinstance(body, dict) and "error" in body and body["error"]:
            body = body["error"]
            continue
        break
    if isinstance(body, dict):
        for key in ("message", "detail", "msg", "error_message"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if value and not isinstance(value, dict | list):
                return str(value)
            if isinstance(value, list) and value:  # FastAPI's validation errors
                return "; ".join(str(server_message(v) or v) for v in value[:3])
        return None
    if isinstance(body, str) and body.strip():
        text = body.strip()
        return text if len(text) <= 300 else text[:297] + "..."
    return None


def classify(exc: BaseException, provider: str) -> ModelError:
    """Turn an SDK or transport exception into a `ModelError` (``retryable`` set when it is).

    An HTTP error's message is the server's own (`server_message` of its body: the SDKs' texts
    repeat the status and, for some servers, nothing else). A connection that broke while an
    HTTP error's body was being read is that HTTP error (retryable only if its status is), not
    a server that "could not be reached": the status line had arrived (`note_status`).
    """
    if isinstance(exc, ModelError):
        return exc
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(status, int) and status < 400:
        # An ``error`` event inside a stream that began with 200 (Anthropic's SDK raises these as
        # status errors carrying the stream's status): retryable when its type says transient.
        kind = getattr(exc, "type", None)
        transient = isinstance(kind, str) and STREAM_ERROR_STATUS.get(kind) in RETRYABLE_STATUS
        error = ModelError(
            f"{provider} reported an error mid-stream: {_short(exc)}", retryable=transient
        )
    elif isinstance(status, int):
        said = _http_error_message(exc)
        message = f"{provider} answered HTTP {status}: {said}"
        error = ModelError(message, status_code=status, retryable=status in RETRYABLE_STATUS)
    elif (answered := _status_before_failure(exc)) is not None:
        error = ModelError(
            f"{provider} answered HTTP {answered}, then the connection broke while its error "
            f"body was read: {_short(exc)}",
            status_code=answered,
            retryable=answered in RETRYABLE_STATUS,
        )
    elif name in ("APIConnectionError", "APITimeoutError") or isinstance(
        exc, OSError | httpx2.TransportError
    ):
        error = ModelError(f"{provider} could not be reached: {_short(exc)}", retryable=True)
    elif name == "APIError" or isinstance(exc, StreamErrorEvent):  # reported inside the stream
        body = getattr(exc, "body", None)
        kind = _field(body, "type")
        what = f" ({kind})" if isinstance(kind, str) and kind in STREAM_ERROR_STATUS else ""
        error = ModelError(
            f"{provider} reported an error mid-stream{what}: {_short(exc)}",
            retryable=transient_error(body),
        )
    else:
        error = ModelError(f"{provider} stream failed: {name}: {_short(exc)}")
    error.__cause__ = exc
    return error


#: Where `note_status` leaves a response's status on its request (``request.extensions``).
_STATUS_KEY = "llm_worker.status"


async def note_status(response: httpx2.Response) -> None:
    """An ``httpx2`` response hook: remember the status on the request, so that a transport error
    while the SDK reads an error body is known to be that HTTP error (`classify`)."""
    response.request.extensions[_STATUS_KEY] = response.status_code


def http_client_options(timeouts: Timeouts) -> dict[str, Any]:
    """Keyword arguments for the SDKs' ``DefaultAsyncHttpxClient``: the shared TLS context,
    ``timeouts`` and the `note_status` hook."""
    return {
        "verify": shared_ssl_context(),
        "timeout": timeouts.for_httpx(),
        "event_hooks": {"response": [note_status]},
    }


def _status_before_failure(exc: BaseException) -> int | None:
    """The HTTP error status whose body was being read when ``exc`` (a transport error) broke
    the connection, if one was: from `note_status`, or from the ``httpx2.HTTPStatusError`` the
    SDK was handling then (OpenAI's SDK reads the body inside its handler)."""
    if not isinstance(exc, httpx2.TransportError):
        return None
    try:
        request = exc.request
    except RuntimeError:  # no request attached
        request = None
    status = request.extensions.get(_STATUS_KEY) if request is not None else None
    if status is None and isinstance(exc.__context__, httpx2.HTTPStatusError):
        status = exc.__context__.response.status_code
    return status if isinstance(status, int) and status >= 400 else None


def transient_error(error: Any) -> bool:
    """Whether an error object from inside a stream says "try again".

    A status the error states — a numeric ``code`` / ``status_code`` / ``status`` (OpenRouter's
    ``{"code": 502}``, llama.cpp's ``{"code": 400}``), else the status its ``type`` stands for
    (``invalid_request_error``: 400, ``overloaded_error``: 529) — decides: retryable only if
    that status is (so a 400 is never retried, whatever else the object says). Without one, a
    transient ``type`` or ``code`` (``server_error``, ``rate_limit_exceeded``, …) is retryable.
    """
    if not isinstance(error, dict):
        return False
    status = _stated_status(error)
    if status is not None:
        return status in RETRYABLE_STATUS
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and value in TRANSIENT_ERROR_CODES:
            return True
    return False


def _stated_status(error: dict[str, Any]) -> int | None:
    for key in ("code", "status_code", "status"):
        value = error.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    kind = error.get("type")
    return STREAM_ERROR_STATUS.get(kind) if isinstance(kind, str) else None


def _http_error_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    said = server_message(body)
    if said is None:
        response = getattr(exc, "response", None)
        reason = getattr(response, "reason_phrase", None)
        said = reason if isinstance(reason, str) and reason else None
    return _shorten(said) if said else _short(exc)


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """The delay an HTTP error asks for, in seconds: ``retry-after-ms``, else ``Retry-After`` as
    seconds or as an HTTP date (a date in the past is 0); None when there is none or it is
    garbage. ``now`` (a Unix time) is for tests."""
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(float(ms) / 1000, 0.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": GMT all the same
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


#: What a secret is replaced with in error messages.
REDACTED = "[redacted]"
#: Header names whose values are credentials (their values are redacted like the API key).
AUTH_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"}
)
#: Shorter "keys" are placeholders that local servers accept (``"ollama"``, ``"EMPTY"``, ``"k"``):
#: redacting them would mangle every message; the same length is the shortest fragment of a
#: longer key (a server's message cut by a length limit) that is redacted.
MIN_SECRET_LENGTH = 8


def client_secrets(client: Any) -> list[str]:
    """The credentials an SDK client sends: its ``api_key`` / ``auth_token``, and the values of
    its credential headers (`AUTH_HEADERS`), also without their scheme (``Bearer <key>``)."""
    found: list[str] = []
    for attribute in ("api_key", "auth_token"):
        value = getattr(client, attribute, None)
        if isinstance(value, str):
            found.append(value)
    for attribute in ("auth_headers", "default_headers"):  # the SDKs' own, and custom ones
        try:
            headers = getattr(client, attribute, None)
        except Exception:  # a property of a client of another shape
            continue
        if not isinstance(headers, dict):
            continue
        for name, value in headers.items():
            if isinstance(name, str) and name.lower() in AUTH_HEADERS and isinstance(value, str):
                found.append(value)
                found.extend(value.split()[1:])
    return found


class Redactor:
    """Replaces known secrets (and any fragment of one at least `MIN_SECRET_LENGTH` long that
    starts it, as a message cut short leaves) with `REDACTED`, in text and in `ModelError`s."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        self.secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            head = secret[:MIN_SECRET_LENGTH]
            start = text.find(head)
            while start >= 0:
                end = start + len(head)
                while end - start < len(secret) and end < len(text):
                    if text[end] != secret[end - start]:
                        break
                    end += 1
                text = text[:start] + REDACTED + text[end:]
                start = text.find(head, start + len(REDACTED))
        return text

    def leaks(self, text: str) -> bool:
        return bool(self.secrets) and self(text) != text

    def error(self, error: ModelError) -> ModelError:
        """Redact ``error`` in place — its message, its cause's description — and replace each
        exception in its ``__cause__`` / ``__context__`` chain whose text shows a secret (an SDK
        error quoting the server's body) by a `RedactedError` saying the same, redacted."""
        if not self.secrets:
            return error
        message = str(error)
        clean = self(message)
        if clean != message:
            error.args = (clean,)
            if error.cause.tag == "failure" and error.cause.error is error:
                error.cause = Cause.failure(error)
        seen: set[int] = {id(error)}
        error.__cause__ = self._chain(error.__cause__, seen)
        error.__context__ = self._chain(error.__context__, seen)
        return error

    def _chain(self, exc: BaseException | None, seen: set[int]) -> BaseException | None:
        if exc is None or id(exc) in seen:
            return exc
        seen.add(id(exc))
        text = " ".join((str(exc), repr(exc.args), repr(getattr(exc, "body", None)), _text_of(exc)))
        cause = self._chain(exc.__cause__, seen)
        context = self._chain(exc.__context__, seen)
        if self.leaks(text):
            stand_in = RedactedError(
                self(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
            )
            stand_in.__suppress_context__ = exc.__suppress_context__
            exc = stand_in
        exc.__cause__ = cause
        exc.__context__ = context
        return exc

    def event(self, event: StreamError) -> StreamError:
        message = self(event.message)
        return event if message == event.message else event.model_copy(update={"message": message})


class RedactedError(Exception):
    """Stands in, in a `ModelError`'s chain, for an exception whose text showed a secret."""


def _text_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else ""


def _no_secrets() -> Iterable[str]:
    return ()


@asynccontextmanager
async def provider_stream(
    open_stream: Callable[[], Awaitable[SDKStream[Any]]],
    convert: Callable[[AsyncIterator[Any]], AsyncIterator[StreamEvent]],
    *,
    provider: str,
    retry: RetryPolicy,
    timeouts: Timeouts,
    close_timeout: float = 5.0,
    secrets: Callable[[], Iterable[str]] = _no_secrets,
) -> AsyncIterator[AsyncIterator[StreamEvent]]:
    """Open an SDK stream lazily with retries; yield an iterator of normalised events.

    ``open_stream()`` sends the request and returns the SDK's stream (after the response headers
    arrived); ``convert(chunks)`` maps the SDK's chunk objects to `StreamEvent`s.

    Retries (see the module invariants): until the first content event — any event but a
    `UsageUpdate` — a transient failure closes the response and sends the request again;
    usage reported before it is held back meanwhile, so a retried attempt is not counted (the
    attempt that fails for good passes its usage on before its error). A
    retryable `StreamError` then is a transient failure too (on the last attempt it is passed
    on, for the worker to raise).

    Secrets: every `ModelError` raised, `StreamError` yielded and `Retrying` reported (and the
    log line of a retry) has the credentials ``secrets()`` names redacted (`Redactor`): a server
    that quotes the key in an error body cannot get it printed, stored or sent on.

    Cancellation: at any await — opening, back-off, waiting for an event — the stream is closed
    (shielded, at most ``close_timeout`` seconds) and the cancellation propagates.
    """
    holder: list[SDKStream[Any]] = []

    async def events() -> AsyncIterator[StreamEvent]:
        pipeline: list[AsyncIterator[Any]] = []  # this attempt's iterators, outermost first
        failure: ModelError | None = None
        try:
            attempt = 0
            while True:
                attempt += 1
                held: list[StreamEvent] = []  # usage before the first content event
                try:
                    with anyio.fail_after(timeouts.first_event):
                        sdk_stream = await open_stream()
                        holder.append(sdk_stream)
                        chunks = sdk_stream.__aiter__()
                        pipeline.append(chunks)
                        try:
                            first_chunk = await anext(chunks)
                        except StopAsyncIteration:
                            raise ModelError(
                                f"{provider} answered with an empty stream", retryable=True
                            ) from None
                    guarded = _guarded(first_chunk, chunks, provider, timeouts.idle)
                    converted = convert(guarded)
                    pipeline[:0] = [converted, guarded]
                    first: StreamEvent | None = None
                    async for event in converted:
                        if isinstance(event, UsageUpdate):
                            held.append(event)
                            continue
                        if (
                            isinstance(event, StreamError)
                            and event.retryable
                            and attempt < retry.max_attempts
                        ):
                            raise ModelError(event.message, retryable=True)
                        first = event
                        break
                except Exception as exc:
                    error = _timeout_error(exc, provider, "first event", timeouts.first_event)
                    await _close_all(pipeline)
                    await _close(holder, close_timeout)
                    if not error.retryable or attempt >= retry.max_attempts:
                        # The request is not sent again: what the server said it used counts.
                        for event in held:
                            yield event
                        if error is exc:
                            raise
                        raise error from exc
                    delay = retry.delay(attempt, retry_after(exc))
                    said = Redactor(secrets())(str(error))
                    logger.info("%s: %s; retrying in %.2fs", provider, said, delay)
                    yield Retrying(attempt=attempt, delay=delay, error=said)
                    await anyio.sleep(delay)
                    continue
                break
            for event in held:
                yield event
            if first is None:
                return
            yield Redactor(secrets()).event(first) if type(first) is StreamError else first
            async for event in converted:
                if type(event) is StreamError:
                    event = Redactor(secrets()).event(event)
                yield event
        except ModelError as exc:
            failure = exc
        except Exception as exc:  # a converter choking on a chunk is a model error, not a crash
            failure = classify(exc, provider)
            failure.__cause__ = exc
        finally:
            # Close the generator chain here, in this task, outermost first — not later from a
            # garbage-collector hook (a stray task on asyncio, a ResourceWarning on trio).
            await _close_all(pipeline)
        if failure is not None:
            # Raised out here, not in the handler: the handled exception would become the
            # failure's ``__context__`` again, unredacted.
            raise Redactor(secrets()).error(failure)

    iterator = events()
    try:
        yield iterator
    finally:
        with shielded(close_timeout, f"closing the {provider} stream"):
            await _close(holder, close_timeout)
            await iterator.aclose()  # type: ignore[attr-defined]


async def _guarded(
    first: Any, chunks: AsyncIterator[Any], provider: str, idle: float
) -> AsyncGenerator[Any, None]:
    """Yield ``first`` then the rest of ``chunks``, turning transport errors into `ModelError`
    (an idle timeout is retryable: `provider_stream` retries it while nothing was streamed)."""
    yield first
    try:
        async for chunk in chunks:
            yield chunk
    except ModelError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "APITimeoutError" or isinstance(exc, httpx2.TimeoutException):
            raise ModelError(
                f"{provider} sent nothing for {idle:g}s (idle timeout)", retryable=True
            ) from exc
        raise classify(exc, provider) from exc
    finally:
        await _aclose(chunks)


async def _close_all(iterators: list[AsyncIterator[Any]]) -> None:
    """`_aclose` each of ``iterators`` in order (outermost first) and forget them."""
    while iterators:
        await _aclose(iterators.pop(0))


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """``aclose()`` an async generator (a no-op if it has finished, or is no generator).

    Cancellation: runs on the way out of `provider_stream`, inside its shielded, bounded close (or
    after the generator already ended, when closing it is a no-op).
    """
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _timeout_error(
    exc: BaseException, provider: str, waiting_for: str, seconds: float
) -> ModelError:
    if isinstance(exc, TimeoutError):
        return ModelError(f"{provider}: no {waiting_for} within {seconds:g}s", retryable=True)
    return classify(exc, provider)


async def _close(holder: list[SDKStream[Any]], timeout: float) -> None:
    while holder:
        sdk_stream = holder.pop()
        with shielded(timeout, "closing an HTTP response"):
            try:
                await sdk_stream.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                logger.debug("closing a stream failed", exc_info=True)


def unique_call_id(call_id: Any, used: set[str]) -> str:
    """``call_id`` made unique among the ``used`` ids of one response (and added to them): a
    server that gives several calls one id (or none) still gets each call run and answered on
    its own. A repeat gets a suffix (``call_0_2``); a missing id becomes ``call_<n>``."""
    base = call_id if isinstance(call_id, str) and call_id else f"call_{len(used)}"
    unique, suffix = base, 1
    while unique in used:
        suffix += 1
        unique = f"{base}_{suffix}"
    used.add(unique)
    return unique


def token_count(value: Any) -> int | None:
    """A token count as a server gave it; None when it gave none (unknown is not zero)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_increment(previous: Usage, total: Usage) -> tuple[Usage | None, Usage]:
    """What the running totals ``total`` add to ``previous``: the increment (None when they add
    nothing), and the running totals to remember. A count ``total`` does not give is unknown
    in the increment and stays as it was; servers that repeat their totals (several usage
    chunks, Anthropic's ``message_delta``) are so never counted twice."""
    increments: dict[str, int | None] = {}
    running: dict[str, int | None] = {}
    for name in _USAGE_FIELDS:
        now, before = getattr(total, name), getattr(previous, name)
        if now is None or now == before:
            increments[name], running[name] = None, before
        else:
            increments[name], running[name] = now - (before or 0), now
    increment = Usage(**increments)
    return (increment if increment.known else None), Usage(**running)


_USAGE_FIELDS = tuple(Usage.model_fields)


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _short(exc: BaseException) -> str:
    return _shorten(str(exc) or type(exc).__name__)


def _shorten(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."
