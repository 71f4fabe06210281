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
* Timeouts: ``connect`` and ``idle`` are the HTTP client's connect and read timeouts (a read
  timeout is exactly "no byte for ``idle`` seconds", checked where the bytes are read, at no extra
  cost per event); ``first_event`` bounds the time from sending the request to the first event.
"""

from __future__ import annotations

import logging
import random
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
    elif name in ("APIConnectionError", "APITimeoutError") or isinstance(exc, OSError):
        error = ModelError(f"{provider} could not be reached: {_short(exc)}", retryable=True)
    elif name == "APIError":  # an error reported inside the stream
        error = ModelError(f"{provider} reported an error mid-stream: {_short(exc)}")
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
    except Exception as exc:
        if type(exc).__name__ == "APITimeoutError":
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


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
