"""Cancel-safe readers: a read interrupted at any await loses no byte.

Invariants:
* All state (the byte buffer, a half-parsed event) lives on the reader object, never in a frame of
  a pending call. The only await is the source's ``receive()``, which must itself be cancel-safe
  (it returns a chunk or nothing, as anyio byte streams do); its chunk is appended to the buffer
  with no await in between. So a read cancelled anywhere leaves the buffer intact and the next
  read continues exactly where the previous one stopped.
* Only one read may be pending at a time (like a stream): concurrent reads raise `RuntimeError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import ByteReceiveStream

Receive = Callable[[], Awaitable[bytes]]


class BufferedReader:
    """Reads delimited records (lines, SSE events) from a byte source, cancel-safely.

    ``receive`` returns the next chunk, or ``b""`` at end of stream; an anyio byte stream can be
    wrapped with `BufferedReader.from_stream`.
    """

    def __init__(self, receive: Receive, *, max_record: int = 16 * 1024 * 1024) -> None:
        self._receive = receive
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer already known not to hold ``_searched_for``
        self._searched_for = b""
        self._eof = False
        self._reading = False
        self.max_record = max_record

    @classmethod
    def from_stream(cls, stream: ByteReceiveStream) -> BufferedReader:
        """Wrap an anyio byte stream; its end (`anyio.EndOfStream`) becomes end of input."""

        async def receive() -> bytes:
            try:
                return await stream.receive()
            except anyio.EndOfStream:
                return b""

        return cls(receive)

    @property
    def buffered(self) -> bytes:
        """Bytes received but not yet returned by a read."""
        return bytes(self._buffer)

    async def read_until(self, delimiter: bytes) -> bytes | None:
        """Return the next record including ``delimiter``; at end of input the rest, then None.

        Cancellation: safe at any point; the bytes received so far stay buffered for the next
        read.
        """
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        if self._reading:
            raise RuntimeError("another read is already pending on this reader")
        self._reading = True
        if delimiter != self._searched_for:  # an interrupted read looked for something else
            self._searched, self._searched_for = 0, delimiter
        try:
            while True:
                found = self._buffer.find(delimiter, self._searched)
                if found >= 0:
                    end = found + len(delimiter)
                    record = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._searched = 0
                    return record
                self._searched = max(0, len(self._buffer) - len(delimiter) + 1)
                if self._eof:
                    if not self._buffer:
                        return None
                    record = bytes(self._buffer)
                    self._buffer.clear()
                    self._searched = 0
                    return record
                if len(self._buffer) > self.max_record:
                    raise ValueError(f"record longer than {self.max_record} bytes")
                chunk = await self._receive()
                if chunk:
                    self._buffer += chunk
                else:
                    self._eof = True
        finally:
            self._reading = False

    async def readline(self) -> bytes | None:
        """The next line including its ``\\n`` (the last line may lack it); None at end.

        Cancellation: safe at any point, as `read_until`.
        """
        return await self.read_until(b"\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a ``text/event-stream``."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEReader:
    """Parses server-sent events from a `BufferedReader`, cancel-safely.

    Lines end in ``\\n`` or ``\\r\\n``. Comments and unknown fields are ignored; an event is
    dispatched at a blank line; a final event without its blank line is dropped (per the spec).
    Invalid UTF-8 is replaced with U+FFFD and a leading byte order mark is skipped (per the spec).
    """

    def __init__(self, reader: BufferedReader) -> None:
        self._reader = reader
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._started = False

    async def next_event(self) -> ServerSentEvent | None:
        """The next complete event, or None at end of stream.

        Cancellation: safe at any point; a half-received event stays parsed on the reader.
        """
        while True:
            raw = await self._reader.readline()
            if raw is None:
                return None
            # Invalid UTF-8 is replaced, as the SSE spec says: one bad byte must not break a stream.
            line = raw.decode("utf-8", errors="replace").rstrip("\n").removesuffix("\r")
            if not self._started:
                self._started = True
                line = line.removeprefix("\ufeff")  # one leading byte order mark is ignored
            if not line:
                if self._data or self._event:
                    return self._dispatch()
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent:
        event = ServerSentEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        return event
