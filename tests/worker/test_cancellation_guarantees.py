"""The guarantees of docs/cancellation.md, one test per guarantee (numbered as there), on
every backend."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import anyio
import pytest

from llm_worker import (
    AssistantMessage,
    Cancelled,
    CancelToken,
    Hooks,
    ModelError,
    Note,
    ToolCall,
    ToolContext,
    ToolResult,
    UserMessage,
    Worker,
    tool,
)
from llm_worker.cancel import Cause
from llm_worker.events import TextDelta
from llm_worker.hooks import HookContext
from llm_worker.testing import history_violations
from llm_worker.testing._scripted import Script, ScriptedModel

pytestmark = pytest.mark.timeout(30)


class AbortLog(Hooks):
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.causes: list[Cause] = []

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        self.reasons.append(reason)
        self.causes.append(cause)


@tool
async def slow_count(limit: int, ctx: ToolContext) -> str:
    """Count to ``limit``, slowly; stops early (with partial output) when cancelled."""
    counted = 0
    while counted < limit and not ctx.cancelled:
        await anyio.sleep(0.01)
        counted += 1
    return f"counted to {counted}"


def hanging_text(text: str = "Partial answer so far") -> Script:
    return Script.text(text, chunks=4, then_hang=True)


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.001)


async def stop_when(
    ready: Callable[[], bool], stop: Callable[[], object], settle: float = 0
) -> None:
    """The tests' Stop button: once ``ready()``, wait ``settle`` seconds, then ``stop()``."""
    await wait_for(ready)
    if settle:
        await anyio.sleep(settle)
    stop()


def called(worker: Worker) -> bool:
    return any(isinstance(item, ToolCall) for item in worker.history)


def streamed(worker: Worker) -> bool:
    return bool(worker._active and worker._active.timeline and worker._active.timeline.blocks)


# -- 1. who can cancel ---------------------------------------------------------------------


async def test_1_cancel_from_another_task_stops_mid_stream_and_keeps_text() -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    async with anyio.create_task_group() as group:

        async def stop() -> None:
            await wait_for(lambda: streamed(worker))
            assert worker.cancel("user pressed Stop")

        group.start_soon(stop)
        with pytest.raises(Cancelled) as caught:
            await worker.run("hello")
    assert caught.value.reason == "user pressed Stop"
    assert caught.value.kind == "explicit"
    message = caught.value.partial.items[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert message.text.startswith("Partial")


async def test_1_cancel_from_another_thread_while_the_loop_waits() -> None:
    worker = Worker(ScriptedModel([hanging_text()]))

    def stop_button() -> None:
        deadline = time.monotonic() + 5
        while not streamed(worker) and time.monotonic() < deadline:
            time.sleep(0.001)
        worker.cancel("Stop button")

    thread = threading.Thread(target=stop_button)
    thread.start()
    try:
        with pytest.raises(Cancelled) as caught:
            await worker.run("hello")
    finally:
        thread.join()
    assert caught.value.reason == "Stop button"
    assert "thread Thread" in str(caught.value.cause)


async def test_1_cancel_via_the_token_passed_to_run() -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    token = CancelToken()
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when, lambda: streamed(worker), lambda: token.cancel("token says stop")
        )
        with pytest.raises(Cancelled) as caught:
            await worker.run("hello", token=token)
    assert caught.value.reason == "token says stop"


async def test_1_a_parent_token_cancels_the_run_with_kind_parent() -> None:
    parent = CancelToken("agent")
    worker = Worker(ScriptedModel([hanging_text()]))
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when, lambda: streamed(worker), lambda: parent.cancel("parent agent stopped")
        )
        with pytest.raises(Cancelled) as caught:
            await worker.run("hello", token=parent.child())
    assert caught.value.kind == "parent"
    assert caught.value.reason == "parent agent stopped"


