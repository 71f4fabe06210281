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
* A provider module only translates (`request_options`, its `HistoryConversion`, its stream
  translation): building the body (`_request`), sending, retrying, reading SSE and closing are
  this skeleton's. The SDK's own request building (a per-message transform that never yields)
  is bypassed: the body we built goes out as it is.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, ClassVar, Self

import anyio.lowlevel
import httpx2

from ..events import StreamEvent
from ..output import OutputSpec
from ._base import ModelRequest
from ._errors import MissingCredentials, note_status
from ._redact import client_secrets
from ._request import BodyBuilder, HistoryConversion, convert_all
from ._sse import MAX_EVENT_BYTES, SSEResponseStream
from ._transport import RetryPolicy, SDKStream, Timeouts, provider_stream

#: The SDKs' (Stainless) header for "give me the raw response, unread"; the body is ours, built.
_RAW_JSON_HEADERS = {"X-Stainless-Raw-Response": "raw", "Content-Type": "application/json"}


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

    A subclass sets ``provider`` (or an instance does), `path`, `history_key`, `stream_class`
    and `_sse_options` (how its stream reads SSE), and implements `request_options` (the body
    but its history), `conversion` (its history, as a `HistoryConversion`) and `_translate` (its
    stream translation). The body is built by `build_body` — each history group converted once
    — and sent through the SDK's client (auth, headers, typed HTTP errors) as it is.

    Cancellation: ``stream()`` does no I/O; everything happens while iterating, and leaving the
    ``async with`` closes the HTTP response (shielded, bounded) so the connection is released.
    `aclose` closes a client built here (a cancellation then may leave it half closed).
    """

    provider: str
    model: str
    retry: RetryPolicy
    timeouts: Timeouts
    max_event_bytes: int = MAX_EVENT_BYTES
    #: Where the request goes, the body key of its history list, the SDK's stream class.
    path: ClassVar[str]
    history_key: ClassVar[str]
    stream_class: ClassVar[type[Any]]
    #: Keyword arguments of `SSEResponseStream` for this provider's wire protocol.
    _sse_options: ClassVar[dict[str, Any]] = {}
    #: Whether the API constrains a response's text to a JSON schema (`output_options` asks
    #: for it); False: structured output comes through the final-answer tool.
    native_output: ClassVar[bool] = False

    #: The SDK's client class and its HTTP client class; the variables for the key and endpoint.
    sdk_client: ClassVar[Callable[..., Any]]
    sdk_http_client: ClassVar[Callable[..., Any]]
    key_variable: ClassVar[str]
    base_url_variable: ClassVar[str]

    def __init__(
        self,
        model: str,
        *,
        client: Any = None,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclass, safe to share
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen dataclass, safe to share
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        """Use ``client`` (the caller's) or build one from ``api_key`` and ``base_url`` (else the
        provider's environment variables). Raises `MissingCredentials` when there is no client
        and no key."""
        self.model = model
        self.retry = retry
        self.timeouts = timeouts
        self.max_event_bytes = max_event_bytes
        self._owns_client = client is None
        if client is None:
            key = api_key or os.environ.get(self.key_variable)
            if not key:
                raise MissingCredentials(self._missing_key(), variable=self.key_variable)
            client = self.sdk_client(
                api_key=key,
                base_url=base_url or os.environ.get(self.base_url_variable) or None,
                max_retries=0,
                timeout=self.timeouts.for_httpx(),
                http_client=self.sdk_http_client(**http_client_options(self.timeouts)),
            )
        self.client = client
        # The same client (connection pool and all) with its retries off: ours run instead.
        self._requests = client.with_options(max_retries=0)
        self._bodies = BodyBuilder()

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def _missing_key(self) -> str:
        return f"{self.name} needs an API key: set {self.key_variable} or pass api_key="

    def request_path(self) -> str:
        """Where the request goes, relative to the client's base URL (`path`, unless the
        provider's path names the model)."""
        return self.path

    def request_options(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body for ``request`` but its history (pure)."""
        raise NotImplementedError

    def output_options(self, options: dict[str, Any], output: OutputSpec) -> dict[str, Any]:
        """``options`` (`request_options`' body) with ``output`` asked for, in this API's terms.

        The one place a provider translates structured output: ``native`` mode names the schema
        the response's text must match (``response_format``, ``text.format``, Gemini's
        ``generationConfig.responseSchema``), ``tool`` mode may force a tool call (the
        final-answer tool is already among ``tools``). The default asks for nothing more.
        """
        return options

    def conversion(self, request: ModelRequest) -> HistoryConversion:
        """How this API's history list is built from ``request.history``."""
        raise NotImplementedError

    def body_options(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body for ``request`` but its history: `request_options`, then
        `output_options` when the request asks for a structured answer (pure)."""
        options = self.request_options(request)
        if request.output is not None:
            options = self.output_options(options, request.output)
        return options

    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        """The whole JSON body for ``request`` (pure): what `stream` sends, as a dict."""
        history = convert_all(request.history, self.conversion(request))
        return {**self.body_options(request), self.history_key: history}

    def _translate(self, payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
        """This API's stream payloads (parsed JSON) as `StreamEvent`s."""
        raise NotImplementedError

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream one turn (see `Model.stream`); nothing is built or sent until iterated.

        The body is built on first use (each history group converted once across turns,
        yielding to the loop as it goes) and sent by the SDK's client, which raises its typed
        errors for an HTTP error status; the body is read by `SSEResponseStream` rather than the
        SDK's ``AsyncStream`` (which leaves its readers to the garbage collector and builds an
        object per event).
        Cancellation: at any await (opening, back-off, between events) the response is closed,
        shielded and bounded, before the cancellation propagates.
        """
        options = self.body_options(request)
        conversion = self.conversion(request)
        body: bytes | None = None

        async def open_stream() -> SDKStream[Any]:
            nonlocal body
            if body is None:  # built once, even if the request is retried
                body = await self._bodies.build(
                    options, self.history_key, request.history, conversion
                )
            # The SDK prepares and sends without yielding (~0.5 ms): a Stop due while the body
            # was built is heard first, before anything is sent.
            await anyio.lowlevel.checkpoint()
            raw = await self._requests.post(  # returns once the response headers arrived
                self.request_path(),
                cast_to=object,
                content=body,
                options={"headers": _RAW_JSON_HEADERS},
                stream=True,
                stream_cls=self.stream_class,
            )
            return SSEResponseStream(
                raw.http_response, max_event_bytes=self.max_event_bytes, **self._sse_options
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
