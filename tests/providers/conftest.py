"""Fixtures shared by the provider tests (OpenAI Chat, OpenAI Responses, Anthropic).

* ``fake_server``: a `FakeProviderServer` on 127.0.0.1 replaying ``tests/fixtures/cassettes``;
  on teardown it asserts that the server saw no internal error and that no connection is left
  open (every test must close its clients: ``async with`` or ``await client.close()``).
* ``SDK_GENERATOR_WARNINGS``: a mark for the SDKs' own unclosed generators (see below).
* ``CASSETTES``, `cassette_names` and `sse_payloads` read the recorded streams independently of the
  server, so expectations come from the files, not from the code under test.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_worker.testing import FakeProviderServer

CASSETTES = Path(__file__).resolve().parent.parent / "fixtures" / "cassettes"

#: The SDKs' ``AsyncStream`` stops at ``[DONE]`` without closing the generator chain it reads
#: through (its SSE decoder, ``httpx2.Response.aiter_bytes``, httpcore2's byte streams); trio
#: reports each of them as a ResourceWarning when it is garbage collected. They hold nothing by
#: then (the response was drained and closed), and they are not ours to close; our own generators
#: are closed explicitly and stay checked. Provider test modules add this mark:
#: ``pytestmark = [..., SDK_GENERATOR_WARNINGS]``.
SDK_GENERATOR_WARNINGS = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\._[\w.]+' was garbage "
    "collected:ResourceWarning"
)


def cassette_names(directory: str, suffix: str = ".sse") -> list[str]:
    """``"<directory>/<stem>"`` for every cassette in ``directory``, sorted (for parametrize)."""
    return sorted(f"{directory}/{p.stem}" for p in (CASSETTES / directory).glob(f"*{suffix}"))


def sse_payloads(name: str) -> list[tuple[str | None, Any]]:
    """``(event name, JSON data)`` for each event of an SSE cassette, ``[DONE]`` left out."""
    body = (CASSETTES / f"{name}.sse").read_text()
    out: list[tuple[str | None, Any]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        event: str | None = None
        data: list[str] = []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data and data != ["[DONE]"]:
            out.append((event, json.loads("\n".join(data))))
    return out


def request_fixture(name: str) -> Any:
    """The recorded request body that produced cassette ``name`` (None if it was not kept)."""
    path = CASSETTES / f"{name}.request.json"
    return json.loads(path.read_text()) if path.is_file() else None


def assert_connections_released(client: Any) -> None:
    """No connection of an SDK client's pool is still in use, and no request holds or waits for
    one: the response that just ended — normally or by an error — gave its connection back (to
    the pool, idle, or closed). ``client`` is an ``openai.AsyncOpenAI`` or
    ``anthropic.AsyncAnthropic``; their httpx2 client's pool is httpcore2's."""
    pool = client._client._transport._pool
    busy = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    assert busy == [], f"connections still in use: {busy}"
    assert pool._requests == [], "a request still holds, or waits for, a connection"


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    """A running `FakeProviderServer`; checked for internal errors and open connections after."""
    with FakeProviderServer(cassettes_dir=CASSETTES) as server:
        yield server
        # Clients close their connections in the test; the server notices within a moment.
        server.wait_for(lambda s: s.active_connections == 0, timeout=5.0)
    assert server.errors == []


@pytest.fixture
async def finalised_generators(anyio_backend_name: str) -> AsyncIterator[list[str]]:
    """Names of async generators finalised by the garbage collector during the test.

    asyncio: the running loop's finaliser hook is wrapped — on the loop object, because asyncio
    re-installs the loop's own hooks each time it starts running (so a hook set with
    ``sys.set_asyncgen_hooks`` outside it would never be called). trio turns each such generator
    into a ResourceWarning, which fails the test by itself (except the SDKs' and httpx2's own,
    which the project's warning filter lets through), so the list stays empty there.
    """
    found: list[str] = []
    if anyio_backend_name != "asyncio":
        yield found
        return
    loop = asyncio.get_running_loop()
    original = loop._asyncgen_finalizer_hook  # type: ignore[attr-defined]

    def spy(agen: Any) -> None:
        found.append(agen.ag_code.co_qualname)
        original(agen)

    loop._asyncgen_finalizer_hook = spy  # type: ignore[attr-defined]
    firstiter, _ = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=spy)  # the loop is running already
    try:
        yield found
    finally:
        del loop._asyncgen_finalizer_hook  # type: ignore[attr-defined]
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=original)