async def test_1_outer_task_cancellation_cleans_up_then_reraises_the_framework_exception() -> None:
    log = AbortLog()
    worker = Worker(ScriptedModel([hanging_text()]), hooks=[log])
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(stop_when, lambda: streamed(worker), lambda: scope.cancel())
            await worker.run("hello")
        pytest.fail("the outer cancellation was swallowed")
    assert scope.cancelled_caught
    assert len(log.reasons) == 1
    assert log.causes[0].kind == "external"
    message = worker.history[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert not worker.running


async def test_1_ctrl_c_raised_inside_the_run_keeps_the_text_then_propagates(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "trio":
        pytest.skip("asyncio turns Ctrl-C into a cancellation of the main task (kind external)")

    class CtrlCMidAnswer(AbortLog):
        async def on_text_delta(self, ctx: HookContext, text: str) -> None:
            if text.startswith("answer"):  # the second chunk: some text is already streamed
                signal.raise_signal(signal.SIGINT)  # trio raises KeyboardInterrupt right here

    log = CtrlCMidAnswer()
    worker = Worker(ScriptedModel([hanging_text(), "Again."]), hooks=[log])
    boundaries: list[object] = []
    worker.on_run(boundaries.append)
    with pytest.raises(KeyboardInterrupt):
        await worker.run("hello")
    assert [cause.kind for cause in log.causes] == ["keyboard_interrupt"]
    assert getattr(boundaries[-1], "kind", None) == "keyboard_interrupt"
    message = worker.history[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert message.text.startswith("Partial")
    assert (await worker.run("go on")).output == "Again."
    assert any(
        isinstance(item, Note) and "keyboard_interrupt" in item.text for item in worker.history
    )


async def test_1_ctrl_c_raised_inside_a_tool_answers_every_call_then_propagates(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "trio":
        pytest.skip("asyncio turns Ctrl-C into a cancellation of the main task (kind external)")

    @tool
    async def press_ctrl_c() -> str:
        """Ctrl-C arrives while this tool runs."""
        signal.raise_signal(signal.SIGINT)
        return "never"

    log = AbortLog()
    model = ScriptedModel([Script.tool_calls(("press_ctrl_c", {}), ("slow_count", {"limit": 500}))])
    worker = Worker(model, tools=[press_ctrl_c, slow_count], hooks=[log])
    with pytest.raises((KeyboardInterrupt, BaseExceptionGroup)) as caught:  # in a task group
        await worker.run("go")
    assert caught.type is KeyboardInterrupt or caught.group_contains(KeyboardInterrupt)
    assert [cause.kind for cause in log.causes] == ["keyboard_interrupt"]
    assert history_violations(worker.history) == []
    assert not worker.running


# -- 2. no lost cancels, no stale cancels ---------------------------------------------------


async def test_2_cancel_between_run_requested_and_run_started_takes_effect() -> None:
    model = ScriptedModel(["never streamed"])
    worker = Worker(model)
    outcome: list[BaseException] = []

    requested = worker.run("hello")  # registered now; it starts when the task first runs

    async def run() -> None:
        try:
            await requested
        except Cancelled as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        assert worker.cancel("too late to start")
    assert len(outcome) == 1
    assert model.requests == []


async def test_2_cancel_while_idle_returns_false_and_does_not_touch_the_next_run() -> None:
    worker = Worker(ScriptedModel(["first", "second"]))
    assert not worker.cancel("double-clicked Stop")
    assert (await worker.run("one")).output == "first"
    assert not worker.cancel("clicked after it finished")
    assert (await worker.run("two")).output == "second"


async def test_2_each_run_gets_a_fresh_token_so_the_worker_runs_after_a_cancel() -> None:
    worker = Worker(ScriptedModel([hanging_text(), "after the cancel"]))
    async with anyio.create_task_group() as group:
        group.start_soon(stop_when, lambda: streamed(worker), lambda: worker.cancel())
        with pytest.raises(Cancelled):
            await worker.run("first")
    result = await worker.run("second")
    assert result.status == "finished"
    assert result.output == "after the cancel"


async def test_2_a_pre_cancelled_token_stops_the_run_before_the_first_request() -> None:
    model = ScriptedModel(["unused"])
    token = CancelToken()
    token.cancel("not today")
    with pytest.raises(Cancelled) as caught:
        await Worker(model).run("hello", token=token)
    assert caught.value.reason == "not today"
    assert model.requests == []


# -- 3. promptness at every kind of await ----------------------------------------------------


async def test_3_cancel_is_noticed_while_a_hook_awaits() -> None:
    class SlowHook(Hooks):
        entered = False

        async def before_llm_request(self, ctx: HookContext, request: object) -> None:
            SlowHook.entered = True
            await anyio.sleep(30)

    worker = Worker(ScriptedModel(["unused"]), hooks=[SlowHook()])
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when, lambda: SlowHook.entered, lambda: worker.cancel("hook too slow")
        )
        with anyio.fail_after(5), pytest.raises(Cancelled):
            await worker.run("hello")


async def test_3_cancel_is_noticed_while_the_stream_is_being_opened() -> None:
    class SlowOpen(ScriptedModel):
        opening = False

        def stream(self, request):  # type: ignore[no-untyped-def]
            inner = super().stream(request)

            class Opening:
                async def __aenter__(self_inner):  # type: ignore[no-untyped-def]
                    SlowOpen.opening = True
                    await anyio.sleep(30)
                    return await inner.__aenter__()

                async def __aexit__(self_inner, *exc):  # type: ignore[no-untyped-def]
                    return await inner.__aexit__(*exc)

            return Opening()

    worker = Worker(SlowOpen(["unused"]))
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when, lambda: SlowOpen.opening, lambda: worker.cancel("slow to connect")
        )
        with anyio.fail_after(5), pytest.raises(Cancelled):
            await worker.run("hello")


async def test_3_cancel_is_noticed_during_tools() -> None:
    model = ScriptedModel([Script.tool_calls(("slow_count", {"limit": 100_000}))])
    worker = Worker(model, tools=[slow_count])
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when,
            lambda: called(worker),
            lambda: worker.cancel("enough counting"),
            0.05,
        )
        with anyio.fail_after(5), pytest.raises(Cancelled):
            await worker.run("count")


# -- 4. graceful for tools --------------------------------------------------------------------


async def test_4_a_cooperative_tool_returns_partial_output_within_its_grace() -> None:
    model = ScriptedModel([Script.tool_calls(("slow_count", {"limit": 100_000}))])
    worker = Worker(model, tools=[slow_count], tool_grace=5)
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when,
            lambda: called(worker),
            lambda: worker.cancel("enough"),
            0.05,
        )
        with pytest.raises(Cancelled) as caught:
            await worker.run("count")
    result = caught.value.partial.items[-1]
    assert isinstance(result, ToolResult)
    assert result.status == "interrupted"
    assert result.content.startswith("counted to ")
    assert "partial" in result.content


