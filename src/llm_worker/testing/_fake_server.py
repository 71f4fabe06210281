"""`FakeProviderServer`: a real local HTTP/1.1 server speaking LLM providers' streaming protocols.

This module owns the server's lifecycle, its script (which reply a request gets) and what it
observed; serving one connection is `_fake_serving`, the replies are `_fake_replies`.

Invariants:
* Everything network-related runs in one daemon thread on its own asyncio loop; callers on any
  thread (sync code, asyncio, trio, a benchmark) only touch the lock-protected state: the reply
  queue, the recorded requests, the counters and the error list. Every change to that state
  notifies one condition, which `wait_for` waits on.
* Each connection is one task; it counts itself opened when it starts and closed in its
  ``finally``, so ``active_connections`` is exact.
* No exception leaves a connection task: client errors end the connection quietly, anything
  unexpected is recorded in `errors`. `stop()` aborts every socket, cancels every task, waits for
  them (bounded) and joins the thread (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio.to_thread

from ._fake_http import Connection, PeerClosed, Request
from ._fake_protocols import is_gemini_path
from ._fake_replies import CassetteReply, ErrorReply, Reply, StreamReply
from ._fake_serving import STOP_GRACE, ServerBooks, serve_connection

__all__ = ["FakeProviderServer", "RecordedRequest", "ServerStats"]

#: The endpoints the server knows (and Gemini's ``/v1beta/models/<model>:streamGenerateContent``,
#: `is_gemini_path`); a request elsewhere with nothing scripted gets a 404.
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/api/chat")


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it. ``json`` is the parsed body (None if not JSON)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of the server's counters."""

    connections_opened: int = 0
    connections_closed: int = 0
    active_connections: int = 0
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    #: streams the script cut short (``drop_after``)
    streams_dropped: int = 0
    #: the client went away after a stream's headers were sent, before its end
    disconnects_mid_stream: int = 0
    #: the client went away while waiting for the response (during ``delay``)
    disconnects_before_response: int = 0
    #: requests answered with a 4xx because they were not valid HTTP
    bad_requests: int = 0
    #: requests that found nothing scripted (answered 500 on a known endpoint, 404 elsewhere)
    unscripted: int = 0


