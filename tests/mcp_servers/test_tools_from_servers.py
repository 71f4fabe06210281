"""MCP servers as tool sources: listing, calling, results, names, annotations, progress."""

from __future__ import annotations

import json
from pathlib import Path

from llm_worker import Worker, tool
from llm_worker.events import ToolProgress
from llm_worker.hooks import Decision, HookContext, Hooks, Skip
from llm_worker.items import ToolCall, ToolResult, dump_item, load_item
from llm_worker.mcp import MCPServer
from llm_worker.store import SQLiteStore
from llm_worker.testing import Script, ScriptedModel

from .conftest import HTTPProbe, ProbeLog


def results(items: list) -> list[ToolResult]:  # type: ignore[type-arg]
    return [item for item in items if isinstance(item, ToolResult)]


async def test_time_server_from_pypi_lists_and_answers(time_server: MCPServer) -> None:
    model = ScriptedModel(
        [Script.tool_calls(("get_current_time", {"timezone": "Europe/Paris"})), "It is late."]
    )
    async with Worker(model, tools=[time_server]) as worker:
        result = await worker.run("What time is it in Paris?")
        names = [spec.name for spec in model.requests[0].tools]
    assert {"get_current_time", "convert_time"} <= set(names)
    (answer,) = results(result.items)
    assert answer.status == "ok"
    assert json.loads(answer.content)["timezone"] == "Europe/Paris"


async def test_input_schemas_reach_the_model_as_the_server_listed_them(web: MCPServer) -> None:
    server = web
    async with server:
        (count,) = [t for t in await server.list_tools() if t.name == "count"]
        session = (await server.connection()).session
        assert session is not None
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert count.spec.parameters == listed["count"].input_schema
    assert count.spec.strict is False


async def test_results_keep_images_and_resources_and_the_store_round_trips_them(
    web: MCPServer, tmp_path: Path
) -> None:
    model = ScriptedModel([Script.tool_calls(("picture", {}), ("refuse", {})), "Seen."])
    async with Worker(model, tools=[web]) as worker:
        result = await worker.run("Show me.")
    by_name = {r.name: r for r in results(result.items)}  # committed as each call ends
    picture, refused = by_name["picture"], by_name["refuse"]
    assert picture.status == "ok"
    assert picture.content.startswith("a red dot")
    assert [a.type for a in picture.attachments] == ["image", "resource"]
    assert picture.attachments[0].data == "iVBORw0KGgo="
    assert picture.attachments[1].text == "the notes"
    assert refused.status == "error"
    assert refused.content == "no such city"  # the model sees the server's error text

    store = SQLiteStore(tmp_path / "sessions.db")
    try:
        session = store.open_session("pictures")
        session.extend(list(result.items))
        session.flush()
        reopened = store.load_history("pictures")
    finally:
        store.close()
    assert picture in reopened
    assert load_item(dump_item(picture)) == picture


async def test_a_clashing_name_is_prefixed_with_the_server_name(web: MCPServer) -> None:
    @tool
    async def echo(text: str) -> str:
        """The local echo."""
        return f"local {text}"

    model = ScriptedModel(
        [Script.tool_calls(("echo", {"text": "a"}), ("probe_echo", {"text": "b"})), "Done."]
    )
    async with Worker(model, tools=[echo, web]) as worker:
        result = await worker.run("Echo twice.")
    assert sorted(r.content for r in results(result.items)) == ["b", "local a"]
    names = [spec.name for spec in model.requests[0].tools]
    assert names.count("echo") == 1
    assert "probe_echo" in names


async def test_annotations_let_a_hook_refuse_destructive_calls(web: MCPServer) -> None:
    seen: dict[str, object] = {}

    class AskBeforeDestroying(Hooks):
        async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Decision:
            annotations = ctx.tool(call.name).annotations  # type: ignore[union-attr]
            seen[call.name] = annotations
            if annotations is not None and annotations.destructive:
                return Skip("destructive: needs approval")
            return None

    model = ScriptedModel(
        [Script.tool_calls(("count", {"steps": 1}), ("hang", {"seconds": 0})), "Ok."]
    )
    async with Worker(model, tools=[web], hooks=[AskBeforeDestroying()]) as worker:
        result = await worker.run("Go.")
    by_name = {r.name: r for r in results(result.items)}
    counted, hung = by_name["count"], by_name["hang"]
    assert counted.status == "skipped"
    assert "needs approval" in counted.content
    assert hung.status == "ok"
    assert seen["hang"].read_only is True  # type: ignore[attr-defined]


async def test_progress_notifications_become_run_events(web: MCPServer) -> None:
    model = ScriptedModel([Script.tool_calls(("count", {"steps": 3, "delay": 0})), "Done."])
    async with Worker(model, tools=[web]) as worker, worker.stream("Count.") as run:
        progress = [event async for event in run if isinstance(event, ToolProgress)]
    assert [(p.progress, p.total, p.message) for p in progress] == [
        (1, 3, "counted 1"),
        (2, 3, "counted 2"),
        (3, 3, "counted 3"),
    ]
    assert all(p.name == "count" for p in progress)


async def test_streamable_http_server_lists_calls_and_is_reconnected_after_a_drop(
    http_probe: HTTPProbe, probe_log: ProbeLog
) -> None:
    server = MCPServer.http(http_probe.url, headers={"X-Test": "yes"}, name="web")
    replies: list[Script | str] = []
    for text in ("one", "two", "three"):
        replies += [Script.tool_calls(("echo", {"text": text})), "Echoed."]
    async with Worker(ScriptedModel(replies), tools=[server]) as worker:
        first = await worker.run("Echo.")
        http_probe.restart()  # the service drops every session
        second = await worker.run("Echo again.")
        third = await worker.run("And again.")
    assert [(r.status, r.content) for r in results(first.items)] == [("ok", "one")]
    # The call on the dropped session is an error the model sees; the next use reconnects.
    (dropped,) = results(second.items)
    assert dropped.status == "error"
    assert "went away during the call of 'echo'" in dropped.content
    assert [(r.status, r.content) for r in results(third.items)] == [("ok", "three")]
    assert len(probe_log.pids()) == 2
