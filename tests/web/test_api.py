"""The API over real HTTP against Hypercorn (asyncio and trio): chats, Stop, disconnects,
supersede, and what the session keeps. Streams are read as the AI SDK reads them."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2

from llm_worker.items import AssistantMessage, ToolResult, UserMessage
from llm_worker.models import OfflineModel
from llm_worker.store import SQLiteStore
from llm_worker.testing import history_violations

from ._chunks import BlockDelta, ToolInputAvailable, UIMessageReader
from .conftest import RunningServer, chat_body, read_stream, wait_until

SLOW_TOOL = "use slow_count to 40"  # offline: slow_count(to=40, step=0.5), silent for 20 s


def offline(pace: float) -> Any:
    return lambda: OfflineModel(pace=pace)


async def stream_until(
    client: httpx2.AsyncClient,
    server: RunningServer,
    body: dict[str, Any],
    seen: Any,
    then: Any,
) -> UIMessageReader:
    """Post ``body``, read until ``seen(chunk)``, call ``then()``, and read to the end."""
    reader = UIMessageReader()
    async with client.stream("POST", f"{server.url}/api/chat", json=body) as response:
        assert response.status_code == 200
        acted = False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            reader.feed_line(line[6:])
            if not acted and reader.chunks and seen(reader.chunks[-1]):
                acted = True
                await then()
    assert reader.done
    return reader


async def cancel(client: httpx2.AsyncClient, server: RunningServer, chat: str, **body: Any) -> Any:
    response = await client.post(f"{server.url}/api/chats/{chat}/cancel", json=body)
    assert response.status_code == 200, response.text
    return response.json()["cancelled"]


def stored(server: RunningServer, chat: str) -> list[Any]:
    with SQLiteStore(server.db) as store:
        return store.load_history(chat)


async def nothing_left(server: RunningServer) -> None:
    await wait_until(lambda: server.registry.active == 0 and server.registry.running == 0)


def is_text(chunk: Any) -> bool:
    return isinstance(chunk, BlockDelta) and chunk.type == "text-delta"


def is_tool_running(chunk: Any) -> bool:
    return isinstance(chunk, ToolInputAvailable)


async def test_a_full_chat_with_a_tool_streams_every_part_and_is_kept(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.001), tools="demo")
    body = chat_body("full", "get_weather for Paris")
    async with client.stream("POST", f"{server.url}/api/chat", json=body) as response:
        reader = await read_stream(response)
    assert reader.ending == "finish"
    (call,) = reader.tools.values()
    assert call["name"] == "get_weather"
    assert call["state"] == "output-available"
    assert "Paris" in call["output"]
    assert reader.text
    kinds = [chunk.type for chunk in reader.chunks]  # type: ignore[attr-defined]
    assert kinds[:2] == ["start", "start-step"]
    assert kinds.count("start-step") == 2
    chat = (await client.get(f"{server.url}/api/chats/full")).json()
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    parts = chat["messages"][1]["parts"]
    assert any(p["type"] == "tool-get_weather" and p["state"] == "output-available" for p in parts)
    listed = (await client.get(f"{server.url}/api/chats")).json()["chats"]
    assert [c["id"] for c in listed] == ["full"]
    assert listed[0]["title"] == "get_weather for Paris"
    await nothing_left(server)


async def test_stop_mid_stream_keeps_the_text_ends_with_abort_and_the_chat_goes_on(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.02))

    async def stop() -> None:
        assert await cancel(client, server, "s1", reason="enough") is True

    reader = await stream_until(client, server, chat_body("s1", "tell me a story"), is_text, stop)
    assert reader.ending == "abort"
    assert reader.data_of("interrupted") == [{"kind": "explicit", "reason": "enough"}]
    kept = [i for i in stored(server, "s1") if isinstance(i, AssistantMessage)]
    assert kept[-1].interrupted
    assert kept[-1].text == reader.text != ""
    async with client.stream("POST", f"{server.url}/api/chat", json=chat_body("s1", "again")) as r:
        assert (await read_stream(r)).ending == "finish"
    history = (await client.get(f"{server.url}/api/chats/s1")).json()["messages"]
    marks = [p for p in history[1]["parts"] if p["type"] == "data-interrupted"]
    assert len(marks) == 1
    await nothing_left(server)


async def test_stop_mid_tool_delivers_the_tools_partial_output(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.001), tools="demo")

    async def stop() -> None:
        await anyio.sleep(0.6)  # the tool counts one number per 0.5 s
        assert await cancel(client, server, "t1") is True

    reader = await stream_until(client, server, chat_body("t1", SLOW_TOOL), is_tool_running, stop)
    assert reader.ending == "abort"
    (call,) = reader.tools.values()
    assert call["state"] == "output-available"
    assert "before being stopped" in call["output"]
    assert reader.data_of("tool-result")[-1]["status"] == "interrupted"
    results = [i for i in stored(server, "t1") if isinstance(i, ToolResult)]
    assert results[-1].status == "interrupted"
    assert "before being stopped" in results[-1].content
    await nothing_left(server)


async def test_stop_during_retry_back_off_ends_the_run_at_once(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    from llm_worker.models import OpenAIChatModel
    from llm_worker.testing import FakeProviderServer, Reply

    with FakeProviderServer() as provider:
        provider.enqueue(Reply.error(429, retry_after=60), Reply.error(429, retry_after=60))
        server = server_factory(
            model_factory=lambda: OpenAIChatModel(
                "gpt-4o-mini", base_url=provider.openai_base_url, api_key="test"
            )
        )

        async def stop() -> None:
            assert await cancel(client, server, "b1") is True

        def retrying(chunk: Any) -> bool:
            return chunk.type == "data-retrying"

        with anyio.fail_after(20):  # a 60 s back-off: only a prompt Stop ends it in time
            reader = await stream_until(client, server, chat_body("b1", "hi"), retrying, stop)
    assert reader.ending == "abort"
    assert reader.data_of("retrying")[0]["delay"] > 1
    await nothing_left(server)


async def test_a_disconnect_mid_stream_cancels_the_run_and_keeps_what_was_said(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.02))
    async with client.stream("POST", f"{server.url}/api/chat", json=chat_body("d1", "hi")) as r:
        async for line in r.aiter_lines():
            if '"text-delta"' in line:
                break
    await nothing_left(server)
    history = stored(server, "d1")
    assert isinstance(history[-1], AssistantMessage)
    assert history[-1].interrupted
    runs = SQLiteStore(server.db).runs("d1")
    assert runs[-1].outcome == "cancelled"
    assert runs[-1].reason == "the client disconnected"
    chat = (await client.get(f"{server.url}/api/chats/d1")).json()
    (mark,) = [p for p in chat["messages"][-1]["parts"] if p["type"] == "data-interrupted"]
    assert mark["data"]["reason"] == "the client disconnected"


async def test_a_disconnect_during_a_silent_tool_cancels_it_promptly(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.001), tools="demo")
    async with client.stream(
        "POST", f"{server.url}/api/chat", json=chat_body("d2", SLOW_TOOL)
    ) as r:
        async for line in r.aiter_lines():
            if '"tool-input-available"' in line:
                break
    with anyio.fail_after(10):  # the tool would run 20 s: the watcher must notice at once
        await nothing_left(server)
    results = [i for i in stored(server, "d2") if isinstance(i, ToolResult)]
    assert results[-1].status == "interrupted"
    assert history_violations(stored(server, "d2")) == []


async def test_a_new_message_supersedes_the_running_one(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.02))
    newer: dict[str, UIMessageReader] = {}

    async def send_newer() -> None:
        async def post() -> None:
            async with client.stream(
                "POST", f"{server.url}/api/chat", json=chat_body("sup", "newer")
            ) as response:
                newer["reader"] = await read_stream(response)

        group.start_soon(post)

    async with anyio.create_task_group() as group:
        older = await stream_until(client, server, chat_body("sup", "older"), is_text, send_newer)
    assert older.ending == "abort"
    assert older.data_of("interrupted")[0]["kind"] == "superseded"
    assert newer["reader"].ending == "finish"
    history = stored(server, "sup")
    assert [i.text for i in history if isinstance(i, UserMessage)] == ["older", "newer"]
    assert history_violations(history) == []
    await nothing_left(server)


async def test_a_double_stop_is_harmless_and_never_hits_the_next_run(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.02))

    async def stop_twice() -> None:
        assert await cancel(client, server, "dbl") is True
        assert await cancel(client, server, "dbl") is False

    reader = await stream_until(client, server, chat_body("dbl", "hi"), is_text, stop_twice)
    assert reader.ending == "abort"
    await nothing_left(server)
    assert await cancel(client, server, "dbl") is False  # idle: a no-op
    async with client.stream("POST", f"{server.url}/api/chat", json=chat_body("dbl", "go")) as r:
        assert (await read_stream(r)).ending == "finish"
    missing = await client.post(f"{server.url}/api/chats/nope/cancel", json={})
    assert missing.status_code == 404
    assert "error" in missing.json()


async def test_a_continue_resumes_an_interrupted_answer(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=offline(0.02))

    async def stop() -> None:
        await cancel(client, server, "res")

    await stream_until(client, server, chat_body("res", "hi"), is_text, stop)
    body = chat_body("res", "hi", trigger="regenerate-message", resume=True)
    async with client.stream("POST", f"{server.url}/api/chat", json=body) as response:
        reader = await read_stream(response)
    assert reader.ending == "finish"
    assert reader.text
    history = stored(server, "res")
    assert sum(isinstance(i, UserMessage) for i in history) == 1
    await nothing_left(server)


async def test_a_server_shutdown_stops_runs_gracefully_and_the_chat_reopens(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    first = server_factory(model_factory=offline(0.02))

    async def shut_down() -> None:
        await anyio.to_thread.run_sync(first.stop)

    reader = await stream_until(client, first, chat_body("re", "hi"), is_text, shut_down)
    assert reader.ending == "abort"
    assert reader.data_of("interrupted")[0]["reason"] == "the server is shutting down"
    from .conftest import start_server

    second = start_server(first.backend, first.db, model_factory=offline(0.001))
    try:
        chat = (await client.get(f"{second.url}/api/chats/re")).json()
        assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
        assert chat["messages"][1]["parts"][-1]["type"] == "data-interrupted"
        body = chat_body("re", "more")
        async with client.stream("POST", f"{second.url}/api/chat", json=body) as response:
            assert (await read_stream(response)).ending == "finish"
        assert history_violations(stored(second, "re")) == []
    finally:
        second.stop()
