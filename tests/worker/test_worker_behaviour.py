"""The worker's everyday behaviour: hooks, pause/resume, busy/supersede, limits, bad input."""

from __future__ import annotations

import anyio
import pytest

from llm_worker import (
    Abort,
    Aborted,
    AssistantMessage,
    Cancelled,
    HookFailed,
    Hooks,
    ModelError,
    Pause,
    Skip,
    ToolCall,
    ToolContext,
    ToolFailed,
    ToolResult,
    UserMessage,
    Worker,
    WorkerBusy,
    dump_history,
    load_history,
    tool,
)
from llm_worker.events import (
    ItemCommitted,
    RunFinished,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolFinished,
    ToolStarted,
    TurnEnded,
    TurnStarted,
)
from llm_worker.hooks import HookContext
from llm_worker.items import ReasoningPart
from llm_worker.models.offline import OfflineModel
from llm_worker.testing import history_violations
from llm_worker.testing._scripted import Script, ScriptedModel

pytestmark = pytest.mark.timeout(30)


@tool
async def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


def results(worker: Worker) -> list[ToolResult]:
    return [item for item in worker.history if isinstance(item, ToolResult)]


# -- the loop ----------------------------------------------------------------------------------


async def test_a_tool_round_trip_finishes_with_the_final_answer() -> None:
    model = ScriptedModel([Script.tool_calls(("add", {"a": 2, "b": 3})), "It is 5."])
    result = await Worker(model, tools=[add]).run("2+3?")
    assert result.status == "finished"
    assert result.output == "It is 5."
    kinds = [item.type for item in result.items]
    assert kinds == ["user", "assistant", "tool_call", "tool_result", "assistant"]
    assert result.items[3].content == "5"  # type: ignore[union-attr]
    assert result.turns == 2
    assert result.usage.output_tokens > 0


async def test_reasoning_is_kept_as_a_reasoning_part() -> None:
    model = ScriptedModel([Script.text("Four.", reasoning="Two and two.")])
    result = await Worker(model).run("2+2?")
    message = result.items[-1]
    assert isinstance(message, AssistantMessage)
    assert isinstance(message.parts[0], ReasoningPart)
    assert message.reasoning == "Two and two."
    assert message.text == "Four."


async def test_history_round_trips_through_json_losslessly() -> None:
    model = ScriptedModel(
        [Script.tool_calls(("add", {"a": 1, "b": 1}), text="Let me add."), "Two."]
    )
    worker = Worker(model, tools=[add])
    await worker.run("1+1")
    assert load_history(dump_history(worker.history)) == worker.history


async def test_the_turn_limit_ends_the_run_with_limit_reached() -> None:
    model = ScriptedModel([Script.tool_calls(("add", {"a": 1, "b": 1}))] * 5)
    result = await Worker(model, tools=[add], max_turns=2).run("loop")
    assert result.status == "limit_reached"
    assert result.reason == "the turn limit (2) was reached"
    assert history_violations(list(result.items)) == []


async def test_the_stream_reports_run_events_in_order() -> None:
    model = ScriptedModel([Script.tool_calls(("add", {"a": 1, "b": 2})), "Three."])
    worker = Worker(model, tools=[add])
    kinds: list[str] = []
    async with worker.stream("1+2") as run:
        async for event in run:
            if isinstance(event, TurnStarted | TurnEnded | ToolStarted | ToolFinished):
                kinds.append(event.type)
            last = event
    one_turn = ["turn_started", "turn_ended"]
    assert kinds == [*one_turn, "tool_started", "tool_finished", *one_turn]
    assert isinstance(last, RunFinished)
    assert run.result.output == "Three."
    assert not run.cancel("too late")  # an ended run cannot be cancelled


async def test_the_offline_model_runs_tools_named_in_the_prompt() -> None:
    worker = Worker(OfflineModel(pace=0), tools=[add])
    result = await worker.run("Please use add with 2 and 3.")
    tool_results = [i for i in result.items if isinstance(i, ToolResult)]
    assert [r.content for r in tool_results] == ["5"]
    assert result.status == "finished"


# -- concurrency of runs -----------------------------------------------------------------------


async def test_a_second_concurrent_run_raises_worker_busy_at_once() -> None:
    worker = Worker(ScriptedModel([Script.text("slow", then_hang=True)]))
    async with anyio.create_task_group() as group:
        group.start_soon(_expect_cancelled, worker.run("first"))
        with pytest.raises(WorkerBusy):
            worker.run("second")
        worker.cancel()


