"""The Gemini API's HTTP client: what `HTTPModel` needs of an SDK client, over ``httpx2``.

The official ``google-genai`` SDK is not used on the request path (why: `gemini`'s docstring);
this is the little of a client the skeleton uses — ``post`` a prebuilt body and get the streamed
response back unread, ``with_options``, ``close``, ``api_key`` and ``base_url`` — and nothing else.

Invariants:
* ``post`` returns once the response headers arrived, with the body unread. An HTTP error status
  is raised as `_StatusError` carrying the parsed error body (``{"error": {"code",
  "message", "status", "details"}}``), read up to `MAX_ERROR_BODY` bytes; the response is closed
  (shielded, bounded) before the error leaves, and so on a cancellation while it is read.
* The key goes in the ``x-goog-api-key`` header (never in the URL, where logs would keep it).
* There are no retries here: `provider_stream` owns them (``with_options`` changes nothing).
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any, Self

import httpx2

from ..cancel import shielded

#: The Gemini API's endpoint and version, as the SDK has them (``GOOGLE_GEMINI_BASE_URL``).
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
#: The most of an error body that is read (a proxy's error page can be large).
MAX_ERROR_BODY = 64 * 1024
_CLOSE_TIMEOUT = 5.0


class _StatusError(Exception):
    """An HTTP error status from the Gemini API (`classify` makes it a `ModelError`): the
    ``status_code``, the ``response`` (its headers hold any ``Retry-After``) and the parsed
    ``body`` (its ``RetryInfo`` holds Gemini's retry delay)."""

    def __init__(self, message: str, *, response: httpx2.Response, body: Any) -> None:
        super().__init__(message)
        self.status_code = response.status_code
        self.response = response
        self.body = body


class RawResponse:
    """A streamed response, unread: what the skeleton hands to `SSEResponseStream`."""

    __slots__ = ("http_response",)

    def __init__(self, http_response: httpx2.Response) -> None:
        self.http_response = http_response


class GeminiClient:
    """Posts prebuilt JSON bodies to the Gemini API and returns the streamed responses.

    ``http_client`` is used as it is (and closed by `close`); without one a plain
    ``httpx2.AsyncClient`` with ``timeout`` is built. Cancellation: `post` may be cancelled at
    any await; a response it opened is closed (shielded, bounded) before the cancellation goes on.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 0,
        timeout: httpx2.Timeout | float | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        del max_retries  # nothing retries here; accepted for the skeleton's keyword arguments
        self.api_key = api_key
        self.base_url = httpx2.URL((base_url or DEFAULT_BASE_URL).rstrip("/") + "/")
        self.auth_headers = {"x-goog-api-key": api_key}
        self._http = http_client if http_client is not None else httpx2.AsyncClient(timeout=timeout)

    def with_options(self, **options: Any) -> Self:
        """This client: it has no retries to turn off (`provider_stream` retries)."""
        return self

    async def post(
        self,
        path: str,
        *,
        content: bytes,
        options: dict[str, Any] | None = None,
        **ignored: Any,
    ) -> RawResponse:
        """POST ``content`` to ``path`` (relative to the base URL); the response unread.

        Raises `_StatusError` for an HTTP error status, ``httpx2`` errors for transport
        failures. Cancellation: see the class docstring.
        """
        headers = {"content-type": "application/json", **self.auth_headers}
        url = self.base_url.join(path.lstrip("/"))
        request = self._http.build_request("POST", url, content=content, headers=headers)
        response = await self._http.send(request, stream=True)
        if response.status_code < 400:
            return RawResponse(response)
        try:
            body = await _error_body(response)
        finally:
            with shielded(_CLOSE_TIMEOUT, "closing a Gemini error response"):
                await response.aclose()
        message = f"HTTP {response.status_code}"
        raise _StatusError(message, response=response, body=body)

    async def close(self) -> None:
        """Close the HTTP client (its connections)."""
        await self._http.aclose()


async def _error_body(response: httpx2.Response) -> Any:
    """The error body, parsed if it is JSON (else its text), read up to `MAX_ERROR_BODY` bytes."""
    parts: list[bytes] = []
    size = 0
    async with aclosing(response.aiter_bytes()) as chunks:  # closed here, not by the collector
        async for part in chunks:
            parts.append(part)
            size += len(part)
            if size >= MAX_ERROR_BODY:
                break
    raw = b"".join(parts)[:MAX_ERROR_BODY]
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
