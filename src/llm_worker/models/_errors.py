"""What went wrong, in the providers' words: failures classified into `ModelError`s.

Invariants:
* Failures are classified by what the server said, not by how the connection ended: an HTTP
  error status whose body was cut stays that status (`note_status`); a 400 — as a status or
  stated in an error object — is never retried; a transient status or error type
  (`RETRYABLE_STATUS`, `TRANSIENT_ERROR_CODES`, `STREAM_ERROR_STATUS`) is.
* `classify` is total: any exception becomes a `ModelError` (``retryable`` set when it is), with
  the original as its ``__cause__``; a `ModelError` passes through unchanged.
* An HTTP error's message is the server's own (`server_message`), shortened to 300 characters.
* Nothing here does I/O except `note_status`, an HTTP response hook that only records a status.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from typing import Any

import httpx2

from .._error_base import LLMWorkerError
from ..errors import ModelError

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

#: The HTTP status an error *type* reported inside a stream stands for (Anthropic's error types).
STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class MissingCredentials(LLMWorkerError, ValueError):
    """A provider needs an API key that is neither given nor in its environment variable."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable  # the environment variable that would hold the key


class ServerReportedError(Exception):
    """An error the server reported inside a stream that began with HTTP 200 (``body``: what it
    said); `classify` makes it a non-retryable `ModelError`."""

    def __init__(self, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.body = body


def server_reported_error(error: Any) -> ServerReportedError:
    """The `ServerReportedError` for an error object (OpenAI's, Anthropic's, or a bare string)."""
    message = server_message(error)
    return ServerReportedError(message or "error event", error)


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
    elif name == "APIError" or isinstance(exc, ServerReportedError):  # reported inside the stream
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
    seconds or as an HTTP date (a date in the past is 0), else a Google ``RetryInfo`` in the
    error body (`body_retry_delay`); None when there is none or it is garbage. ``now`` (a Unix
    time) is for tests."""
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    from_headers = None if headers is None else _header_retry_after(headers, now)
    if from_headers is not None:
        return from_headers
    body = getattr(exc.__cause__, "body", None) or getattr(exc, "body", None)
    return body_retry_delay(body)


def body_retry_delay(body: Any) -> float | None:
    """The delay a Google API error body asks for: ``error.details[].retryDelay`` of its
    ``google.rpc.RetryInfo`` (``"27s"``, ``"1.5s"``); None when there is none or it is garbage.
    A list of error objects (Gemini's OpenAI-compatible layer) is read by its first."""
    if isinstance(body, list) and body:
        body = body[0]
    error = _field(body, "error")
    details = _field(error, "details")
    if not isinstance(details, list):
        return None
    for detail in details:
        delay = _field(detail, "retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                continue
            if seconds == seconds and seconds != float("inf"):  # not NaN, not infinite
                return max(seconds, 0.0)
    return None


def _header_retry_after(headers: Any, now: float | None) -> float | None:
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


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _short(exc: BaseException) -> str:
    return _shorten(str(exc) or type(exc).__name__)


def _shorten(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "..."