async def _expect_cancelled(coro: object) -> None:
    with pytest.raises(Cancelled):
        await coro  # type: ignore[misc]


async def test_supersede_cancels_the_active_run_then_runs_the_new_input() -> None:
    model = ScriptedModel([Script.text("old answer", chunks=2, then_hang=True), "new answer"])
    worker = Worker(model)
    outcome: list[Cancelled] = []

    async def first() -> None:
        try:
            await worker.run("old")
        except Cancelled as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        with anyio.fail_after(5):
            while not worker.history or not isinstance(worker.history[-1], UserMessage):
                await anyio.sleep(0.001)
            await anyio.sleep(0.01)
        result = await worker.run("new", supersede=True)
    assert outcome[0].kind == "superseded"
    assert result.output == "new answer"
    assert history_violations(worker.history) == []


# -- hooks -------------------------------------------------------------------------------------


async def test_a_skipping_hook_gives_the_call_a_skipped_result_never_an_orphan() -> None:
    class NoAdding(Hooks):
        async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Skip:
            return Skip("adding is not allowed")

    model = ScriptedModel([Script.tool_calls(("add", {"a": 1, "b": 1})), "Fine."])
    worker = Worker(model, tools=[add], hooks=[NoAdding()])
    await worker.run("1+1")
    [result] = results(worker)
    assert result.status == "skipped"
    assert "not allowed" in result.content
    assert history_violations(worker.history) == []


async def test_a_pausing_hook_pauses_the_run_and_resume_runs_the_call() -> None:
    asked: list[str] = []

    class Approval(Hooks):
        async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Pause:
            asked.append(call.call_id)
            return Pause("needs a human")

    model = ScriptedModel([Script.tool_calls(("add", {"a": 4, "b": 4})), "Eight."])
    worker = Worker(model, tools=[add], hooks=[Approval()])
    ended: list[object] = []
    worker.on_run(ended.append)
    paused = await worker.run("4+4")
    assert (paused.status, paused.reason) == ("paused", "needs a human")
    assert getattr(ended[-1], "reason", None) == "needs a human"
    assert results(worker) == []
    resumed = await worker.resume()
    assert (resumed.status, resumed.reason) == ("finished", None)
    assert resumed.output == "Eight."
    assert [r.content for r in results(worker)] == ["8"]
    assert len(asked) == 1  # approved by resuming, not asked again


async def test_moving_on_from_a_paused_run_answers_the_paused_calls() -> None:
    class Approval(Hooks):
        async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Pause:
            return Pause()

    model = ScriptedModel([Script.tool_calls(("add", {"a": 1, "b": 1})), "Something else."])
    worker = Worker(model, tools=[add], hooks=[Approval()])
    assert (await worker.run("1+1")).status == "paused"
    await worker.run("never mind")
    [result] = results(worker)
    assert result.status == "cancelled"
    assert history_violations(worker.history) == []


async def test_an_aborting_hook_raises_aborted_with_its_reason() -> None:
    class Guard(Hooks):
        async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> Abort:
            return Abort("prompt rejected")

    worker = Worker(ScriptedModel(["unused"]), hooks=[Guard()])
    with pytest.raises(Aborted) as caught:
        await worker.run("bad words")
    assert caught.value.reason == "prompt rejected"
    assert caught.value.cause.kind == "aborted"


