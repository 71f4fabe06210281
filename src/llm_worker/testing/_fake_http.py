"""The HTTP/1.1 side of `FakeProviderServer`: reading requests from a connection, framing replies.

Invariants:
* All bytes read from a socket go through `Connection`'s buffer, and the only await is the
  StreamReader's ``read()`` (cancel-safe: a cancelled read loses nothing) whose result is appended
  with no await in between. So the disconnect watcher can read concurrently with a streaming
  reply, and cancelling it never loses the start of a pipelined request.
* At most one task reads at a time: the request parser between replies, the watcher during one.
* A request is either parsed completely or rejected with `BadRequest` (sent as a 4xx, then the
  connection closes), or the peer went away (`PeerClosed`); nothing else escapes the parser.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class BadRequest(Exception):
    """The request cannot be parsed; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class PeerClosed(Exception):
    """The client closed the connection (or reset it) before a request was complete."""


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


class Connection:
    """One accepted socket: a read buffer over the StreamReader, and the writer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buffer = bytearray()
        self.eof = False
        # With a zero high-water mark, drain() waits until every byte has reached the kernel, so
        # "flush after each event" holds and an abort never discards events already "sent".
        writer.transport.set_write_buffer_limits(high=0)

    async def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream (EOF or reset)."""
        if self.eof:
            return False
        try:
            data = await self.reader.read(_READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    async def wait_closed_by_peer(self) -> None:
        """Return when the client has closed or reset the connection; buffer what it sends."""
        while await self._fill():
            pass

    async def at_next_request(self) -> bool:
        """Skip blank lines before a request; False if the peer closed cleanly in between."""
        while True:
            while self._buffer.startswith(b"\r\n"):
                del self._buffer[:2]
            if self._buffer and self._buffer != b"\r":
                return True
            if not await self._fill():
                if self._buffer:
                    raise PeerClosed
                return False

    async def read_until(self, delimiter: bytes, limit: int) -> bytes:
        """Bytes up to and including ``delimiter``."""
        searched = 0
        while True:
            index = self._buffer.find(delimiter, searched)
            if index >= 0:
                end = index + len(delimiter)
                if end > limit:
                    raise BadRequest("request head too large", 431)
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            if len(self._buffer) > limit:
                raise BadRequest("request head too large", 431)
            searched = max(0, len(self._buffer) - len(delimiter) + 1)
            if not await self._fill():
                raise PeerClosed

    async def read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not await self._fill():
                raise PeerClosed
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def send(self, data: bytes) -> None:
        """One write, then wait until it is in the kernel (raises ConnectionError if gone)."""
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        """Close the socket at once, without a goodbye (what a crashed server looks like)."""
        self.writer.transport.abort()


async def read_request(conn: Connection) -> Request | None:
    """The next request on ``conn``, or None when the client closed the connection between two."""
    if not await conn.at_next_request():
        return None
    head = await conn.read_until(b"\r\n\r\n", MAX_HEAD)
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest(f"malformed request line {lines[0][:100]!r}")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"unsupported HTTP version {version!r}")
    if target.startswith(("/", "http://", "https://")):
        split = urlsplit(target)
    else:
        raise BadRequest(f"malformed request target {target[:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(f"malformed header line {line[:100]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if headers.get("expect", "").lower() == "100-continue":
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_body(conn, headers)
    return Request(method, target, split.path or "/", split.query, version, headers, body)


async def _read_body(conn: Connection, headers: dict[str, str]) -> bytes:
    if "transfer-encoding" in headers:
        codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
        if codings[-1] != "chunked" or any(c not in ("chunked", "identity") for c in codings):
            raise BadRequest(f"unsupported transfer-encoding {headers['transfer-encoding']!r}")
        return await _read_chunked(conn)
    if "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadRequest(f"invalid content-length {headers['content-length']!r}")
        length = int(values.pop())
        if length > MAX_BODY:
            raise BadRequest("request body too large", 413)
        return await conn.read_exactly(length)
    return b""


async def _read_chunked(conn: Connection) -> bytes:
    body = bytearray()
    while True:
        line = await conn.read_until(b"\r\n", 4096)
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_text):
            raise BadRequest(f"malformed chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if len(body) + size > MAX_BODY:
            raise BadRequest("request body too large", 413)
        if size == 0:
            break
        body += await conn.read_exactly(size)
        if await conn.read_exactly(2) != b"\r\n":
            raise BadRequest("chunk not followed by CRLF")
    while await conn.read_until(b"\r\n", MAX_HEAD) != b"\r\n":  # trailers, ignored
        pass
    return bytes(body)


def response_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def reason_phrase(status: int) -> str:
    """The status line's phrase (Anthropic's 529 is "Overloaded"; unknown codes "Unknown")."""
    if status == 529:
        return "Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
