"""Scripted replies for `FakeProviderServer`: what to send, and how to misbehave while sending it.

Invariants:
* A reply is an immutable value. One instance may be served any number of times (as a default, or
  enqueued twice) and every serving sends the same bytes.
* A stream reply's ``events`` is re-iterable and yields whole wire events: one SSE event including
  its blank-line terminator, or one NDJSON line including its newline. The server writes each event
  as one HTTP chunk, so fault positions (``drop_after``, ``stall_after``, ``malformed_at``) count
  events, never bytes.
* Synthetic streams are generated lazily, event by event, so a 20 000-chunk stream costs nothing
  until it is served and then only per event sent. What each provider's stream looks like is
  `_fake_protocols`; how events are framed is `_fake_wire`.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any, TypedDict, Unpack

from ._fake_protocols import (
    anthropic_events,
    anthropic_tool_events,
    gemini_events,
    ollama_events,
    openai_chat_events,
    responses_events,
)
from ._fake_wire import NDJSON, SSE, LazyEvents, dumps, ndjson_line, split_events, sse_item

__all__ = [
    "CassetteReply",
    "ErrorReply",
    "JsonReply",
    "Reply",
    "StreamOptions",
    "StreamReply",
]

Headers = tuple[tuple[str, str], ...]

# Headers that frame the message; the server owns them, a reply may not set them.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class StreamOptions(TypedDict, total=False):
    """Keyword options shared by every stream constructor (see `StreamReply` for meanings)."""

    status: int
    headers: Mapping[str, str]
    delay: float
    drop_before_headers: bool
    pace: float
    drop_after: int
    stall_after: int
    stall: float | None
    malformed_at: int


def _headers(headers: Mapping[str, str] | None) -> Headers:
    pairs: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        lname, svalue = name.strip().lower(), str(value)
        if lname in _FRAMING:
            raise ValueError(f"header {name!r} frames the message; the server sets it itself")
        if not lname or any(c in lname + svalue for c in "\r\n") or ":" in lname:
            raise ValueError(f"invalid header {name!r}: {value!r}")
        try:
            (lname + svalue).encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name!r} is not latin-1: {value!r}") from None
        pairs.append((lname, svalue))
    return tuple(pairs)


def _check_index(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One scripted HTTP reply. Build replies with the static constructors below.

    Every reply can be delayed (``delay`` seconds before the status line, so a client can be
    cancelled while it opens the stream) or replaced by a dropped connection
    (``drop_before_headers``: the socket is closed right after the request was read).
    """

    status: int = 200
    headers: Headers = ()
    delay: float = 0.0
    drop_before_headers: bool = False

    def __post_init__(self) -> None:
        if type(self) is Reply:
            raise TypeError("build replies with a constructor, such as Reply.json(...)")
        if not 100 <= self.status <= 999:
            raise ValueError(f"invalid HTTP status {self.status}")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")

    # --- plain bodies -------------------------------------------------------------------------

    @staticmethod
    def json(
        body: Any,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop_before_headers: bool = False,
        content_type: str = "application/json",
    ) -> JsonReply:
        """A JSON body with a Content-Length (``bytes`` are sent as they are).

        Served for a streaming request, it is what a compatible server that ignores
        ``stream: true`` sends: the whole ``chat.completion`` / ``message`` / ``response``
        object at once. ``content_type`` labels the body (any bytes, under any type).
        """
        raw = body if isinstance(body, bytes) else dumps(body)
        return JsonReply(
            body=raw,
            status=status,
            headers=_headers(headers),
            delay=delay,
            drop_before_headers=drop_before_headers,
            content_type=content_type,
        )

    @staticmethod
    def error(
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        retry_after: float | datetime.datetime | None = None,
        message: str | None = None,
        delay: float = 0.0,
        content_type: str = "application/json",
    ) -> ErrorReply:
        """An HTTP error. Without ``body``, the body takes the shape of the endpoint that was hit.

        OpenAI's ``{"error": {"message", "type", "param", "code"}}``, Anthropic's
        ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages`` and for every
        529 (``overloaded_error``), Gemini's ``{"error": {"code", "message", "status"}}`` on
        ``/v1beta/models/...``, Ollama's ``{"error": "..."}`` on ``/api/...``. ``retry_after``
        adds a ``retry-after`` header: seconds, or for a ``datetime`` an HTTP date (a naive one
        is taken as UTC), which clients must honour too. ``body`` may be anything a server
        really sends (``bytes`` go as they are: a proxy's HTML page, Ollama's plain-text 404),
        labelled ``content_type``.
        """
        extra = dict(headers or {})
        if isinstance(retry_after, datetime.datetime):
            when = retry_after
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            extra["retry-after"] = email.utils.format_datetime(when.astimezone(datetime.UTC), True)
        elif retry_after is not None:
            extra["retry-after"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
        raw = None if body is None else body if isinstance(body, bytes) else dumps(body)
        return ErrorReply(
            status=status,
            body=raw,
            message=message,
            headers=_headers(extra),
            delay=delay,
            content_type=content_type,
        )

    # --- streams ------------------------------------------------------------------------------

    @staticmethod
    def sse(
        events: Iterable[bytes | str | Mapping[str, Any] | tuple[str, Any]],
        *,
        named: bool = False,
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """An SSE stream from events given as data.

        Each item is ``bytes`` (a raw event, sent as is: include its ``\\n\\n``), a ``str`` (a
        ``data:`` payload such as ``"[DONE]"``), a mapping (JSON ``data:``; with ``named=True`` an
        ``event:`` line taken from its ``"type"``, as Anthropic and Responses streams have — none
        for a mapping without one) or a ``(event_name, data)`` pair.
        """
        encoded = tuple(sse_item(item, named=named) for item in events)
        return StreamReply(events=encoded, content_type=SSE, **_stream_fields(options))

    @staticmethod
    def ndjson(
        lines: Iterable[bytes | str | Mapping[str, Any]], **options: Unpack[StreamOptions]
    ) -> StreamReply:
        """An NDJSON stream (Ollama's native protocol): mappings become JSON lines."""
        encoded = tuple(ndjson_line(line) for line in lines)
        return StreamReply(events=encoded, content_type=NDJSON, **_stream_fields(options))

    @staticmethod
    def cassette(name: str | PathLike[str], **options: Unpack[StreamOptions]) -> CassetteReply:
        """Replay a recorded response body, e.g. ``Reply.cassette("anthropic/text")``.

        ``name`` is relative to the server's ``cassettes_dir`` (or absolute); ``.sse`` or
        ``.ndjson`` may be left out. The server loads the file when the reply is enqueued, so a
        wrong name fails in the test that wrote it.
        """
        return CassetteReply(name=str(name), **_stream_fields(options))

    # --- synthetic streams --------------------------------------------------------------------

    @staticmethod
    def openai_text(
        text: str | Sequence[str] = "Hello!",
        *,
        chunks: int | None = None,
        usage: bool = True,
        model: str = "gpt-4o-mini",
        finish_reason: str = "stop",
        done: bool = True,
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """A Chat Completions stream: a role chunk, one chunk per piece, the finish chunk, a usage
        chunk (``usage=True``, as with ``stream_options.include_usage``) and ``data: [DONE]``
        (``done=False`` leaves it out, as some compatible servers do: the body just ends).

        A ``str`` text is sent ``chunks`` times (default once); a sequence gives the pieces.
        """
        pieces = _pieces(text, chunks)
        return StreamReply(
            events=LazyEvents(
                partial(
                    openai_chat_events,
                    pieces,
                    model=model,
                    usage=usage,
                    finish_reason=finish_reason,
                    done=done,
                ),
                f"openai_text: {len(pieces)} chunks",
            ),
            content_type=SSE,
            **_stream_fields(options),
        )

    @staticmethod
    def anthropic_text(
        text: str | Sequence[str] = "Hello!",
        *,
        chunks: int | None = None,
        model: str = "claude-sonnet-4-6",
        stop_reason: str = "end_turn",
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """An Anthropic Messages stream: message_start, content_block_start, ping, one
        content_block_delta per piece, content_block_stop, message_delta, message_stop."""
        pieces = _pieces(text, chunks)
        return StreamReply(
            events=LazyEvents(
                partial(anthropic_events, pieces, model=model, stop_reason=stop_reason),
                f"anthropic_text: {len(pieces)} chunks",
            ),
            content_type=SSE,
            **_stream_fields(options),
        )

    @staticmethod
    def anthropic_tool_call(
        name: str,
        arguments: str | Sequence[str],
        *,
        chunks: int | None = None,
        call_id: str = "toolu_fake0001",
        model: str = "claude-sonnet-4-6",
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """An Anthropic Messages stream of one ``tool_use`` block: message_start,
        content_block_start, one ``input_json_delta`` per piece of ``arguments`` (raw JSON
        text), content_block_stop, message_delta (``tool_use``), message_stop."""
        pieces = _pieces(arguments, chunks)
        return StreamReply(
            events=LazyEvents(
                partial(anthropic_tool_events, name, pieces, model=model, call_id=call_id),
                f"anthropic_tool_call: {len(pieces)} chunks",
            ),
            content_type=SSE,
            **_stream_fields(options),
        )

    @staticmethod
    def responses_text(
        text: str | Sequence[str] = "Hello!",
        *,
        chunks: int | None = None,
        model: str = "gpt-4o-mini",
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """An OpenAI Responses stream: response.created, response.in_progress,
        output_item.added, content_part.added, one output_text.delta per piece, output_text.done,
        content_part.done, output_item.done, response.completed (with usage)."""
        pieces = _pieces(text, chunks)
        return StreamReply(
            events=LazyEvents(
                partial(responses_events, pieces, model=model),
                f"responses_text: {len(pieces)} chunks",
            ),
            content_type=SSE,
            **_stream_fields(options),
        )

    @staticmethod
    def gemini_text(
        text: str | Sequence[str] = "Hello!",
        *,
        chunks: int | None = None,
        model: str = "gemini-2.5-flash",
        finish_reason: str = "STOP",
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """A Gemini ``streamGenerateContent?alt=sse`` stream (CRLF-framed, as the API sends it):
        one chunk per piece with the running usage, the last with ``finishReason``."""
        pieces = _pieces(text, chunks)
        return StreamReply(
            events=LazyEvents(
                partial(gemini_events, pieces, model=model, finish_reason=finish_reason),
                f"gemini_text: {len(pieces)} chunks",
            ),
            content_type=SSE,
            **_stream_fields(options),
        )

    @staticmethod
    def ollama_text(
        text: str | Sequence[str] = "Hello!",
        *,
        chunks: int | None = None,
        model: str = "llama3.1",
        **options: Unpack[StreamOptions],
    ) -> StreamReply:
        """A native Ollama ``/api/chat`` NDJSON stream: one line per piece, then ``done: true``."""
        pieces = _pieces(text, chunks)
        return StreamReply(
            events=LazyEvents(
                partial(ollama_events, pieces, model=model),
                f"ollama_text: {len(pieces)} chunks",
            ),
            content_type=NDJSON,
            **_stream_fields(options),
        )


@dataclass(frozen=True, kw_only=True)
class JsonReply(Reply):
    """A complete body sent with a Content-Length."""

    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True, kw_only=True)
class ErrorReply(Reply):
    """An HTTP error; ``body=None`` means "shaped like the endpoint's own errors"."""

    body: bytes | None = None
    message: str | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, kw_only=True)
class _StreamFaults(Reply):
    """Fault options shared by streams. Event indexes count from 0.

    * ``pace``: seconds between events.
    * ``drop_after=N``: send N events, then abort the connection with no terminating chunk.
    * ``stall_after=N``: send N events, then go silent for ``stall`` seconds (``None``: until
      the client leaves or the server stops), then carry on.
    * ``malformed_at=N``: event N is replaced by one whose payload is not valid JSON.

    A position equal to the number of events means "after the last event, before the end".
    """

    pace: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    stall: float | None = None
    malformed_at: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pace < 0 or (self.stall is not None and self.stall < 0):
            raise ValueError("pace and stall must be >= 0")
        _check_index("drop_after", self.drop_after)
        _check_index("stall_after", self.stall_after)
        _check_index("malformed_at", self.malformed_at)


@dataclass(frozen=True, kw_only=True)
class StreamReply(_StreamFaults):
    """A streamed body (``Transfer-Encoding: chunked``), one chunk per event."""

    events: Iterable[bytes]
    content_type: str = SSE


@dataclass(frozen=True, kw_only=True)
class CassetteReply(_StreamFaults):
    """A recorded stream, by name; the server turns it into a `StreamReply` when it is enqueued."""

    name: str

    def load(self, cassettes_dir: Path) -> StreamReply:
        """Read and split the cassette (see `split_events`) into a `StreamReply`."""
        path = resolve_cassette(self.name, cassettes_dir)
        ndjson = path.suffix == ".ndjson"
        events = split_events(path.read_bytes(), ndjson=ndjson)
        shared = {f.name: getattr(self, f.name) for f in fields(_StreamFaults)}
        return StreamReply(events=events, content_type=NDJSON if ndjson else SSE, **shared)


def resolve_cassette(name: str, cassettes_dir: Path) -> Path:
    """The cassette file for ``name``: as given, else with ``.sse`` or ``.ndjson`` appended."""
    base = Path(name) if Path(name).is_absolute() else cassettes_dir / name
    candidates = [base, base.with_name(base.name + ".sse"), base.with_name(base.name + ".ndjson")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"cassette {name!r} not found (tried {tried})")


def _pieces(text: str | Sequence[str], chunks: int | None) -> tuple[str, ...]:
    if isinstance(text, str):
        count = 1 if chunks is None else chunks
        if count < 0:
            raise ValueError("chunks must be >= 0")
        return (text,) * count
    pieces = tuple(text)
    if chunks is not None and chunks != len(pieces):
        raise ValueError("chunks must match the number of pieces when text is a sequence")
    return pieces


def _stream_fields(options: StreamOptions) -> dict[str, Any]:
    out: dict[str, Any] = dict(options)
    out["headers"] = _headers(options.get("headers"))
    return out