async def test_4_a_tool_that_ignores_its_token_is_cancelled_hard_after_the_grace() -> None:
    @tool
    async def stubborn() -> str:
        """Ignores its token."""
        await anyio.sleep(60)
        return "never"

    model = ScriptedModel([Script.tool_calls(("stubborn", {}))])
    worker = Worker(model, tools=[stubborn], tool_grace=0.05)
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when,
            lambda: called(worker),
            lambda: worker.cancel("stop"),
        )
        with anyio.fail_after(5), pytest.raises(Cancelled) as caught:
            await worker.run("go")
    result = caught.value.partial.items[-1]
    assert isinstance(result, ToolResult)
    assert result.status == "cancelled"


async def test_4_a_sync_tool_that_ignores_cancellation_is_abandoned_and_reported() -> None:
    release = threading.Event()

    @tool
    def blocking() -> str:
        """Blocks its thread and never looks at its token."""
        release.wait(10)
        return "too late"

    model = ScriptedModel([Script.tool_calls(("blocking", {}))])
    worker = Worker(model, tools=[blocking], tool_grace=0.05)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                stop_when,
                lambda: called(worker),
                lambda: worker.cancel("stop"),
                0.02,
            )
            with anyio.fail_after(5), pytest.raises(Cancelled) as caught:
                await worker.run("go")
    finally:
        release.set()
    result = caught.value.partial.items[-1]
    assert isinstance(result, ToolResult)
    assert result.status == "abandoned"
    assert "left running" in result.content