class FakeProviderServer:
    """A local server for the OpenAI Chat Completions, OpenAI Responses, Anthropic Messages,
    Gemini and Ollama streaming protocols, replaying recorded streams or synthetic ones,
    scriptably faulty.

    ::

        with FakeProviderServer() as server:
            server.enqueue(Reply.cassette("openai-chat/text-include-usage"))
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="test")
            ...
            assert server.requests[0].json["stream"] is True

    Each request takes the first queued reply (`enqueue`, `script`) whose ``path`` matches (or
    that has none); with the queue empty it gets the default for its path (`set_default`), else
    `default`, else a 500 whose message says nothing was scripted. The server runs in its own
    thread, so it serves sync code, any async framework and subprocesses alike.
    """

    def __init__(
        self,
        *,
        cassettes_dir: str | PathLike[str] | None = None,
        default: Reply | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``cassettes_dir`` defaults to ``tests/fixtures/cassettes`` under the current
        directory; ``port=0`` lets the OS choose a free port."""
        self.cassettes_dir = Path(
            cassettes_dir if cassettes_dir is not None else Path.cwd() / "tests/fixtures/cassettes"
        ).resolve()
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._cond = threading.Condition()
        self._queue: list[tuple[str | None, Reply]] = []
        self._defaults: dict[str | None, Reply] = {}
        self._cassettes: dict[tuple[CassetteReply, Path], StreamReply] = {}
        self._requests: list[RecordedRequest] = []
        self._counts = dict.fromkeys((f.name for f in fields(ServerStats)), 0)
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        # Loop-thread only:
        self._connections: dict[asyncio.Task[None], Connection] = {}
        self._books = ServerBooks(self._take_reply, self._record, self._bump)
        if default is not None:
            self.default = default

    def __repr__(self) -> str:
        where = self.base_url if self._thread is not None else "stopped"
        return f"<FakeProviderServer {where} pending={self.pending}>"

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind the port and start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("FakeProviderServer is already running")
        ready = threading.Event()
        self._startup_error = None
        thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="FakeProviderServer", daemon=True
        )
        thread.start()
        if not ready.wait(timeout=10.0):
            raise RuntimeError("FakeProviderServer did not start within 10 s")
        if self._startup_error is not None:
            thread.join(timeout=STOP_GRACE)
            raise RuntimeError("FakeProviderServer failed to start") from self._startup_error
        self._thread = thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection, and join the thread (bounded)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        self._thread = None
        if thread.is_alive():
            raise RuntimeError(f"FakeProviderServer did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None or self._thread is None:
            raise RuntimeError("FakeProviderServer is not running; call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: what Ollama clients and the Anthropic SDK want."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url + "/v1"``: what the OpenAI SDK wants."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base URL itself: the Anthropic SDK appends ``/v1/messages``."""
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """The base URL itself: `GeminiModel` appends ``/v1beta/models/<model>:...``."""
        return self.base_url

    @staticmethod
    def gemini_path(model: str) -> str:
        """The path a `GeminiModel` for ``model`` streams from (for ``enqueue(path=...)``)."""
        return f"/v1beta/models/{model}:streamGenerateContent"

    # --- scripting ----------------------------------------------------------------------------

    def enqueue(self, *replies: Reply, path: str | None = None) -> None:
        """Append replies to the queue; with ``path``, only requests to that path take them."""
        prepared = [(path, self._prepare(reply)) for reply in replies]
        with self._cond:
            self._queue.extend(prepared)
            self._cond.notify_all()

    def script(self, replies: Iterable[Reply], *, path: str | None = None) -> None:
        """Replace the whole queue with ``replies``."""
        prepared = [(path, self._prepare(reply)) for reply in replies]
        with self._cond:
            self._queue[:] = prepared
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """How many queued replies no request has taken yet."""
        with self._cond:
            return len(self._queue)

    @property
    def default(self) -> Reply | None:
        """The reply for any request that finds the queue empty and no per-path default."""
        with self._cond:
            return self._defaults.get(None)

    @default.setter
    def default(self, reply: Reply | None) -> None:
        self.set_default(reply)

    def set_default(self, reply: Reply | None, *, path: str | None = None) -> None:
        """Set (or with None, clear) the default reply for ``path``, or for every path."""
        prepared = None if reply is None else self._prepare(reply)
        with self._cond:
            if prepared is None:
                self._defaults.pop(path, None)
            else:
                self._defaults[path] = prepared

    def _prepare(self, reply: Reply) -> Reply:
        """Load cassettes now, so that a wrong name fails where the reply was scripted."""
        if not isinstance(reply, CassetteReply):
            return reply
        key = (reply, self.cassettes_dir)
        with self._cond:
            cached = self._cassettes.get(key)
        if cached is None:
            cached = reply.load(self.cassettes_dir)
            with self._cond:
                self._cassettes[key] = cached
        return cached

    # --- observation --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._cond:
            if not self._requests:
                raise LookupError("no request received yet")
            return self._requests[-1]

    @property
    def stats(self) -> ServerStats:
        with self._cond:
            return ServerStats(**self._counts)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the server (bugs, not client behaviour); a copy."""
        with self._cond:
            return list(self._errors)

    def wait_for(
        self, predicate: Callable[[ServerStats], bool], timeout: float = 5.0
    ) -> ServerStats:
        """Block until ``predicate(stats)`` holds and return those stats; TimeoutError otherwise.

        Usable from an async test too: the server runs in its own thread, so blocking the
        caller's loop briefly does not stop the server from making progress.
        """
        with self._cond:
            if self._cond.wait_for(lambda: predicate(ServerStats(**self._counts)), timeout):
                return ServerStats(**self._counts)
            stats = ServerStats(**self._counts)
        raise TimeoutError(f"server stats did not satisfy the predicate in {timeout} s: {stats}")

    async def wait_for_async(self, predicate: Callable[[ServerStats], bool]) -> ServerStats:
        """`wait_for` without blocking the caller's loop (asyncio or trio); bound it with the
        framework's own timeout (``anyio.fail_after``): a cancelled wait frees its thread."""
        abandoned = threading.Event()

        def wait() -> ServerStats:
            with self._cond:
                self._cond.wait_for(
                    lambda: abandoned.is_set() or predicate(ServerStats(**self._counts))
                )
                return ServerStats(**self._counts)

        try:
            return await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
        finally:
            with self._cond:
                abandoned.set()
                self._cond.notify_all()

    def _bump(self, **deltas: int) -> None:
        with self._cond:
            for name, delta in deltas.items():
                self._counts[name] += delta
            self._cond.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        with self._cond:
            self._errors.append(exc)
            self._cond.notify_all()

    # --- the loop thread ----------------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        try:
            # The Runner cancels whatever task is left when _main returns (such as a connection
            # accepted while stopping) and closes the loop.
            with asyncio.Runner() as runner:
                self._loop = runner.get_loop()
                runner.run(self._main(ready))
        except BaseException as exc:
            if ready.is_set():
                self._record_error(exc)
            else:
                self._startup_error = exc
                ready.set()

    async def _main(self, ready: threading.Event) -> None:
        stopping = self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, self._host, self._requested_port)
        self._port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            await stopping.wait()
        finally:
            stopping.set()  # also when _main itself is cancelled
            server.close()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_GRACE
            while self._connections and loop.time() < deadline:
                for task, conn in list(self._connections.items()):
                    conn.abort()
                    task.cancel()
                await asyncio.wait(list(self._connections), timeout=deadline - loop.time())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = Connection(reader, writer)
        self._connections[task] = conn
        self._bump(connections_opened=1, active_connections=1)
        try:
            if self._stopping is None or self._stopping.is_set():
                return  # accepted while stopping: closed at once
            await serve_connection(conn, self._books)
        except (ConnectionError, PeerClosed):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the task ends here, quietly
        except Exception as exc:
            self._record_error(exc)
        finally:
            conn.abort()
            del self._connections[task]
            self._bump(connections_closed=1, active_connections=-1)

    def _record(self, request: Request) -> None:
        try:
            parsed = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        recorded = RecordedRequest(
            request.method, request.path, request.query, request.headers, request.body, parsed
        )
        with self._cond:
            self._requests.append(recorded)
            self._counts["requests"] += 1
            self._cond.notify_all()

    def _take_reply(self, request: Request) -> Reply:
        with self._cond:
            for index, (path, reply) in enumerate(self._queue):
                if path is None or path == request.path:
                    del self._queue[index]
                    return reply
            found = self._defaults.get(request.path) or self._defaults.get(None)
            if found is not None:
                return found
            self._counts["unscripted"] += 1
        where = f"{request.method} {request.path}"
        if request.path in ENDPOINTS or is_gemini_path(request.path):
            message = (
                f"FakeProviderServer: no reply scripted for {where}: the queue is empty and no "
                "default is set (use server.enqueue(...) or server.default = ...)"
            )
            return ErrorReply(status=500, message=message)
        return ErrorReply(status=404, message=f"FakeProviderServer: nothing scripted for {where}")
