"""How the fake server's streams are framed on the wire: SSE events and NDJSON lines.

Invariants:
* Every function here returns whole wire events: one SSE event including its blank-line
  terminator, or one NDJSON line including its newline. The server writes each as one HTTP chunk,
  so fault positions count events, never bytes.
* `split_events` is byte-exact: the events it returns join back to the body it was given.
* `LazyEvents` is re-iterable: each iteration starts a fresh generator, so one reply can be
  served any number of times and sends the same bytes each time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


def dumps(obj: Any) -> bytes:
    """Compact JSON, as providers send it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class LazyEvents:
    """A re-iterable event source: each iteration calls the factory for a fresh generator."""

    def __init__(self, factory: Callable[[], Iterator[bytes]], description: str) -> None:
        self._factory = factory
        self._description = description

    def __iter__(self) -> Iterator[bytes]:
        return self._factory()

    def __repr__(self) -> str:
        return f"<{self._description}>"


def sse_data(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def sse_crlf(obj: Any) -> bytes:
    """One ``data:`` event with CRLF line endings, as the Gemini API frames its stream."""
    return b"data: " + dumps(obj) + b"\r\n\r\n"


def sse_named(obj: Mapping[str, Any]) -> bytes:
    if "type" not in obj:  # a bare payload, such as a proxy's {"error": ...}
        return sse_data(obj)
    return b"event: " + str(obj["type"]).encode() + b"\n" + sse_data(obj)


def sse_item(item: bytes | str | Mapping[str, Any] | tuple[str, Any], *, named: bool) -> bytes:
    """One SSE event from what `Reply.sse` accepts (see there)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return b"".join(b"data: " + line.encode() + b"\n" for line in item.split("\n")) + b"\n"
    if isinstance(item, tuple):
        name, data = item
        payload = sse_item(data, named=False)
        return b"event: " + name.encode() + b"\n" + payload
    return sse_named(item) if named else sse_data(item)


def ndjson_line(line: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        return line.encode() + b"\n"
    return dumps(line) + b"\n"


_SSE_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def split_events(body: bytes, *, ndjson: bool = False) -> tuple[bytes, ...]:
    """Split a recorded body into wire events, byte-exactly (the parts join back to ``body``).

    SSE splits after each blank line, keeping whichever line ending the file uses; NDJSON splits
    after each newline.
    """
    if ndjson:
        return tuple(body.splitlines(keepends=True))
    events: list[bytes] = []
    start = 0
    for match in _SSE_BOUNDARY.finditer(body):
        events.append(body[start : match.end()])
        start = match.end()
    if start < len(body):
        events.append(body[start:])
    return tuple(events)


def malformed_event(content_type: str) -> bytes:
    """An event that is well framed but whose payload is not JSON, so a client parser fails."""
    if content_type == NDJSON:
        return b'{"malformed": tru\n'
    return b'data: {"malformed": tru\n\n'
