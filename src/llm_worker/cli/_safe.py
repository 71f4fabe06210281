"""Terminal-safe text: the one place where text from outside becomes something the CLI prints.

Invariants:
* Everything the CLI prints that it did not write itself — a model's or a tool's text, a
  provider's or server's error, a stored session, an exception's message, a log record —
  goes through `visible` (whole strings), a `StreamFilter` (streamed deltas) or `json_safe`
  (JSON lines) on its way out. Nothing else in the CLI writes such text.
* Output never holds a control character other than ``\\n`` and ``\\t`` (C0, DEL, C1 — so no
  ESC, no CSI, no BEL, no bare ``\\r`` that would overwrite a line), a bidi embedding, override
  or isolate (U+202A–U+202E, U+2066–U+2069: they make text read other than it is) or a lone
  surrogate: each is shown as its escape (``\\x1b``, ``\\u202e``, ``\\udcff``), so an escape
  sequence from a model is seen, never executed. ``\\r\\n`` is a line break.
* Characters are judged one at a time, so a sequence split across two deltas is caught like a
  whole one; a delta ending in ``\\r`` is held back until the next shows whether ``\\n`` follows.
* The values of the environment's secrets (``*_API_KEY``, ``*_TOKEN``, … of 8 characters or
  more) are printed as ``[redacted]``, in streamed text too: a delta ending in the start of a
  secret is held back until the next one settles it. (``--json`` redacts within each line.)
* JSON lines stay the same document for a parser: `json_safe` only turns C1, DEL, bidi and
  surrogate characters (which JSON may carry raw) into ``\\uXXXX`` escapes. Rich never reads
  any of this text as markup: views print it as `rich.text.Text` or with ``markup=False``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

REDACTED = "[redacted]"
_SECRET_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
_MIN_SECRET = 8

# C0 but \t and \n, DEL, C1, bidi embeddings/overrides/isolates, surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_IN_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"  # \t and \n too
)
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def secrets() -> tuple[str, ...]:
    """The values of the environment's secret variables, longest first."""
    found = {
        value
        for name, value in os.environ.items()
        if name.upper().endswith(_SECRET_SUFFIXES) and len(value) >= _MIN_SECRET
    }
    return tuple(sorted(found, key=len, reverse=True))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x0A:
        return "\\n"
    if code == 0x09:
        return "\\t"
    if code == 0x0D:
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _redact(text: str, hidden: Sequence[str]) -> str:
    for secret in hidden:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def visible(text: str, *, one_line: bool = False) -> str:
    """``text`` safe to print: controls, bidi overrides and surrogates escaped, secrets hidden.

    ``one_line``: line breaks and tabs are escaped too (table cells, one-line messages).
    """
    text = _redact(text, secrets()).replace("\r\n", "\n")
    return (_UNSAFE_IN_LINE if one_line else _UNSAFE).sub(_escape, text)


def json_safe(line: str) -> str:
    """A JSON document with secrets hidden and C1, DEL, bidi and surrogates as ``\\u`` escapes.

    Parsed, it is the same document (but for the secrets): JSON carries those characters raw
    inside strings only, where ``\\uXXXX`` means the same character.
    """
    import json  # here, not at import: --help does not load it

    for secret in secrets():
        line = line.replace(secret, REDACTED)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret:
            line = line.replace(escaped, REDACTED)
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", line)


class StreamFilter:
    """`visible` for text that arrives in pieces: `feed` each delta, `end` when it stops.

    What `feed` returns is safe to write at once; it may hold back a ``\\r`` or the start of a
    secret at the end of a delta until the next one (or `end`) settles it.
    """

    def __init__(self) -> None:
        self._secrets = secrets()
        self._held = ""

    def feed(self, text: str) -> str:
        buffer = _redact(self._held + text, self._secrets)
        keep = self._unsettled(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return self._clean(buffer[: len(buffer) - keep])

    def end(self) -> str:
        """Whatever was held back, made safe: the stream is over."""
        rest, self._held = self._held, ""
        return self._clean(rest)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def _unsettled(self, buffer: str) -> int:
        """How many trailing characters the next delta may still change."""
        keep = 1 if buffer.endswith("\r") else 0
        for secret in self._secrets:
            for length in range(min(len(secret) - 1, len(buffer)), keep, -1):
                if buffer.endswith(secret[:length]):
                    keep = length
                    break
        return keep

    @staticmethod
    def _clean(text: str) -> str:
        return _UNSAFE.sub(_escape, text.replace("\r\n", "\n"))


def valid_text(text: str) -> str:
    """Text read from the command line or stdin, with what is not Unicode replaced by U+FFFD.

    Python hands undecodable argument bytes over as lone surrogates, which no model request
    and no database can encode.
    """
    if not re.search("[\ud800-\udfff]", text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
