"""The skeleton every HTTP provider shares: its SDK client, its stream, its closing.

Invariants:
* Every request the library sends goes through a copy of the client with ``max_retries=0`` —
  the client built here and a client the caller passed alike — because `provider_stream`
  retries: so back-off is a cancellation point of the run, every retry is reported as a
  `Retrying` event, ``Retry-After`` is honoured once, and a request is never retried twice
  over (an SDK's retries nested in ours would multiply the attempts and hide them). The copy
  shares the caller's connection pool; the caller's client itself is never changed.
* A client built here has the shared TLS context, the ``timeouts``' connect and idle limits and
  the `note_status` hook; it is closed by `aclose` (or by leaving ``async with model``). A
  client the caller passed is the caller's: it is never closed here.
* A provider module only translates (`request_params`, ``convert_tools``, ``convert_history``,
  its stream translation): sending, retrying, reading SSE and closing are this skeleton's.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx2

from ..events import StreamEvent
from ._base import ModelRequest
from ._errors import MissingCredentials, note_status
from ._redact import client_secrets
from ._sse import MAX_EVENT_BYTES, SSEResponseStream
from ._transport import RetryPolicy, SDKStream, Timeouts, provider_stream


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client the providers create: building one costs ~70 ms."""
    return httpx2.create_ssl_context()


def http_client_options(timeouts: Timeouts) -> dict[str, Any]:
    """Keyword arguments for the SDKs' ``DefaultAsyncHttpxClient``: the shared TLS context,
    ``timeouts`` and the `note_status` hook."""
    return {
        "verify": shared_ssl_context(),
        "timeout": timeouts.for_httpx(),
        "event_hooks": {"response": [note_status]},
    }


class HTTPModel:
    """The base of the HTTP providers: a `Model` over an official SDK's async client.

    A subclass sets ``provider`` (or an instance does), `_sse_options` (how its stream reads
    SSE), and implements `request_params` (the keyword arguments of the SDK's create call),
    `_create` (that call, on the no-retry client) and `_translate` (its stream translation).

    Cancellation: ``stream()`` does no I/O; everything happens while iterating, and leaving the
    ``async with`` closes the HTTP response (shielded, bounded) so the connection is released.
    `aclose` closes a client built here (a cancellation then may leave it half closed).
    """

    provider: str
    model: str
    retry: RetryPolicy
    timeouts: Timeouts
    max_event_bytes: int = MAX_EVENT_BYTES
    #: Keyword arguments of `SSEResponseStream` for this provider's wire protocol.
    _sse_options: ClassVar[dict[str, Any]] = {}

    def _connect(
        self,
        client: Any,
        *,
        api_key: str | None,
        base_url: str | None,
        sdk_client: Callable[..., Any],
        sdk_http_client: Callable[..., Any],
        key_variable: str,
        base_url_variable: str,
        missing_key: str,
    ) -> None:
        """Use ``client`` (the caller's) or build one; set `client` and the no-retry copy.

        Raises `MissingCredentials` (``missing_key``) when no client and no key is given.
        """
        self._owns_client = client is None
        if client is None:
            key = api_key or os.environ.get(key_variable)
            if not key:
                raise MissingCredentials(missing_key, variable=key_variable)
            client = sdk_client(
                api_key=key,
                base_url=base_url or os.environ.get(base_url_variable) or None,
                max_retries=0,
                timeout=self.timeouts.for_httpx(),
                http_client=sdk_http_client(**http_client_options(self.timeouts)),
            )
        self.client = client
        # The same client (connection pool and all) with its retries off: ours run instead.
        self._requests = client.with_options(max_retries=0)

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of the SDK's create call for ``request`` (pure)."""
        raise NotImplementedError

    def _create(self) -> Callable[..., Any]:
        """The SDK's ``with_raw_response.create`` for this API, on the no-retry client."""
        raise NotImplementedError

    def _translate(self, payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
        """This API's stream payloads (parsed JSON) as `StreamEvent`s."""
        raise NotImplementedError

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream one turn (see `Model.stream`); the request is built now, sent lazily.

        The SDK builds and sends the request and raises its typed errors for an HTTP error
        status; the body is read by `SSEResponseStream` rather than the SDK's ``AsyncStream``
        (which leaves its readers to the garbage collector and builds an object per event).
        Cancellation: at any await (opening, back-off, between events) the response is closed,
        shielded and bounded, before the cancellation propagates.
        """
        params = self.request_params(request)
        create = self._create()
        options = self._sse_options

        async def open_stream() -> SDKStream[Any]:
            raw = await create(**params)  # returns once the response headers arrived
            return SSEResponseStream(
                raw.http_response, max_event_bytes=self.max_event_bytes, **options
            )

        return provider_stream(
            open_stream,
            self._translate,
            provider=self.provider,
            retry=self.retry,
            timeouts=self.timeouts,
            secrets=lambda: client_secrets(self.client),
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this model built it (a client passed in is the caller's)."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