# -- 5. lossless -------------------------------------------------------------------------------


async def test_5_completed_tool_results_are_kept_and_every_call_is_answered() -> None:
    @tool
    async def quick() -> str:
        """Answers at once."""
        return "quick answer"

    model = ScriptedModel([Script.tool_calls(("quick", {}), ("slow_count", {"limit": 100_000}))])
    worker = Worker(model, tools=[quick, slow_count], tool_grace=0.0)
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when,
            lambda: called(worker),
            lambda: worker.cancel("stop"),
            0.05,
        )
        with pytest.raises(Cancelled) as caught:
            await worker.run("go")
    results = {i.name: i for i in caught.value.partial.items if isinstance(i, ToolResult)}
    assert results["quick"].status == "ok"
    assert results["quick"].content == "quick answer"
    assert results["slow_count"].status in ("interrupted", "cancelled")
    assert history_violations(worker.history) == []


async def test_5_a_call_whose_arguments_never_finished_is_not_executed_and_is_reported() -> None:
    executed: list[int] = []

    @tool
    async def record(n: int) -> str:
        """Records that it ran."""
        executed.append(n)
        return "ran"

    model = ScriptedModel([Script.tool_calls(("record", {"n": 1}), then_hang=True)])
    worker = Worker(model, tools=[record])
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when, lambda: streamed(worker), lambda: worker.cancel("cut off"), 0.02
        )
        with pytest.raises(Cancelled) as caught:
            await worker.run("go")
    assert executed == []
    call = next(i for i in caught.value.partial.items if isinstance(i, ToolCall))
    assert not call.complete
    result = next(i for i in caught.value.partial.items if isinstance(i, ToolResult))
    assert result.status == "cancelled"
    assert "cut off" in result.content
    assert history_violations(worker.history) == []


# -- 6. on_abort exactly once for every interruption -----------------------------------------


@pytest.mark.parametrize(
    "scenario", ["cancel", "timeout", "model_error", "hook_abort", "hook_error", "tool_error"]
)
async def test_6_on_abort_runs_exactly_once_for_every_kind_of_interruption(scenario: str) -> None:
    from llm_worker import Abort, RunError

    class Aborting(Hooks):
        async def before_llm_request(self, ctx: HookContext, request: object) -> Abort | None:
            if scenario == "hook_abort":
                return Abort("policy says no")
            if scenario == "hook_error":
                raise RuntimeError("hook bug")
            return None

    @tool
    async def broken() -> str:
        """Always fails."""
        raise ValueError("tool bug")

    scripts = {
        "cancel": hanging_text(),
        "timeout": hanging_text(),
        "model_error": Script.error(ModelError("provider fell over"), after=2),
        "hook_abort": Script.text("unused"),
        "hook_error": Script.text("unused"),
        "tool_error": Script.tool_calls(("broken", {})),
    }
    log = AbortLog()
    worker = Worker(
        ScriptedModel([scripts[scenario]]),
        tools=[broken],
        hooks=[Aborting(), log],
        tool_errors="raise",
    )
    async with anyio.create_task_group() as group:
        if scenario == "cancel":
            group.start_soon(stop_when, lambda: streamed(worker), lambda: worker.cancel("stop"))
        with pytest.raises(RunError):
            await worker.run("go", timeout=0.2 if scenario == "timeout" else None)
    assert len(log.reasons) == 1
    assert history_violations(worker.history) == []


async def test_6_a_failing_on_abort_hook_is_reported_and_does_not_replace_the_error() -> None:
    class Broken(Hooks):
        async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
            raise RuntimeError("clean-up bug")

    log = AbortLog()
    worker = Worker(
        ScriptedModel([Script.error(ModelError("boom"), after=1)]), hooks=[Broken(), log]
    )
    with pytest.raises(ModelError) as caught:
        await worker.run("go")
    assert str(caught.value) == "boom"
    assert [type(e) for e in caught.value.cleanup_errors] == [RuntimeError]
    assert len(log.reasons) == 1  # the hook after the broken one still ran