async def test_a_text_delta_hook_can_abort_mid_stream_and_the_text_is_kept() -> None:
    class Censor(Hooks):
        async def on_text_delta(self, ctx: HookContext, text: str) -> Abort | None:
            return Abort("forbidden word") if "secret" in text else None

    model = ScriptedModel([Script.text("public public secret more", chunks=4)])
    worker = Worker(model, hooks=[Censor()])
    with pytest.raises(Aborted) as caught:
        await worker.run("talk")
    message = caught.value.partial.items[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert "secret" in message.text


async def test_an_invalid_decision_is_a_hook_failure() -> None:
    class Wrong(Hooks):
        async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> Skip:
            return Skip()

    with pytest.raises(HookFailed, match="not a valid decision"):
        await Worker(ScriptedModel(["x"]), hooks=[Wrong()]).run("hi")


async def test_a_hook_that_hangs_is_stopped_by_the_run_timeout() -> None:
    class Hangs(Hooks):
        async def before_llm_request(self, ctx: HookContext, request: object) -> None:
            await anyio.sleep_forever()

    worker = Worker(ScriptedModel(["unused", "after"]), hooks=[Hangs()])
    with pytest.raises(Cancelled) as caught:
        await worker.run("hi", timeout=0.1)
    assert caught.value.kind == "deadline"
    worker.hooks.clear()
    assert (await worker.run("again")).status == "finished"


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1, "b": ', "not valid JSON"),
        ('{"a": "one", "b": 2}', "valid integer"),
        ("[1, 2]", "JSON object"),
    ],
)
async def test_invalid_tool_arguments_become_an_error_result_the_model_sees(
    arguments: str, expected: str
) -> None:
    model = ScriptedModel([Script.tool_calls(("add", arguments)), "Sorry."])
    worker = Worker(model, tools=[add])
    result = await worker.run("add")
    [error] = results(worker)
    assert error.status == "error"
    assert expected in error.content
    assert result.status == "finished"
    second_request = model.requests[1]
    assert error in second_request.history


async def test_an_unknown_tool_name_becomes_an_error_result() -> None:
    model = ScriptedModel([Script.tool_calls(("nope", {})), "Oops."])
    worker = Worker(model, tools=[add])
    await worker.run("x")
    [error] = results(worker)
    assert "no tool named 'nope'" in error.content


async def test_a_raising_tool_becomes_an_error_result_by_default() -> None:
    @tool
    async def explode() -> str:
        """Raises."""
        raise RuntimeError("kaboom")

    model = ScriptedModel([Script.tool_calls(("explode", {})), "It failed."])
    worker = Worker(model, tools=[explode])
    assert (await worker.run("x")).status == "finished"
    [error] = results(worker)
    assert error.status == "error"
    assert "RuntimeError: kaboom" in error.content


async def test_a_raising_tool_fails_the_run_when_configured_and_stops_its_siblings() -> None:
    @tool
    async def explode() -> str:
        """Raises."""
        await anyio.sleep(0.01)
        raise RuntimeError("kaboom")

    @tool
    async def patient(ctx: ToolContext) -> str:
        """Waits for cancellation."""
        await ctx.token.wait()
        return "stopped early"

    model = ScriptedModel([Script.tool_calls(("explode", {}), ("patient", {}))])
    worker = Worker(model, tools=[explode, patient], tool_errors="raise")
    with pytest.raises(ToolFailed) as caught:
        await worker.run("x")
    statuses = {r.name: r.status for r in caught.value.partial.items if isinstance(r, ToolResult)}
    assert statuses == {"explode": "error", "patient": "interrupted"}
    assert caught.value.cause.tag == "parallel"
    assert history_violations(worker.history) == []


async def test_a_tool_that_hangs_is_stopped_by_its_timeout() -> None:
    @tool(timeout=0.05)
    async def hangs(ctx: ToolContext) -> str:
        """Hangs until cancelled, then reports."""
        await ctx.token.wait()
        return "gave up"

    model = ScriptedModel([Script.tool_calls(("hangs", {})), "Too slow."])
    worker = Worker(model, tools=[hangs])
    assert (await worker.run("x")).status == "finished"
    [result] = results(worker)
    assert result.status == "interrupted"
    assert "timed out" in result.content


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        ([ToolCallDelta(index=0, arguments="{}")], "before its start"),
        ([ToolCallEnd(index=3)], "without its start"),
    ],
)
async def test_a_malformed_event_sequence_is_a_model_error_and_the_worker_recovers(
    events: list[object], problem: str
) -> None:
    model = ScriptedModel(
        [Script.events([TextDelta(text="Hi "), *events, StopReason(reason="end_turn")]), "Ok."]  # type: ignore[list-item]
    )
    worker = Worker(model, tools=[add])
    with pytest.raises(ModelError, match=problem):
        await worker.run("x")
    assert history_violations(worker.history) == []
    assert (await worker.run("again")).output == "Ok."


