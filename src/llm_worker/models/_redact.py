"""No credential in an error text: `Redactor` and the secrets an SDK client sends.

Invariants:
* A secret shorter than `MIN_SECRET_LENGTH` is never redacted (local servers' placeholder keys);
  any longer one, and any fragment of it at least that long that starts it (a message cut by a
  length limit), is replaced by `REDACTED` wherever it appears.
* `Redactor.error` redacts a `ModelError` in place — message, failure cause, and every exception
  in its ``__cause__`` / ``__context__`` chain whose text shows a secret (replaced by a
  `RedactedError` saying the same, redacted); it never raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..cancel import Cause
from ..errors import ModelError
from ..events import StreamError

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


def no_secrets() -> Iterable[str]:
    """A client that sends no credential."""
    return ()
