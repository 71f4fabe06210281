"""A real Hypercorn server on a free loopback port, on the test's own backend, in a thread.

The server runs its own event loop (``anyio.run`` with the test's backend: asyncio or trio) in
a thread, so the test's client and the server never share a loop, as in real use; the registry
is read from the test (plain counters) to check that nothing is left behind.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from llm_worker.web import WebSettings, create_app, serve

from ._chunks import UIMessageReader


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    port: int
    db: Path
    app: Any
    thread: threading.Thread
    stopping: threading.Event
    failure: list[BaseException]
    backend: Any = None

    @property
    def registry(self) -> Any:
        return self.app.state.service.registry

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.stopping.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"
        if self.failure:
            raise self.failure[0]


def start_server(backend: Any, db: Path, **options: Any) -> RunningServer:
    name, backend_options = backend
    settings = WebSettings(db=str(db), **options)
    app = create_app(settings)
    port = free_port()
    stopping = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        stop = anyio.Event()

        async def watch() -> None:
            while not stopping.is_set():
                await anyio.sleep(0.02)
            stop.set()

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await serve(app, host="127.0.0.1", port=port, stop=stop, grace=5)
            group.cancel_scope.cancel()

    def run() -> None:
        try:
            anyio.run(main, backend=name, backend_options=backend_options)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"web-server-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if (
                httpx2.get(f"{url}/api/health", timeout=2, headers=_auth(options)).status_code
                == 200
            ):
                break
        except httpx2.TransportError:
            pass
        if failure or time.monotonic() > deadline:
            stopping.set()
            raise RuntimeError(f"the server did not start: {failure}")
        time.sleep(0.05)
    return RunningServer(url, port, db, app, thread, stopping, failure, backend)


def _auth(options: dict[str, Any]) -> dict[str, str]:
    token = options.get("token")
    return {"authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def server_factory(anyio_backend: Any, tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers (``server_factory(model="offline", ...)``); all stopped at the end."""
    started: list[RunningServer] = []

    def start(**options: Any) -> RunningServer:
        server = start_server(anyio_backend, tmp_path / f"chats-{len(started)}.db", **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as http:
        yield http


def chat_body(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """The body ``useChat`` sends for a new user message."""
    return {
        "id": chat_id,
        "messages": [
            {"id": f"u-{text[:8]}", "role": "user", "parts": [{"type": "text", "text": text}]}
        ],
        "trigger": "submit-message",
        "messageId": None,
        **extra,
    }


async def read_stream(
    response: httpx2.Response, reader: UIMessageReader | None = None
) -> UIMessageReader:
    """Read an SSE UI message stream to its end, checking every chunk as the SDK would."""
    assert response.status_code == 200, await response.aread()
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    reader = reader or UIMessageReader()
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            reader.feed_line(line[6:])
    assert reader.done, "the stream ended without [DONE]"
    return reader


async def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)
