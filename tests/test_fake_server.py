"""FakeProviderServer through real HTTP clients and the official SDKs.

Expectations are derived from the cassette files themselves (parsed here independently of the
server), so a server that sent nothing, or the wrong thing, cannot pass.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest

from llm_worker.testing import FakeProviderServer, Reply, ServerStats

# Marked here, not only by the conftest hook, so that parametrized async tests keep their
# parameters (anyio re-creates items marked after collection with the backend as only parameter).
pytestmark = [
    pytest.mark.anyio,
    # openai's AsyncStream stops iterating at [DONE] without closing its chain of async
    # generators (its SSE decoder, httpx2's and httpcore2's byte iterators); trio reports each of
    # them when collected. That is the SDK's doing, not the server's (which runs no trio code).
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.[\w.]+' was garbage "
        r"collected:ResourceWarning"
    ),
]

CASSETTES = Path(__file__).parent / "fixtures" / "cassettes"
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def cassette_names(directory: str) -> list[str]:
    return sorted(p.stem for p in (CASSETTES / directory).glob("*.sse"))


def raw_events(path: Path) -> list[bytes]:
    """The file's SSE events, each with its blank-line terminator (independent of the server)."""
    body = path.read_bytes()
    parts = body.split(b"\n\n")
    events = [part + b"\n\n" for part in parts[:-1]]
    assert parts[-1] == b"", f"{path} does not end with a blank line"
    return events


def payloads(path: Path) -> list[Any]:
    """The JSON ``data:`` payloads of an SSE file, in order (``[DONE]`` left out)."""
    out = []
    for event in raw_events(path):
        for line in event.decode().splitlines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                out.append(json.loads(line[5:]))
    return out


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer(cassettes_dir=CASSETTES) as srv:
        yield srv
    assert srv.errors == []
    assert srv.stats.active_connections == 0


