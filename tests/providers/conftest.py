"""Fixtures shared by the provider tests (OpenAI Chat, OpenAI Responses, Anthropic).

* ``fake_server``: a `FakeProviderServer` on 127.0.0.1 replaying ``tests/fixtures/cassettes``;
  on teardown it asserts that the server saw no internal error and that no connection is left
  open (every test must close its clients: ``async with`` or ``await client.close()``).
* ``SDK_GENERATOR_WARNINGS``: a mark for the SDKs' own unclosed generators (see below).
* ``CASSETTES``, `cassette_names` and `sse_payloads` read the recorded streams independently of the
  server, so expectations come from the files, not from the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    """A running `FakeProviderServer`; checked for internal errors and open connections after."""
    with FakeProviderServer(cassettes_dir=CASSETTES) as server:
        yield server
        # Clients close their connections in the test; the server notices within a moment.
        server.wait_for(lambda s: s.active_connections == 0, timeout=5.0)
    assert server.errors == []