async def test_a_model_error_keeps_the_partial_text_and_the_worker_runs_again() -> None:
    model = ScriptedModel([Script.error(ModelError("connection reset"), after=2), "Back."])
    worker = Worker(model)
    with pytest.raises(ModelError) as caught:
        await worker.run("x")
    message = caught.value.partial.items[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert message.text == "partial 1 partial 2 "
    assert (await worker.run("again")).output == "Back."


async def test_commit_listeners_see_every_item_once() -> None:
    model = ScriptedModel([Script.tool_calls(("add", {"a": 1, "b": 2})), "Three."])
    worker = Worker(model, tools=[add])
    seen: list[str] = []
    worker.on_commit(lambda items: seen.extend(item.id for item in items))
    events: list[str] = []
    async with worker.stream("go") as run:
        async for event in run:
            if isinstance(event, ItemCommitted):
                events.append(event.item.id)
    assert seen == events == [item.id for item in worker.history]


async def test_a_fast_tool_result_is_committed_before_its_slow_sibling_ends() -> None:
    slow_started = anyio.Event()

    @tool
    async def fast() -> str:
        """Answers as soon as its sibling is running."""
        await slow_started.wait()
        return "fast answer"

    @tool
    async def slow(ctx: ToolContext) -> str:
        """Waits until cancelled."""
        slow_started.set()
        await ctx.token.wait()
        return "slow partial"

    model = ScriptedModel([Script.tool_calls(("fast", {}), ("slow", {}))])
    worker = Worker(model, tools=[fast, slow])
    committed_while_slow_ran: list[str] = []
    async with worker.stream("go") as run:
        async for event in run:
            if isinstance(event, ToolFinished) and event.result.name == "fast":
                committed_while_slow_ran.extend(r.content for r in results(worker))
                run.cancel("enough")
    assert committed_while_slow_ran == ["fast answer"]
    assert isinstance(run.error, Cancelled)
    assert {r.name: r.status for r in results(worker)} == {"fast": "ok", "slow": "interrupted"}


async def test_a_sync_tool_that_ignores_its_timeout_is_abandoned_and_the_run_goes_on() -> None:
    import threading

    release = threading.Event()

    @tool(timeout=0.05)
    def stuck() -> str:
        """Blocks its thread past its timeout."""
        release.wait(10)
        return "too late"

    model = ScriptedModel([Script.tool_calls(("stuck", {})), "Moving on."])
    worker = Worker(model, tools=[stuck], tool_grace=0.05)
    try:
        with anyio.fail_after(5):
            result = await worker.run("go")
    finally:
        release.set()
    assert result.output == "Moving on."
    [abandoned] = results(worker)
    assert abandoned.status == "abandoned"
    assert "timed out" in abandoned.content


async def test_a_tool_that_cannot_see_a_stop_is_stopped_at_once_and_says_why() -> None:
    """The peers' own tool body (an await, no ToolContext) has no partial output to give, so a
    Stop does not wait out its grace; a tool that takes its context still gets the grace."""
    release = anyio.Event()

    @tool
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await anyio.sleep(60)
        return "page"

    @tool
    async def count(ctx: ToolContext) -> str:
        """Count until stopped."""
        await ctx.token.wait()
        await release.wait()  # holds its grace until the test lets it go
        return "counted to 3"

    model = ScriptedModel([Script.tool_calls(("fetch", {"url": "u"}))])
    worker = Worker(model, tools=[fetch, count], tool_grace=20)
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_when_a_tool_started, worker)
        with anyio.fail_after(10), pytest.raises(Cancelled) as stopped:  # the bug: 20 s
            await worker.run("go")
    (result,) = [i for i in stopped.value.partial.items if isinstance(i, ToolResult)]
    assert result.status == "cancelled"
    assert "no grace period" in result.content

    model = ScriptedModel([Script.tool_calls(("count", {}))])
    worker = Worker(model, tools=[fetch, count], tool_grace=20)
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_when_a_tool_started, worker)
        group.start_soon(_release_soon, release)
        with pytest.raises(Cancelled) as stopped:
            await worker.run("go")
    (result,) = [i for i in stopped.value.partial.items if isinstance(i, ToolResult)]
    assert result.status == "interrupted"
    assert result.content.startswith("counted to 3")


async def _cancel_when_a_tool_started(worker: Worker) -> None:
    with anyio.fail_after(10):
        while not any(isinstance(i, ToolCall) for i in worker.history):
            await anyio.sleep(0.01)
    await anyio.sleep(0.05)
    worker.cancel("the user pressed Stop")


async def _release_soon(release: anyio.Event) -> None:
    await anyio.sleep(0.3)
    release.set()
