"""`RawServer`: a deliberately primitive HTTP/1.1 server for wire behaviour no polite server has.

`FakeProviderServer` frames its replies properly; the hostile cases need bytes exactly as a
broken server or proxy sends them: a complete answer and then a connection reset, an error event
and then a close in the middle of the chunked body, a line of ten megabytes. Each accepted
connection reads one request and plays the next `Script`: its byte strings in order, then the
ending it names. Nothing here parses SSE or JSON on the way out.

Invariants: the server runs in one daemon thread with blocking sockets, so it serves asyncio and
trio tests alike; requests are recorded under a lock; `stop` closes the listener and every
connection and joins the thread (bounded). A connection with no script left gets a 500.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

Ending = Literal["fin", "rst", "keep"]


@dataclass(frozen=True)
class Script:
    """What one connection gets: ``parts`` sent one by one (``pause`` seconds apart), then
    ``ending``: ``"fin"`` closes the socket politely (whatever framing was left unfinished),
    ``"rst"`` resets it (``SO_LINGER`` 0) after ``linger`` seconds, ``"keep"`` waits for the client
    to close it."""

    parts: tuple[bytes, ...]
    ending: Ending = "fin"
    pause: float = 0.0
    linger: float = 0.3


@dataclass(frozen=True)
class RawRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def chunked(*events: bytes) -> tuple[bytes, ...]:
    """``events`` framed as HTTP/1.1 chunks (no last chunk: add `LAST_CHUNK` to end politely)."""
    return tuple(b"%x\r\n%s\r\n" % (len(e), e) for e in events if e)


LAST_CHUNK = b"0\r\n\r\n"


def stream_head(status: int = 200, content_type: str = "text/event-stream") -> bytes:
    """A streamed response's head (chunked, keep-alive)."""
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
        "transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
    ).encode()


def json_response(status: int, body: Any) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    ).encode() + data


def sse(*payloads: Any, named: bool = False) -> list[bytes]:
    """SSE events for JSON payloads (``str``: raw data such as ``[DONE]``); ``named`` adds an
    ``event:`` line from each payload's ``type``, as Anthropic and Responses streams have."""
    out: list[bytes] = []
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        head = f"event: {payload['type']}\n" if named and isinstance(payload, dict) else ""
        out.append(f"{head}data: {data}\n\n".encode())
    return out


@dataclass
class RawServer:
    """See the module docstring. ``with RawServer() as server: server.play(Script(...))``."""

    scripts: list[Script] = field(default_factory=list)
    requests: list[RawRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="RawServer", daemon=True)
        self._workers: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def play(self, *scripts: Script) -> None:
        with self._lock:
            self.scripts.extend(scripts)

    def bodies(self, path: str | None = None) -> list[Any]:
        with self._lock:
            return [r.json for r in self.requests if path is None or r.path == path]

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with suppress(OSError):
                sock.close()
        for worker in self._workers:
            worker.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._sockets.append(sock)
            worker = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _serve(self, sock: socket.socket) -> None:
        with suppress(OSError):
            request = _read_request(sock)
            if request is None:
                sock.close()
                return
            with self._lock:
                self.requests.append(request)
                script = self.scripts.pop(0) if self.scripts else None
            if script is None:
                sock.sendall(json_response(500, {"error": {"message": "nothing scripted"}}))
                sock.close()
                return
            for index, part in enumerate(script.parts):
                if index and script.pause:
                    time.sleep(script.pause)
                sock.sendall(part)
            if script.ending == "keep":
                sock.settimeout(10)
                while sock.recv(65536):
                    pass
            elif script.ending == "rst":
                # Give the client time to read what was sent: a reset may discard unread bytes.
                time.sleep(script.linger)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def _read_request(sock: socket.socket) -> RawRequest | None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1].split("?")[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            return None
        body += data
    return RawRequest(path, headers, body)


@contextmanager
def raw_server(*scripts: Script) -> Iterator[RawServer]:
    with RawServer() as server:
        server.play(*scripts)
        yield server


def script(parts: Iterable[bytes], ending: Ending = "fin", **options: Any) -> Script:
    return Script(tuple(parts), ending, **options)