async def test_6_on_abort_is_shielded_and_bounded_in_time() -> None:
    class SlowCleanup(Hooks):
        finished = False

        async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
            await anyio.sleep(0.05)  # a second cancel must not cut this short
            SlowCleanup.finished = True
            await anyio.sleep(60)  # the bound must

    worker = Worker(ScriptedModel([hanging_text()]), hooks=[SlowCleanup()], cleanup_timeout=0.3)
    async with anyio.create_task_group() as group:

        async def stop() -> None:
            await wait_for(lambda: streamed(worker))
            worker.cancel("first")
            await anyio.sleep(0.01)
            worker.cancel("second")

        group.start_soon(stop)
        with anyio.fail_after(5), pytest.raises(Cancelled):
            await worker.run("go")
    assert SlowCleanup.finished


# -- 7, 8, 9, 10 ---------------------------------------------------------------------------------


async def test_7_history_holds_only_whole_items_after_a_cancel_at_any_point() -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    async with anyio.create_task_group() as group:
        group.start_soon(stop_when, lambda: streamed(worker), lambda: worker.cancel())
        with pytest.raises(Cancelled):
            await worker.run("go")
    from llm_worker import dump_history, load_history

    assert load_history(dump_history(worker.history)) == worker.history
    assert [type(i) for i in worker.history] == [UserMessage, AssistantMessage]


async def test_8_a_tool_that_swallows_cancellation_does_not_make_the_run_succeed() -> None:
    @tool
    async def swallower() -> str:
        """Catches the cancellation and returns as if nothing happened."""
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            return "pretending all is well"
        return "never"

    model = ScriptedModel([Script.tool_calls(("swallower", {})), "should not be asked"])
    worker = Worker(model, tools=[swallower], tool_grace=0.01)
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when,
            lambda: called(worker),
            lambda: worker.cancel("really stop"),
        )
        with pytest.raises(Cancelled) as caught:
            await worker.run("go")
    assert caught.value.reason == "really stop"
    assert len(model.requests) == 1


async def test_9_nothing_started_by_the_run_is_left_running() -> None:
    worker = Worker(
        ScriptedModel([Script.tool_calls(("slow_count", {"limit": 100_000}))]),
        tools=[slow_count],
    )
    before = len(anyio.get_running_tasks())
    async with anyio.create_task_group() as group:
        group.start_soon(
            stop_when,
            lambda: called(worker),
            lambda: worker.cancel(),
        )
        with pytest.raises(Cancelled):
            await worker.run("go")
    assert len(anyio.get_running_tasks()) == before


async def test_10_the_next_run_tells_the_model_the_previous_turn_was_interrupted() -> None:
    model = ScriptedModel([hanging_text(), "fine"])
    worker = Worker(model)
    async with anyio.create_task_group() as group:
        group.start_soon(stop_when, lambda: streamed(worker), lambda: worker.cancel("user stop"))
        with pytest.raises(Cancelled):
            await worker.run("first")
    result = await worker.run("second")
    sent = list(model.requests[1].history)
    notes = [i for i in sent if isinstance(i, Note)]
    assert len(notes) == 1
    assert "interrupted" in notes[0].text
    assert "user stop" in notes[0].text
    assert isinstance(sent[-1], UserMessage)
    assert result.status == "finished"
    assert history_violations(worker.history) == []


async def test_stream_yields_events_and_closing_it_early_cancels_the_run() -> None:
    worker = Worker(ScriptedModel([Script.text("one two three four", chunks=4, then_hang=True)]))
    seen: list[str] = []
    async with worker.stream("go") as run:
        async for event in run:
            if isinstance(event, TextDelta):
                seen.append(event.text)
                if len(seen) == 2:
                    break
    assert len(seen) == 2
    assert isinstance(run.error, Cancelled)
    assert not worker.running
    message = worker.history[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
