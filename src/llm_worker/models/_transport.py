"""The request → stream pipeline of every HTTP provider: retries, back-off, timeouts, closing.

Invariants:
* The SDKs' own retries are off (``max_retries=0``, see `_client`): this module retries, so
  back-off is a cancellation point of the run, each retry is reported as a `Retrying` event,
  ``Retry-After`` is honoured, and there is never a retry of a retry.
* A request is retried only while no content has reached the caller: usage reports that come
  before the first content event are held back (dropped if the request is retried, passed on
  before the error if it fails for good), and a transient failure — an HTTP error, a dropped
  connection, an error event, a retryable `StreamError`, a body that ends before it began — is
  retried up to that point. Once content has reached the caller, a failure is a `ModelError`
  (with everything streamed kept by the worker), never a silent re-generation. An empty 200 body
  is a transient failure, never a silently empty answer.
* Whatever happens — normal end, error, timeout, cancellation — the SDK stream and its HTTP
  response are closed in a shielded, time-bounded block before the context manager exits, so
  the connection goes back to the pool or is closed, never leaked.
* Every async generator on the stream path is finished in the task that iterated it (closed
  outermost first on the way out), never left to the garbage collector.
* No error text leaves this module with a credential in it: every `ModelError`, `StreamError`
  and `Retrying` of `provider_stream` is redacted (`Redactor`) against the client's secrets.
* Timeouts: ``connect`` and ``idle`` are the HTTP client's connect and read timeouts (a read
  timeout is exactly "no byte for ``idle`` seconds", checked where the bytes are read, at no
  extra cost per event); ``first_event`` bounds the time from sending the request to the first
  event.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx2

from ..cancel import shielded
from ..errors import ModelError
from ..events import Retrying, StreamError, StreamEvent, UsageUpdate
from ._errors import classify, retry_after
from ._redact import Redactor, no_secrets

logger = logging.getLogger("llm_worker.models")

T_co = TypeVar("T_co", covariant=True)


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
    """What the official SDKs' ``AsyncStream`` offers (and `SSEResponseStream`)."""

    def __aiter__(self) -> AsyncIterator[T_co]: ...
    async def close(self) -> None: ...


@asynccontextmanager
async def provider_stream(
    open_stream: Callable[[], Awaitable[SDKStream[Any]]],
    convert: Callable[[AsyncIterator[Any]], AsyncIterator[StreamEvent]],
    *,
    provider: str,
    retry: RetryPolicy,
    timeouts: Timeouts,
    close_timeout: float = 5.0,
    secrets: Callable[[], Iterable[str]] = no_secrets,
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
    request = _Request(open_stream, convert, provider, retry, timeouts, close_timeout, secrets)
    iterator = request.events()
    try:
        yield iterator
    finally:
        with shielded(close_timeout, f"closing the {provider} stream"):
            await request.close_response()
            await iterator.aclose()


class _Request:
    """One request and its attempts: the SDK stream open now and the iterators reading it.

    Invariants: at most one SDK stream is open at a time (an attempt's is closed before the next
    one opens); ``readers`` lists the open attempt's iterators outermost first, and is emptied
    (each closed, in that order) before a retry and on the way out of `events`.
    """

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[SDKStream[Any]]],
        convert: Callable[[AsyncIterator[Any]], AsyncIterator[StreamEvent]],
        provider: str,
        retry: RetryPolicy,
        timeouts: Timeouts,
        close_timeout: float,
        secrets: Callable[[], Iterable[str]],
    ) -> None:
        self.open_stream = open_stream
        self.convert = convert
        self.provider = provider
        self.retry = retry
        self.timeouts = timeouts
        self.close_timeout = close_timeout
        self.secrets = secrets
        self.response: SDKStream[Any] | None = None
        self.readers: list[AsyncIterator[Any]] = []

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        """The events of the first attempt that streams content (see `provider_stream`)."""
        failure: ModelError | None = None
        try:
            attempt = 0
            while True:
                attempt += 1
                held: list[StreamEvent] = []  # usage before the first content event
                try:
                    converted, first = await self._first_event(held, attempt)
                except Exception as exc:
                    error = _timeout_error(exc, self.provider, self.timeouts.first_event)
                    await self.close_readers()
                    await self.close_response()
                    if not error.retryable or attempt >= self.retry.max_attempts:
                        # The request is not sent again: what the server said it used counts.
                        for event in held:
                            yield event
                        if error is exc:
                            raise
                        raise error from exc
                    delay = self.retry.delay(attempt, retry_after(exc))
                    said = Redactor(self.secrets())(str(error))
                    logger.info("%s: %s; retrying in %.2fs", self.provider, said, delay)
                    yield Retrying(attempt=attempt, delay=delay, error=said)
                    await anyio.sleep(delay)
                    continue
                break
            for event in held:
                yield event
            if first is None:
                return
            yield Redactor(self.secrets()).event(first) if type(first) is StreamError else first
            async for event in converted:
                if type(event) is StreamError:
                    event = Redactor(self.secrets()).event(event)
                yield event
        except ModelError as exc:
            failure = exc
        except Exception as exc:  # a converter choking on a chunk is a model error, not a crash
            failure = classify(exc, self.provider)
            failure.__cause__ = exc
        finally:
            # Close the generator chain here, in this task, outermost first — not later from a
            # garbage-collector hook (a stray task on asyncio, a ResourceWarning on trio).
            await self.close_readers()
        if failure is not None:
            # Raised out here, not in the handler: the handled exception would become the
            # failure's ``__context__`` again, unredacted.
            raise Redactor(self.secrets()).error(failure)

    async def _first_event(
        self, held: list[StreamEvent], attempt: int
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent | None]:
        """Send the request; read up to its first content event (usage before it goes to
        ``held``). Returns the converted stream and that event (None: the stream ended).
        ``first_event`` bounds the time until the first chunk arrived."""
        with anyio.fail_after(self.timeouts.first_event):
            self.response = await self.open_stream()
            chunks = self.response.__aiter__()
            self.readers.append(chunks)
            try:
                first_chunk = await anext(chunks)
            except StopAsyncIteration:
                raise ModelError(
                    f"{self.provider} answered with an empty stream", retryable=True
                ) from None
        guarded = _guarded(first_chunk, chunks, self.provider, self.timeouts.idle)
        converted = self.convert(guarded)
        self.readers[:0] = [converted, guarded]
        async for event in converted:
            if isinstance(event, UsageUpdate):
                held.append(event)
                continue
            if (
                isinstance(event, StreamError)
                and event.retryable
                and attempt < self.retry.max_attempts
            ):
                raise ModelError(event.message, retryable=True)
            return converted, event
        return converted, None

    async def close_readers(self) -> None:
        """``aclose()`` each of this attempt's iterators, outermost first, and forget them.

        Cancellation: runs on the way out of `provider_stream`, inside its shielded, bounded
        close (or after the generators already ended, when closing them is a no-op).
        """
        while self.readers:
            await _aclose(self.readers.pop(0))

    async def close_response(self) -> None:
        """Close the open SDK stream, if any (shielded, at most ``close_timeout`` seconds)."""
        response, self.response = self.response, None
        if response is None:
            return
        with shielded(self.close_timeout, "closing an HTTP response"):
            try:
                await response.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                logger.debug("closing a stream failed", exc_info=True)


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


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """``aclose()`` an async generator (a no-op if it has finished, or is no generator)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _timeout_error(exc: BaseException, provider: str, seconds: float) -> ModelError:
    if isinstance(exc, TimeoutError):
        return ModelError(f"{provider}: no first event within {seconds:g}s", retryable=True)
    return classify(exc, provider)
