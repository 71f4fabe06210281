"""Shared plumbing of the HTTP providers: retries, timeouts, and leak-free closing.

Invariants:
* The SDKs' own retries are off (``max_retries=0``): this module retries, so back-off is a
  cancellation point of the run, each retry is reported as a `Retrying` event, ``Retry-After`` is
  honoured, and there is never a retry of a retry.
* A request is retried only before its first event was yielded: once content has reached the
  caller, a failure is a `ModelError` (with everything streamed kept by the worker), never a
  silent re-generation.
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

import functools
import json
import logging
import random
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx2

from ..cancel import shielded
from ..errors import ModelError
from ..events import Retrying, StreamEvent

logger = logging.getLogger("llm_worker.models")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
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

    Invariants: after ``[DONE]`` the body is read to its end (at most ``drain_timeout`` seconds),
    so every layer's generator finishes normally and the connection goes back to the pool; an
    ``error`` event (or any payload with an ``"error"`` key) is drained the same way and raised as
    `StreamErrorEvent`; a payload that is not JSON raises ``ValueError``; transport errors come
    out as ``httpx2`` exceptions. Iterate it once. Cancellation: an await inside the body read is
    where a cancellation lands, and it unwinds every layer there; `close` releases the connection.
    """

    def __init__(self, response: httpx2.Response, *, drain_timeout: float = 0.1) -> None:
        self.response = response
        self.drain_timeout = drain_timeout
        self._bytes: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return self._payloads()

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

    async def _payloads(self) -> AsyncGenerator[Any, None]:
        raw = self._bytes = self.response.aiter_bytes()
        loads = json.loads
        partial = b""  # an unfinished line
        data: list[str] = []
        event = ""
        skip_lf = False
        async for chunk in raw:
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
                if text == "[DONE]":
                    await self._drain(raw)
                    return
                try:
                    payload = loads(text)
                except ValueError:
                    if event != "error":
                        raise
                    payload = {"error": {"message": text}}
                if type(payload) is not dict:
                    raise ValueError(f"a stream event is not a JSON object: {text[:100]!r}")
                if event == "error" or payload.get("error"):
                    error = payload.get("error", payload)
                    message = error.get("message") if isinstance(error, dict) else None
                    await self._drain(raw)
                    raise StreamErrorEvent(str(message or error or "error event"), error)
                event = ""
                yield payload


def classify(exc: BaseException, provider: str) -> ModelError:
    """Turn an SDK or transport exception into a `ModelError` (``retryable`` set when it is)."""
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
        message = f"{provider} answered HTTP {status}: {_short(exc)}"
        error = ModelError(message, status_code=status, retryable=status in RETRYABLE_STATUS)
    elif name in ("APIConnectionError", "APITimeoutError") or isinstance(
        exc, OSError | httpx2.TransportError
    ):
        error = ModelError(f"{provider} could not be reached: {_short(exc)}", retryable=True)
    elif name == "APIError" or isinstance(exc, StreamErrorEvent):  # reported inside the stream
        # Retryable when the error's type says transient (Anthropic's ``overloaded_error``, …).
        kind = _field(getattr(exc, "body", None), "type")
        equivalent = STREAM_ERROR_STATUS.get(kind) if isinstance(kind, str) else None
        what = f" ({kind})" if equivalent else ""
        error = ModelError(
            f"{provider} reported an error mid-stream{what}: {_short(exc)}",
            retryable=equivalent in RETRYABLE_STATUS,
        )
    else:
        error = ModelError(f"{provider} stream failed: {name}: {_short(exc)}")
    error.__cause__ = exc
    return error


def retry_after(exc: BaseException) -> float | None:
    """The ``Retry-After`` (or ``retry-after-ms``) delay an HTTP error carries, in seconds."""
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return float(ms) / 1000
        if (seconds := headers.get("retry-after")) is not None:
            return float(seconds)
    except (TypeError, ValueError):  # an HTTP date, or garbage: fall back to back-off
        return None
    return None


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

    Cancellation: at any await — opening, back-off, waiting for an event — the stream is closed
    (shielded, at most ``close_timeout`` seconds) and the cancellation propagates.
    """
    holder: list[SDKStream[Any]] = []

    async def events() -> AsyncIterator[StreamEvent]:
        attempt = 0
        while True:
            attempt += 1
            try:
                with anyio.fail_after(timeouts.first_event):
                    sdk_stream = await open_stream()
                    holder.append(sdk_stream)
                    chunks = sdk_stream.__aiter__()
                    first = await anext(chunks)
            except StopAsyncIteration:
                return
            except Exception as exc:
                error = _timeout_error(exc, provider, "first event", timeouts.first_event)
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
        guarded = _guarded(first, chunks, provider, timeouts.idle)
        converted = convert(guarded)
        try:
            async for event in converted:
                yield event
        except ModelError:
            raise
        except Exception as exc:  # a converter choking on a chunk is a model error, not a crash
            raise classify(exc, provider) from exc
        finally:
            # Close the generator chain here, in this task, outermost first — not later from a
            # garbage-collector hook (a stray task on asyncio, a ResourceWarning on trio).
            await _aclose(converted)
            await guarded.aclose()

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
    """Yield ``first`` then the rest of ``chunks``, turning transport errors into `ModelError`."""
    yield first
    try:
        async for chunk in chunks:
            yield chunk
    except ModelError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "APITimeoutError" or isinstance(exc, httpx2.TimeoutException):
            raise ModelError(f"{provider} sent nothing for {idle:g}s (idle timeout)") from exc
        raise classify(exc, provider) from exc
    finally:
        await _aclose(chunks)


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
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