def openai_client(server: FakeProviderServer, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test", **kwargs)


def anthropic_client(server: FakeProviderServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="test", max_retries=0
    )


async def collect(stream: AsyncIterable[Any], into: list[Any]) -> None:
    async for item in stream:
        into.append(item)


def exchange(server: FakeProviderServer, payload: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def chat_request(body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


# --- lifecycle ------------------------------------------------------------------------------------


def test_urls_and_lifecycle() -> None:
    server = FakeProviderServer(cassettes_dir=CASSETTES)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    with server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
        assert server.openai_base_url == server.base_url + "/v1"
        assert server.anthropic_base_url == server.base_url
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        with pytest.raises(RuntimeError, match="failed to start"):
            FakeProviderServer(port=server.port).start()  # the port is taken
        assert repr(server) == f"<FakeProviderServer {server.base_url} pending=0>"
        server.default = Reply.json({"ok": True})
        url = server.base_url + "/anything"
        assert httpx2.post(url).json() == {"ok": True}
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    with pytest.raises(httpx2.ConnectError):  # the listener is gone
        httpx2.post(url)
    server.start()  # restartable
    try:
        assert httpx2.post(server.base_url + "/x").json() == {"ok": True}
    finally:
        server.stop()
    assert server.stats.requests == 2


def test_stop_closes_open_connections_promptly(server: FakeProviderServer) -> None:
    # stalls until stopped
    server.enqueue(Reply.openai_text(chunks=10, stall_after=1), path="/v1/chat/completions")
    server.default = Reply.json({})
    idle = httpx2.Client()  # keeps an idle keep-alive connection
    idle.post(server.base_url + "/x")
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stalled.sendall(chat_request())
    server.wait_for(lambda s: s.streams_started == 1 and s.active_connections == 2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert server.stats.active_connections == 0
    data = b""
    while chunk := stalled.recv(65536):  # the server closed it: recv reaches the end
        data += chunk
    assert b"chatcmpl-fake0001" in data
    assert not data.endswith(b"0\r\n\r\n")
    stalled.close()
    idle.close()


def test_subprocess_can_use_the_server(server: FakeProviderServer) -> None:
    server.enqueue(Reply.json({"from": "fake"}))
    code = (
        "import sys, urllib.request as u;"
        "r = u.urlopen(u.Request(sys.argv[1], data=b'{\"q\": 1}', method='POST'));"
        "print(r.read().decode())"
    )
    url = server.openai_base_url + "/chat/completions"
    out = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=10, check=True
    )
    assert json.loads(out.stdout) == {"from": "fake"}
    assert server.last_request.json == {"q": 1}


async def test_async_with_delegates_to_start_and_stop() -> None:
    async with FakeProviderServer(cassettes_dir=CASSETTES) as server:
        server.enqueue(Reply.json({"n": 1}))
        async with httpx2.AsyncClient() as client:
            response = await client.post(server.base_url + "/v1/responses", json={})
        assert response.json() == {"n": 1}
    with pytest.raises(RuntimeError):
        _ = server.port


# --- scripting ------------------------------------------------------------------------------------


def test_queue_order_paths_defaults_and_unscripted(server: FakeProviderServer) -> None:
    with httpx2.Client(base_url=server.base_url) as client:
        response = client.post("/v1/chat/completions", json={})
        assert response.status_code == 500
        assert (
            "no reply scripted for POST /v1/chat/completions"
            in (response.json()["error"]["message"])
        )
        assert client.post("/v1/unknown").status_code == 404

        server.enqueue(Reply.json({"n": 1}), Reply.json({"n": 2}))
        server.enqueue(Reply.json({"n": "messages"}), path="/v1/messages")
        assert server.pending == 3
        assert client.post("/v1/messages").json() == {"n": 1}
        assert client.post("/v1/chat/completions").json() == {"n": 2}
        assert client.post("/v1/chat/completions").status_code == 500  # path-bound one stays
        assert client.post("/v1/messages").json() == {"n": "messages"}

        server.script([Reply.json({"n": 3})])
        server.script([Reply.json({"n": 4})])  # replaces, does not append
        assert server.pending == 1
        server.set_default(Reply.json({"d": "messages"}), path="/v1/messages")
        server.default = Reply.json({"d": "any"})
        assert client.post("/v1/messages").json() == {"n": 4}
        assert client.post("/v1/messages").json() == {"d": "messages"}
        assert client.post("/v1/responses").json() == {"d": "any"}
        server.default = None
        assert client.post("/v1/responses").status_code == 500
    assert server.pending == 0
    assert server.stats.unscripted == 4


def test_cassette_names_resolve_early(server: FakeProviderServer) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-cassette"):
        server.enqueue(Reply.cassette("anthropic/no-such-cassette"))
    absolute = CASSETTES / "ollama" / "chat-text.ndjson"
    server.enqueue(Reply.cassette(absolute), Reply.cassette("anthropic/text.sse"))
    with httpx2.Client(base_url=server.base_url) as client:
        ollama = client.post("/api/chat")
        assert ollama.headers["content-type"] == "application/x-ndjson"
        assert ollama.content == absolute.read_bytes()
        assert (
            client.post("/v1/messages").content == (CASSETTES / "anthropic/text.sse").read_bytes()
        )


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="frames the message"):
        Reply.json({}, headers={"Content-Length": "3"})
    with pytest.raises(ValueError, match="drop_after"):
        Reply.openai_text(drop_after=-1)
    with pytest.raises(ValueError, match="chunks"):
        Reply.openai_text(["a", "b"], chunks=3)
    with pytest.raises(ValueError, match="status"):
        Reply.error(42)
    with pytest.raises(TypeError, match="constructor"):
        Reply()


# --- requests, keep-alive -------------------------------------------------------------------------


def test_requests_are_recorded(server: FakeProviderServer) -> None:
    server.default = Reply.json({})
    with httpx2.Client(base_url=server.base_url) as client:
        client.post("/v1/messages?beta=true", json={"model": "m"}, headers={"X-Custom": "Yes"})
        client.post("/v1/responses", content=iter([b'{"a":', b" 1}"]))  # chunked body
        client.post("/api/chat", content=b"not json")
    first, second, third = server.requests
    assert (first.method, first.path, first.query) == ("POST", "/v1/messages", "beta=true")
    assert first.headers["x-custom"] == "Yes"
    assert first.json == {"model": "m"}
    assert first.body == b'{"model":"m"}'
    assert second.headers["transfer-encoding"] == "chunked"
    assert (second.body, second.json) == (b'{"a": 1}', {"a": 1})
    assert (third.body, third.json) == (b"not json", None)
    assert server.last_request is third


def test_keep_alive_serves_many_requests_on_one_connection(server: FakeProviderServer) -> None:
    server.script(
        [
            Reply.json({"n": 1}),
            Reply.cassette("openai-chat/text-no-usage"),
            Reply.error(429, retry_after=1),
            Reply.openai_text("x", chunks=3),
        ]
    )
    with httpx2.Client(base_url=server.base_url) as client:
        assert client.post("/v1/chat/completions").json() == {"n": 1}
        with client.stream("POST", "/v1/chat/completions") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            assert b"".join(response.iter_raw()).endswith(b"data: [DONE]\n\n")
        assert client.post("/v1/chat/completions").status_code == 429
        assert client.post("/v1/chat/completions").text.count("chatcmpl-fake0001") == 6
    stats = server.stats
    assert (stats.connections_opened, stats.requests, stats.streams_completed) == (1, 4, 2)


def test_http_1_0_streams_end_with_the_connection(server: FakeProviderServer) -> None:
    path = CASSETTES / "openai-chat" / "text-no-usage.sse"
    server.enqueue(Reply.cassette(path))
    data = exchange(server, b"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: 0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head
    assert b"connection: close" in head
    assert body == path.read_bytes()  # unframed: the body ends where the connection does


def test_pipelined_requests_are_not_lost(server: FakeProviderServer) -> None:
    server.script([Reply.openai_text("one"), Reply.json({"two": 2})])
    data = exchange(server, chat_request() + chat_request(extra=b"connection: close\r\n"))
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b'"content":"one"' in data
    assert data.endswith(b'{"two":2}')


# --- replay fidelity ------------------------------------------------------------------------------

ALL_FILES = sorted(
    str(p.relative_to(CASSETTES)) for p in CASSETTES.rglob("*") if p.suffix in {".sse", ".ndjson"}
)


@pytest.mark.parametrize("name", ALL_FILES)
def test_cassette_bodies_are_replayed_byte_exact(server: FakeProviderServer, name: str) -> None:
    server.enqueue(Reply.cassette(name))
    with httpx2.Client() as client, client.stream("POST", server.base_url + "/x") as response:
        body = b"".join(response.iter_raw())
    assert body == (CASSETTES / name).read_bytes()
    expected_type = "application/x-ndjson" if name.endswith(".ndjson") else "text/event-stream"
    assert response.headers["content-type"] == expected_type


def test_each_event_is_its_own_write(server: FakeProviderServer) -> None:
    path = CASSETTES / "anthropic" / "text.sse"
    events = raw_events(path)
    server.enqueue(Reply.cassette("anthropic/text", pace=0.02))
    started = time.monotonic()
    with httpx2.Client() as client, client.stream("POST", server.base_url + "/v1/messages") as r:
        received = list(r.iter_raw())
    assert received == events  # paced, so each event arrived on its own
    assert time.monotonic() - started >= 0.02 * (len(events) - 1)


def test_ollama_ndjson_replay_and_synthetic(server: FakeProviderServer) -> None:
    server.script([Reply.cassette("ollama/chat-text"), Reply.ollama_text("ab", chunks=3)])
    lines = (CASSETTES / "ollama" / "chat-text.ndjson").read_text().splitlines()
    expected = "".join(json.loads(line)["message"]["content"] for line in lines)
    with httpx2.Client(base_url=server.base_url) as client:
        for text, count in ((expected, len(lines)), ("ababab", 4)):
            with client.stream("POST", "/api/chat", json={"stream": True}) as response:
                parsed = [json.loads(line) for line in response.iter_lines()]
            assert len(parsed) == count
            assert "".join(p["message"]["content"] for p in parsed) == text
            assert parsed[-1]["done"] is True


def test_synthetic_streams_are_lazy_and_fast(server: FakeProviderServer) -> None:
    started = time.monotonic()
    huge = Reply.openai_text("tok ", chunks=1_000_000)
    assert time.monotonic() - started < 0.1  # nothing encoded yet
    assert huge.events is not None
    server.enqueue(Reply.openai_text("tok ", chunks=20_000))
    with (
        httpx2.Client(base_url=server.openai_base_url) as client,
        client.stream("POST", "/chat/completions") as response,
    ):
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert len(events) == 20_000 + 4  # role, finish, usage, [DONE]
    assert events[1] == events[20_000]
    assert json.loads(events[-2][5:])["usage"]["completion_tokens"] == 20_000


def test_sse_and_ndjson_constructors(server: FakeProviderServer) -> None:
    server.script(
        [
            Reply.sse(
                [{"type": "ping"}, ("error", {"type": "error"}), "[DONE]", b": comment\n\n"],
                named=True,
            ),
            Reply.ndjson([{"a": 1}, "raw", b"bytes\n"]),
        ]
    )
    with httpx2.Client(base_url=server.base_url) as client:
        assert client.post("/x").text == (
            'event: ping\ndata: {"type":"ping"}\n\n'
            'event: error\ndata: {"type":"error"}\n\n'
            "data: [DONE]\n\n: comment\n\n"
        )
        assert client.post("/x").text == '{"a":1}\nraw\nbytes\n'


def test_replies_for_servers_that_bend_the_protocols(server: FakeProviderServer) -> None:
    """A Chat stream with no ``[DONE]``, an event with no ``type`` among named ones, a JSON body
    under any content type, an error in plain text, a Retry-After as an HTTP date."""
    later = datetime.datetime(2030, 1, 2, 3, 4, 5)  # naive: taken as UTC
    server.script(
        [
            Reply.openai_text("x", done=False),
            Reply.sse([{"type": "ping"}, {"error": {"message": "bare"}}], named=True),
            Reply.json(b"data: {}\n\n", content_type="text/event-stream"),
            Reply.error(404, b"404 page not found", content_type="text/plain"),
            Reply.error(429, retry_after=later),
        ]
    )
    with httpx2.Client(base_url=server.base_url) as client:
        r = client.post("/v1/chat/completions")
        assert "[DONE]" not in r.text
        assert r.text.endswith('"total_tokens":9}}\n\n')
        assert client.post("/x").text == (
            'event: ping\ndata: {"type":"ping"}\n\ndata: {"error":{"message":"bare"}}\n\n'
        )
        r = client.post("/x")
        assert (r.headers["content-type"], r.text) == ("text/event-stream", "data: {}\n\n")
        r = client.post("/x")
        assert (r.status_code, r.headers["content-type"]) == (404, "text/plain")
        assert r.text == "404 page not found"
        r = client.post("/x")
        assert r.headers["retry-after"] == "Wed, 02 Jan 2030 03:04:05 GMT"


# --- errors ---------------------------------------------------------------------------------------


def test_error_bodies_take_the_endpoints_shape(server: FakeProviderServer) -> None:
    server.script(
        [
            Reply.error(429, retry_after=2),
            Reply.error(429, retry_after=0.5),
            Reply.error(500),
            Reply.error(529),
            Reply.error(503),
            Reply.error(400, body={"custom": True}, headers={"x-why": "test"}),
        ]
    )
    with httpx2.Client(base_url=server.base_url) as client:
        r = client.post("/v1/chat/completions")
        assert (r.status_code, r.headers["retry-after"]) == (429, "2")
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        r = client.post("/v1/messages")
        assert (r.status_code, r.headers["retry-after"]) == (429, "0.5")
        assert r.json()["error"]["type"] == "rate_limit_error"
        r = client.post("/v1/responses")
        assert (r.status_code, r.json()["error"]["type"]) == (500, "server_error")
        r = client.post("/v1/chat/completions")
        assert (r.status_code, r.reason_phrase) == (529, "Overloaded")
        assert r.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        r = client.post("/api/chat")
        assert r.status_code == 503
        assert isinstance(r.json()["error"], str)
        r = client.post("/v1/messages")
        assert (r.status_code, r.json(), r.headers["x-why"]) == (400, {"custom": True}, "test")


async def test_sdks_see_http_errors(server: FakeProviderServer) -> None:
    server.script(
        [
            Reply.error(429, retry_after=7),
            Reply.error(500),
            Reply.error(529),
            Reply.error(429, retry_after=0.05),
            Reply.openai_text("after retry"),
        ]
    )
    async with openai_client(server) as client:
        with pytest.raises(openai.RateLimitError) as rate:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert rate.value.response.headers["retry-after"] == "7"
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async with anthropic_client(server) as claude:
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await claude.messages.create(model="m", max_tokens=5, messages=MESSAGES)
        assert isinstance(overloaded.value.body, dict)
        assert overloaded.value.body["error"]["type"] == "overloaded_error"
    async with openai_client(server, max_retries=1) as client:
        started = time.monotonic()
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "after retry"
        assert time.monotonic() - started >= 0.05  # the client honoured retry-after
    assert server.stats.requests == 5


# --- faults ---------------------------------------------------------------------------------------


def test_drop_before_headers(server: FakeProviderServer) -> None:
    server.enqueue(Reply.cassette("openai-chat/text-no-usage", drop_before_headers=True))
    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.post(server.openai_base_url + "/chat/completions", json={})
    assert (server.stats.requests, server.stats.streams_started) == (1, 0)


def test_drop_after_n_events(server: FakeProviderServer) -> None:
    events = raw_events(CASSETTES / "anthropic" / "text.sse")
    server.enqueue(Reply.cassette("anthropic/text", drop_after=3))
    received: list[bytes] = []
    with (
        httpx2.Client() as client,
        client.stream("POST", server.base_url + "/v1/messages") as r,
        pytest.raises(httpx2.RemoteProtocolError),
    ):
        received.extend(r.iter_raw())
    assert b"".join(received) == b"".join(events[:3])
    stats = server.wait_for(lambda s: s.active_connections == 0)
    assert (stats.streams_dropped, stats.streams_completed, stats.disconnects_mid_stream) == (
        1,
        0,
        0,
    )


def test_malformed_event(server: FakeProviderServer) -> None:
    events = raw_events(CASSETTES / "openai-chat" / "text-no-usage.sse")
    server.enqueue(Reply.cassette("openai-chat/text-no-usage", malformed_at=2))
    with httpx2.Client() as client:
        body = client.post(server.openai_base_url + "/chat/completions").content
    malformed = b'data: {"malformed": tru\n\n'
    assert body == b"".join(events[:2]) + malformed + b"".join(events[3:])


async def test_sdk_fails_on_malformed_and_dropped_streams(server: FakeProviderServer) -> None:
    server.script(
        [
            Reply.openai_text("x", chunks=5, malformed_at=3),
            Reply.openai_text("x", chunks=5, drop_after=3),
        ]
    )
    async with openai_client(server) as client:
        received: list[Any] = []
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises(ValueError, match="Expecting value"):  # json.JSONDecodeError
            await collect(stream, received)
        assert len(received) == 3
        received.clear()
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError):
            await collect(stream, received)
        assert len(received) == 3


def test_stall_forever_then_client_gives_up(server: FakeProviderServer) -> None:
    server.enqueue(Reply.openai_text("x", chunks=5, stall_after=2))
    received: list[bytes] = []
    timeout = httpx2.Timeout(5, read=0.2)
    with (
        httpx2.Client(timeout=timeout) as client,
        client.stream("POST", server.openai_base_url + "/chat/completions") as response,
        pytest.raises(httpx2.ReadTimeout),
    ):
        received.extend(response.iter_raw())
    assert b"".join(received).count(b"data: ") == 2
    stats = server.wait_for(lambda s: s.active_connections == 0)
    assert stats.disconnects_mid_stream == 1


def test_stall_for_a_while_then_finish(server: FakeProviderServer) -> None:
    path = CASSETTES / "openai-chat" / "tool-call-fragmented.sse"
    server.enqueue(Reply.cassette(path, stall_after=1, stall=0.2))
    started = time.monotonic()
    with httpx2.Client() as client:
        body = client.post(server.base_url + "/v1/chat/completions").content
    assert time.monotonic() - started >= 0.2
    assert body == path.read_bytes()


def test_delay_before_headers(server: FakeProviderServer) -> None:
    server.script([Reply.json({"late": True}, delay=0.1), Reply.openai_text(delay=5)])
    started = time.monotonic()
    with httpx2.Client(timeout=httpx2.Timeout(5, read=0.3)) as client:
        assert client.post(server.base_url + "/x").json() == {"late": True}
        assert time.monotonic() - started >= 0.1
        with pytest.raises(httpx2.ReadTimeout):
            client.post(server.base_url + "/v1/chat/completions")
    stats = server.wait_for(lambda s: s.active_connections == 0)
    assert (stats.disconnects_before_response, stats.streams_started) == (1, 0)


# --- robustness -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\n\r\n", 400),
        (b"GET nowhere HTTP/1.1\r\n\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\nbad header line\r\n\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\ncontent-length: abc\r\n\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\ncontent-length: 1, 2\r\n\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", 400),
        (b"POST /v1/messages HTTP/1.1\r\ncontent-length: 999999999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_http_gets_a_4xx(server: FakeProviderServer, payload: bytes, status: int) -> None:
    server.enqueue(Reply.json({"must": "stay queued"}))
    data = exchange(server, payload)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in data
    assert server.stats.bad_requests == 1
    assert (server.pending, server.stats.requests) == (1, 0)


@pytest.mark.parametrize(
    "stage",
    ["connect", "partial-head", "partial-body", "awaiting-response", "mid-stream", "reset"],
)
def test_client_disconnects_at_any_point(server: FakeProviderServer, stage: str) -> None:
    delay = 5 if stage == "awaiting-response" else 0
    stalled = Reply.openai_text("x", chunks=5, delay=delay, stall_after=1)
    server.enqueue(stalled, path="/v1/chat/completions")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        if stage == "partial-head":
            sock.sendall(b"POST /v1/chat/completions HTT")
        elif stage == "partial-body":
            sock.sendall(chat_request(b"{}")[:-1])
        elif stage != "connect":
            sock.sendall(chat_request())
        if stage in ("mid-stream", "reset"):
            received = b""
            while b"chatcmpl-fake0001" not in received:
                received += sock.recv(65536)
        server.wait_for(lambda s: s.active_connections == 1)
        if stage == "awaiting-response":
            server.wait_for(lambda s: s.requests == 1)
        if stage == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stats = server.wait_for(lambda s: s.active_connections == 0, timeout=2)
    assert stats.disconnects_mid_stream == (stage in ("mid-stream", "reset"))
    assert stats.disconnects_before_response == (stage == "awaiting-response")
    # The server is unharmed and serves the next client.
    server.enqueue(Reply.json({"still": "alive"}))
    assert httpx2.post(server.base_url + "/x").json() == {"still": "alive"}


def test_wait_for_times_out_with_the_stats(server: FakeProviderServer) -> None:
    with pytest.raises(TimeoutError, match="ServerStats"):
        server.wait_for(lambda s: s.requests == 1, timeout=0.05)


# --- the official SDKs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", cassette_names("openai-chat"))
async def test_openai_chat_cassettes_through_the_sdk(server: FakeProviderServer, name: str) -> None:
    expected = payloads(CASSETTES / "openai-chat" / f"{name}.sse")
    server.enqueue(Reply.cassette(f"openai-chat/{name}"), Reply.cassette(f"openai-chat/{name}"))
    async with openai_client(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        chunks = [chunk async for chunk in stream]
        async with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as helper:
            final = await helper.get_final_completion()
    assert [c.model_dump(exclude_unset=True) for c in chunks] == expected
    deltas = [c["choices"][0]["delta"] for c in expected if c["choices"]]
    message = final.choices[0].message
    assert (message.content or "") == "".join(d.get("content") or "" for d in deltas)
    assert (message.refusal or "") == "".join(d.get("refusal") or "" for d in deltas)
    arguments: dict[int, str] = {}
    for delta in deltas:
        for call in delta.get("tool_calls") or []:
            fragment = call.get("function", {}).get("arguments", "")
            arguments[call["index"]] = arguments.get(call["index"], "") + fragment
    assert [c.function.arguments for c in message.tool_calls or []] == list(arguments.values())
    assert server.requests[0].json["stream"] is True
    assert server.requests[0].path == "/v1/chat/completions"


async def test_groq_midserver_reported_error_reaches_the_sdk(server: FakeProviderServer) -> None:
    expected = payloads(CASSETTES / "groq" / "midstream-error-event.sse")
    server.enqueue(Reply.cassette("groq/midstream-error-event"))
    received: list[Any] = []
    async with openai_client(server) as client:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="Tool call validation failed"):
            await collect(stream, received)
    chunks = [p for p in expected if "error" not in p]
    assert len(chunks) == len(expected) - 1
    assert [c.id for c in received] == [c["id"] for c in chunks]


@pytest.mark.parametrize("name", cassette_names("openai-responses"))
async def test_openai_responses_cassettes_through_the_sdk(
    server: FakeProviderServer, name: str
) -> None:
    expected = payloads(CASSETTES / "openai-responses" / f"{name}.sse")
    replay = Reply.cassette(f"openai-responses/{name}")
    server.enqueue(replay, replay)
    async with openai_client(server) as client:
        stream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
        events = [event async for event in stream]
        async with client.responses.stream(model="gpt-4o", input="hi") as helper:
            helper_events = [event async for event in helper]
            if expected[-1]["type"] == "response.completed":
                final = await helper.get_final_response()
                assert final.id == expected[-1]["response"]["id"]
                assert final.usage is not None
                assert (
                    final.usage.output_tokens == expected[-1]["response"]["usage"]["output_tokens"]
                )
    assert [(e.type, e.sequence_number) for e in events] == [
        (p["type"], p["sequence_number"]) for p in expected
    ]
    assert helper_events[-1].type == expected[-1]["type"]
    text = "".join(p["delta"] for p in expected if p["type"] == "response.output_text.delta")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    assert server.last_request.path == "/v1/responses"


@pytest.mark.parametrize("name", cassette_names("anthropic"))
async def test_anthropic_cassettes_through_the_sdk(server: FakeProviderServer, name: str) -> None:
    expected = [p for p in payloads(CASSETTES / "anthropic" / f"{name}.sse") if p["type"] != "ping"]
    replay = Reply.cassette(f"anthropic/{name}")
    server.enqueue(replay, replay)
    async with anthropic_client(server) as client:
        stream = await client.messages.create(
            model="claude-test", max_tokens=64, messages=MESSAGES, stream=True
        )
        events = [event async for event in stream]
        async with client.messages.stream(
            model="claude-test", max_tokens=64, messages=MESSAGES
        ) as helper:
            final = await helper.get_final_message()
    assert [e.type for e in events] == [p["type"] for p in expected]
    starts = [p["content_block"]["type"] for p in expected if p["type"] == "content_block_start"]
    assert [block.type for block in final.content] == starts
    assert final.id == expected[0]["message"]["id"]
    assert final.stop_reason == next(
        p["delta"]["stop_reason"] for p in expected if p["type"] == "message_delta"
    )
    text = "".join(
        p["delta"]["text"]
        for p in expected
        if p["type"] == "content_block_delta" and p["delta"]["type"] == "text_delta"
    )
    assert "".join(b.text for b in final.content if b.type == "text") == text
    assert server.last_request.path == "/v1/messages"
    headers = server.last_request.headers
    assert "test" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert "anthropic-version" in headers


async def test_synthetic_streams_through_the_sdks(server: FakeProviderServer) -> None:
    n = 300
    server.script(
        [
            Reply.openai_text("ab ", chunks=n),
            Reply.openai_text(["a", "b"], usage=False),
            Reply.responses_text("ab ", chunks=n),
            Reply.anthropic_text("ab ", chunks=n),
        ]
    )
    async with openai_client(server) as client:
        async with client.chat.completions.stream(model="m", messages=MESSAGES) as chat:
            completion = await chat.get_final_completion()
        assert completion.choices[0].message.content == "ab " * n
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.completion_tokens == n
        async with client.chat.completions.stream(model="m", messages=MESSAGES) as chat:
            completion = await chat.get_final_completion()
        assert completion.choices[0].message.content == "ab"
        assert completion.usage is None
        async with client.responses.stream(model="m", input="hi") as responses:
            response = await responses.get_final_response()
        assert response.output_text == "ab " * n
        assert response.usage is not None
        assert response.usage.output_tokens == n
    async with anthropic_client(server) as claude:
        async with claude.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as messages:
            message = await messages.get_final_message()
        assert [b.type for b in message.content] == ["text"]
        assert message.content[0].type == "text"
        assert message.content[0].text == "ab " * n
        assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", n)
    assert (server.pending, server.stats.streams_completed) == (0, 4)


@pytest.mark.parametrize("faults", [{"pace": 0.05}, {"stall_after": 3}], ids=["paced", "stalled"])
async def test_client_closing_a_stream_early_is_counted(
    server: FakeProviderServer, faults: Any
) -> None:
    server.enqueue(Reply.openai_text("x", chunks=1000, **faults))
    async with openai_client(server) as client:
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        for _ in range(3):
            await anext(stream)
        assert server.stats.active_connections == 1
        closed_at = time.monotonic()
        await stream.close()
        with anyio.fail_after(2):
            stats = await server.wait_for_async(
                lambda s: s.disconnects_mid_stream == 1 and s.active_connections == 0
            )
        assert time.monotonic() - closed_at < 1.0
    assert stats == ServerStats(
        connections_opened=1,
        connections_closed=1,
        requests=1,
        streams_started=1,
        disconnects_mid_stream=1,
    )
