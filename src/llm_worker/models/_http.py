"""Shared plumbing of the HTTP providers: retries, timeouts, and leak-free closing.

Invariants:
* The SDKs' own retries are off (``max_retries=0``): this module retries, so back-off is a
  cancellation point of the run, each retry is reported as a `Retrying` event, ``Retry-After`` is
  honoured, and there is never a retry of a retry.
* A request is retried only while no content has reached the caller: usage reports that come
  before the first content event are held back (and dropped if the request is retried), and a
  transient failure — an HTTP error, a dropped connection, an error event, a retryable
  `StreamError`, a body that ends before it began — is retried up to that point. Once content
  has reached the caller, a failure is a `ModelError` (with everything streamed kept by the
  worker), never a silent re-generation. An empty 200 body is a transient failure, never a
  silently empty answer.
* Whatever happens — normal end, error, timeout, cancellation — the SDK stream and its HTTP
  response are closed in a shielded, time-bounded block before the context manager exits, so the
  connection goes back to the pool or is closed, never leaked.
* Every async generator on the stream path is finished in the task that iterated it (closed
  outermost first on the way out), never left to the garbage collector, which would finalise it
  in a stray task (asyncio) or warn (trio). `SSEResponseStream` reads a raw response that way;
  the SDKs' own ``AsyncStream`` does not (see there).
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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx2

from ..cancel import shielded
from ..errors import ModelError
from ..events import Retrying, StreamError, StreamEvent, UsageUpdate

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


class SSEResponseStream:
    """An `SDKStream` over a raw streamed ``httpx2.Response``: each SSE event's JSON payload.

    Use it with the SDK's ``with_raw_response`` (the SDK still builds and sends the request and
    raises its typed errors for an HTTP error status); it replaces the SDK's ``AsyncStream``,
    which (openai 3.57) stops at ``[DONE]`` without closing the generator chain it reads through,
    leaving four async generators per request to the garbage collector — each finalised in a
    stray task on asyncio (after the run returned: §2.2.9) and reported as a ResourceWarning on
    trio — and which builds a pydantic object per chunk (about 75 µs each, against about 3 µs
    for ``json.loads``).

    What compatible servers really send is accepted: ``data:`` with or without its space, LF,
    CRLF or CR line endings, comment lines (``: keep-alive``, ``: OPENROUTER PROCESSING``),
    ``event:`` / ``id:`` / ``retry:`` lines, and a last event the body ends without its blank
    line. A server that ignores ``stream: true`` and answers ``Content-Type: application/json``
    gets its whole body parsed and yielded as one payload (the converters recognise a complete
    response object); one whose JSON body is really SSE is read as SSE.

    Invariants: after ``[DONE]`` the body is read to its end (at most ``drain_timeout`` seconds),
    so every layer's generator finishes normally and the connection goes back to the pool; with
    ``report_done`` the marker `SSE_DONE` is yielded then, so a converter can tell a finished
    stream from one that was cut. An ``error`` event (or any payload with a non-empty ``"error"``
    key) is drained the same way and raised as `StreamErrorEvent`; with ``raise_errors=False``
    an error whose payload is a JSON object is yielded like any payload instead, for a converter
    that reports errors itself. A payload that is not JSON raises ``ValueError``; transport
    errors come out as ``httpx2`` exceptions. Iterate it once. Cancellation: an await inside the
    body read is where a cancellation lands, and it unwinds every layer there; `close` releases
    the connection.
    """

    def __init__(
        self,
        response: httpx2.Response,
        *,
        drain_timeout: float = 0.1,
        report_done: bool = False,
        raise_errors: bool = True,
    ) -> None:
        self.response = response
        self.drain_timeout = drain_timeout
        self.report_done = report_done
        self.raise_errors = raise_errors
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
        with anyio.move_on_after(self.drain_timeout):
            async for _ in raw:
                pass

    def _is_json_body(self) -> bool:
        content_type = self.response.headers.get("content-type", "").lower()
        media = content_type.split(";", 1)[0].strip()
        return media == "application/json" or media.endswith("+json")

    async def _whole_body(self) -> AsyncGenerator[Any, None]:
        """A ``application/json`` answer: the body as one payload (or as SSE, if it is SSE)."""
        raw = self._bytes = self.response.aiter_bytes()
        body = b"".join([chunk async for chunk in raw])
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
        partial = b""  # an unfinished line
        data: list[str] = []
        event = ""
        skip_lf = False
        ended = False
        while not ended:
            try:
                chunk = await anext(raw)
            except StopAsyncIteration:  # end the last line and event, if the body did not
                chunk, ended = b"\n\n", True
            if skip_lf and chunk[:1] == b"\n":
                chunk = chunk[1:]
            skip_lf = chunk[-1:] == b"\r"
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = (partial + chunk).split(b"\n") if partial else chunk.split(b"\n")
            partial = lines.pop()
            for line in lines:
                if line:
                    name, _, value = line.partition(b":")
                    if name == b"data":
                        data.append(value[1:].decode() if value[:1] == b" " else value.decode())
                    elif name == b"event":
                        event = value.strip().decode()
                    continue
                if not data:
                    event = ""
                    continue
                text = data[0] if len(data) == 1 else "\n".join(data)
                data = []
                if text.strip() == "[DONE]":
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
                    raise StreamErrorEvent(text[:300] or "error event", text) from None
                if type(payload) is not dict:
                    raise ValueError(f"a stream event is not a JSON object: {text[:100]!r}")
                if (event == "error" or payload.get("error")) and self.raise_errors:
                    await self._drain(raw)
                    raise _error_event(payload.get("error", payload))
                event = ""
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
    repeat the status and, for some servers, nothing else).
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
    elif name in ("APIConnectionError", "APITimeoutError") or isinstance(
        exc, OSError | httpx2.TransportError
    ):
        error = ModelError(f"{provider} could not be reached: {_short(exc)}", retryable=True)
    elif name == "APIError" or isinstance(exc, StreamErrorEvent):  # reported inside the stream
        body = getattr(exc, "body", None)
        kind = _field(body, "type")
        equivalent = STREAM_ERROR_STATUS.get(kind) if isinstance(kind, str) else None
        what = f" ({kind})" if equivalent else ""
        error = ModelError(
            f"{provider} reported an error mid-stream{what}: {_short(exc)}",
            retryable=equivalent in RETRYABLE_STATUS or transient_error(body),
        )
    else:
        error = ModelError(f"{provider} stream failed: {name}: {_short(exc)}")
    error.__cause__ = exc
    return error


def transient_error(error: Any) -> bool:
    """Whether an error object from inside a stream says "try again": a transient ``type`` or
    ``code`` (``server_error``, ``rate_limit_exceeded``, …) or a retryable HTTP status given as
    its ``code`` or ``status_code`` (OpenRouter's ``{"code": 502}``)."""
    if not isinstance(error, dict):
        return False
    for key in ("type", "code", "status_code", "status"):
        value = error.get(key)
        if isinstance(value, str):
            if value in TRANSIENT_ERROR_CODES:
                return True
            if value.isdigit():
                value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value in RETRYABLE_STATUS:
            return True
    return False


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


@asynccontextmanager
async def provider_stream(
    open_stream: Callable[[], Awaitable[SDKStream[Any]]],
    convert: Callable[[AsyncIterator[Any]], AsyncIterator[StreamEvent]],
    *,
    provider: str,
    retry: RetryPolicy,
    timeouts: Timeouts,
    close_timeout: float = 5.0,
) -> AsyncIterator[AsyncIterator[StreamEvent]]:
    """Open an SDK stream lazily with retries; yield an iterator of normalised events.

    ``open_stream()`` sends the request and returns the SDK's stream (after the response headers
    arrived); ``convert(chunks)`` maps the SDK's chunk objects to `StreamEvent`s.

    Retries (see the module invariants): until the first content event — any event but a
    `UsageUpdate` — a transient failure closes the response and sends the request again;
    usage reported before it is held back meanwhile, so a retried attempt is not counted. A
    retryable `StreamError` then is a transient failure too (on the last attempt it is passed
    on, for the worker to raise).

    Cancellation: at any await — opening, back-off, waiting for an event — the stream is closed
    (shielded, at most ``close_timeout`` seconds) and the cancellation propagates.
    """
    holder: list[SDKStream[Any]] = []

    async def events() -> AsyncIterator[StreamEvent]:
        pipeline: list[AsyncIterator[Any]] = []  # this attempt's iterators, outermost first
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
                        if error is exc:
                            raise
                        raise error from exc
                    delay = retry.delay(attempt, retry_after(exc))
                    logger.info("%s: %s; retrying in %.2fs", provider, error, delay)
                    yield Retrying(attempt=attempt, delay=delay, error=str(error))
                    await anyio.sleep(delay)
                    continue
                break
            for event in held:
                yield event
            if first is None:
                return
            yield first
            async for event in converted:
                yield event
        except ModelError:
            raise
        except Exception as exc:  # a converter choking on a chunk is a model error, not a crash
            raise classify(exc, provider) from exc
        finally:
            # Close the generator chain here, in this task, outermost first — not later from a
            # garbage-collector hook (a stray task on asyncio, a ResourceWarning on trio).
            await _close_all(pipeline)

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


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _short(exc: BaseException) -> str:
    return _shorten(str(exc) or type(exc).__name__)


def _shorten(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."
