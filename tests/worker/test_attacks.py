"""Counter-examples an outside review found against the guarantees, each now a test.

Each test is named after the behaviour that failed before its fix; the review's item number is in
the section comment. They run on every backend unless the attack only exists on one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from llm_worker import (
    AssistantMessage,
    Cancelled,
    Hooks,
    ModelError,
    Note,
    RunStream,
    ToolCall,
    ToolContext,
    ToolResult,
    UserMessage,
    Worker,
    WorkerBusy,
    dump_history,
    tool,
)
from llm_worker.cancel import Cause
from llm_worker.errors import CleanupOverran
from llm_worker.events import (
    RunBoundary,
    RunCancelled,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolOverran,
    ToolStarted,
)
from llm_worker.hooks import HookContext
from llm_worker.models.anthropic import AnthropicModel
from llm_worker.models.openai_chat import OpenAIChatModel
from llm_worker.models.openai_responses import OpenAIResponsesModel
from llm_worker.testing import FakeProviderServer, Reply, history_violations
from llm_worker.testing._scripted import Script, ScriptedModel

pytestmark = pytest.mark.timeout(60)


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


def streamed(worker: Worker) -> bool:
    run = worker._active
    return bool(run and run.timeline and run.timeline.blocks)


def hanging_text(text: str = "Partial answer so far") -> Script:
    return Script.text(text, chunks=4, then_hang=True)


class AbortLog(Hooks):
    def __init__(self) -> None:
        self.causes: list[Cause] = []

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        self.causes.append(cause)


class SlowAbort(Hooks):
    """An on_abort hook that takes ``seconds``; records when it started and finished."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = False
        self.finished = False

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        self.started = True
        await anyio.sleep(self.seconds)
        self.finished = True


def boundaries(worker: Worker) -> list[RunBoundary]:
    seen: list[RunBoundary] = []
    worker.on_run(seen.append)
    return seen


def user_texts(worker: Worker) -> list[str]:
    return [item.text for item in worker.history if isinstance(item, UserMessage)]


# -- 1. a run that never started must never hold the worker ----------------------------------------


async def test_a_task_cancelled_before_its_first_step_does_not_leave_the_worker_running(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("an asyncio task can be cancelled before its coroutine runs at all")
    worker = Worker(ScriptedModel(["never", "after"]))
    task = asyncio.Task(worker.run("first"))  # not eager, whatever the loop's task factory
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not worker.running
    with anyio.fail_after(5):
        result = await worker.run("second", supersede=True)
    assert result.status == "finished"


async def test_a_run_coroutine_dropped_without_being_awaited_does_not_hold_the_worker() -> None:
    worker = Worker(ScriptedModel(["answer"]))
    closed = worker.run("closed before it ran")
    closed.close()
    assert not worker.running
    dropped = worker.run("never awaited")
    with pytest.warns(RuntimeWarning, match="never awaited"):
        del dropped
    assert not worker.running
    assert (await worker.run("now")).output == "answer"
    assert user_texts(worker) == ["now"]


async def test_a_stream_handle_dropped_without_being_entered_does_not_hold_the_worker() -> None:
    worker = Worker(ScriptedModel(["answer"]))
    handle = worker.stream("never entered")
    assert worker.running
    del handle
    gc.collect()
    assert not worker.running
    with anyio.fail_after(5):
        assert (await worker.run("now", supersede=True)).output == "answer"


# -- 2. one worker, two threads --------------------------------------------------------------------


def test_two_threads_running_one_worker_at_once_one_proceeds_and_the_other_is_busy() -> None:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen every race window
    try:
        _race_two_threads(rounds=80)
    finally:
        sys.setswitchinterval(switch)


def _race_two_threads(rounds: int) -> None:
    for _ in range(rounds):
        worker = Worker(ScriptedModel(["one", "two"]))
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def call(
            text: str, worker: Worker = worker, barrier: Any = barrier, outcomes: Any = outcomes
        ) -> None:
            barrier.wait()
            try:
                result = anyio.run(worker.run, text)
            except WorkerBusy:
                outcomes.append("busy")
            except BaseException as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
            else:
                outcomes.append(result.status)

        threads = [threading.Thread(target=call, args=(t,)) for t in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads), "a run hung"
        assert sorted(outcomes) in (["busy", "finished"], ["finished", "finished"]), outcomes
        assert not worker.running


def test_superseding_a_run_of_another_thread_is_a_clear_error_at_once() -> None:
    release = threading.Event()
    started = threading.Event()

    class Gate(Hooks):
        async def before_llm_request(self, ctx: HookContext, request: object) -> None:
            started.set()
            await anyio.to_thread.run_sync(release.wait)

    worker = Worker(ScriptedModel(["first"]), hooks=[Gate()])
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(anyio.run(worker.run, "a")))
    thread.start()
    try:
        assert started.wait(10)
        with pytest.raises(WorkerBusy, match="another thread"):
            anyio.run(lambda: worker.run("b", supersede=True))
        with pytest.raises(WorkerBusy):
            anyio.run(worker.run, "c")
    finally:
        release.set()
        thread.join(10)
    assert results[0].output == "first"
    assert not worker.running


# -- 3. supersede chains ---------------------------------------------------------------------------


async def test_a_run_superseded_before_it_started_ends_at_once_and_commits_nothing() -> None:
    slow = SlowAbort(0.3)
    worker = Worker(ScriptedModel([hanging_text(), "answer to c"]), hooks=[slow])
    order: list[str] = []
    errors: dict[str, BaseException] = {}

    async def run_a() -> None:
        with pytest.raises(Cancelled):
            await worker.run("a")
        order.append("a ended")

    async def await_run(name: str, coro: Any) -> None:
        try:
            await coro
        except Cancelled as exc:
            errors[name] = exc
        order.append(f"{name} ended")

    async with anyio.create_task_group() as group:
        group.start_soon(run_a)
        await wait_for(lambda: streamed(worker))
        group.start_soon(await_run, "b", worker.run("b", supersede=True))
        await wait_for(lambda: slow.started)  # A is cleaning up; B waits for it
        group.start_soon(await_run, "c", worker.run("c", supersede=True))
    assert order.index("b ended") < order.index("a ended") < order.index("c ended")
    assert isinstance(errors["b"], Cancelled)
    assert errors["b"].kind == "superseded"
    assert errors["b"].partial.items == ()
    assert user_texts(worker) == ["a", "c"]
    assert "c" not in errors
    assert history_violations(worker.history) == []


async def test_a_superseding_runs_timeout_covers_its_wait_for_the_previous_clean_up() -> None:
    slow = SlowAbort(1.0)
    worker = Worker(ScriptedModel([hanging_text(), "unused"]), hooks=[slow])
    order: list[str] = []

    async def run_a() -> None:
        with pytest.raises(Cancelled):
            await worker.run("a")
        order.append("a ended")

    async with anyio.create_task_group() as group:
        group.start_soon(run_a)
        await wait_for(lambda: streamed(worker))
        with pytest.raises(Cancelled) as caught:
            await worker.run("b", supersede=True, timeout=0.05)
        order.append("b ended")
    assert caught.value.kind == "deadline"
    assert order == ["b ended", "a ended"]
    assert user_texts(worker) == ["a"]


# -- 4. durations ----------------------------------------------------------------------------------


async def test_an_absurd_run_timeout_never_stops_other_runs_timeouts() -> None:
    worker = Worker(ScriptedModel(["quick", hanging_text()]))
    assert (await worker.run("far", timeout=1e10)).output == "quick"
    with anyio.fail_after(10), pytest.raises(Cancelled) as caught:
        await worker.run("soon", timeout=0.05)
    assert caught.value.kind == "deadline"


@pytest.mark.parametrize("bad", [math.nan, -1.0, "5", True])
async def test_a_bad_run_timeout_is_refused_at_the_call_and_holds_nothing(bad: Any) -> None:
    worker = Worker(ScriptedModel(["fine"]))
    with pytest.raises((ValueError, TypeError), match="run timeout"):
        worker.run("x", timeout=bad)
    assert not worker.running
    assert (await worker.run("y")).output == "fine"


@pytest.mark.parametrize("setting", ["tool_grace", "cleanup_timeout"])
def test_a_bad_worker_duration_is_refused_when_the_worker_is_built(setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        Worker("offline", **{setting: math.nan})
    assert getattr(Worker("offline", **{setting: math.inf}), setting) is None


# -- 6, 7. clean-up that nothing cuts short --------------------------------------------------------


async def test_a_native_cancellation_during_on_abort_lets_the_hooks_finish_and_the_end_event_out(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("Task.cancel() is asyncio's own cancellation, which anyio shields cannot stop")
    slow = SlowAbort(0.2)
    after = AbortLog()
    worker = Worker(ScriptedModel([hanging_text()]), hooks=[slow, after])
    ends = boundaries(worker)
    task = asyncio.get_running_loop().create_task(worker.run("go"))
    await wait_for(lambda: streamed(worker))
    worker.cancel("stop")
    await wait_for(lambda: slow.started)
    task.cancel()  # the first native cancellation of the awaiting task, mid clean-up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.finished
    assert len(after.causes) == 1
    assert isinstance(ends[-1], RunCancelled)
    assert ends[-1].kind == "explicit"
    message = worker.history[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert not worker.running


async def test_an_outer_cancellation_during_on_abort_is_delivered_after_the_hooks_finish() -> None:
    slow = SlowAbort(0.2)
    worker = Worker(ScriptedModel([hanging_text()]), hooks=[slow])
    ends = boundaries(worker)
    with anyio.CancelScope() as scope:

        async def cancel_during_clean_up() -> None:
            await wait_for(lambda: streamed(worker))
            worker.cancel("stop")
            await wait_for(lambda: slow.started)
            scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(cancel_during_clean_up)
            try:
                await worker.run("go")
            except Cancelled:
                await anyio.sleep(5)  # the pending outer cancellation lands here
    assert scope.cancelled_caught
    assert slow.finished
    assert isinstance(ends[-1], RunCancelled)


async def test_a_hung_on_abort_hook_does_not_keep_later_hooks_from_running() -> None:
    class Hung(Hooks):
        async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
            await anyio.sleep(3600)

    later = AbortLog()
    worker = Worker(ScriptedModel([hanging_text()]), hooks=[Hung(), later], cleanup_timeout=0.2)
    ends = boundaries(worker)
    async with anyio.create_task_group() as group:

        async def stop() -> None:
            await wait_for(lambda: streamed(worker))
            worker.cancel("stop")

        group.start_soon(stop)
        with anyio.fail_after(10), pytest.raises(Cancelled) as caught:
            await worker.run("go")
    assert len(later.causes) == 1
    assert [type(e) for e in caught.value.cleanup_errors] == [CleanupOverran]
    assert isinstance(ends[-1], RunCancelled)
    [overrun] = ends[-1].cleanup_errors
    assert "Hung" in overrun


# -- 8. the user's message -------------------------------------------------------------------------


async def test_a_cancel_while_an_async_on_prompt_submit_hook_awaits_keeps_the_users_message() -> (
    None
):
    class Moderation(Hooks):
        looking = False

        async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> None:
            Moderation.looking = True
            await anyio.sleep(3600)

    worker = Worker(ScriptedModel(["after"]), hooks=[Moderation()])
    async with anyio.create_task_group() as group:

        async def stop() -> None:
            await wait_for(lambda: Moderation.looking)
            worker.cancel("stop")

        group.start_soon(stop)
        with pytest.raises(Cancelled) as caught:
            await worker.run("my precious question")
    kept = [i for i in caught.value.partial.items if isinstance(i, UserMessage)]
    assert [m.text for m in kept] == ["my precious question"]
    assert user_texts(worker) == ["my precious question"]
    worker.hooks = []
    await worker.run("next")
    assert any(isinstance(i, Note) and i.kind == "interrupted" for i in worker.history)


# -- 9, 10, 12. tools that misbehave ---------------------------------------------------------------


@tool
async def steady(ctx: ToolContext) -> str:
    """Takes a little while, cooperatively."""
    with anyio.move_on_after(0.2):
        await ctx.token.wait()
    return "steady done" if not ctx.cancelled else "steady stopped early"


async def test_a_tool_whose_own_await_raises_cancellation_gets_an_error_result(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("only asyncio lets a future be cancelled from elsewhere")

    @tool
    async def shared_future() -> str:
        """Awaits a future that something else cancels."""
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        return await future  # type: ignore[no-any-return]

    log = AbortLog()
    model = ScriptedModel([Script.tool_calls(("shared_future", {}), ("steady", {})), "Done."])
    worker = Worker(model, tools=[shared_future, steady], hooks=[log])
    result = await worker.run("go")
    assert result.status == "finished"
    results = {i.name: i for i in worker.history if isinstance(i, ToolResult)}
    assert results["shared_future"].status == "error"
    assert "cancel" in results["shared_future"].content.lower()
    assert results["steady"].status == "ok"
    assert log.causes == []
    assert history_violations(worker.history) == []


class Meltdown(BaseException):
    """Not an Exception: what a tool must never turn into a hang or a lost call."""


@pytest.mark.parametrize("exception", [Meltdown, SystemExit])
async def test_a_tool_raising_a_base_exception_is_answered_then_the_exception_comes_out_as_itself(
    exception: type[BaseException],
) -> None:
    @tool
    async def melt() -> str:
        """Raises something that is not an Exception."""
        await anyio.sleep(0.01)
        raise exception("melted")

    log = AbortLog()
    model = ScriptedModel([Script.tool_calls(("melt", {}), ("steady", {})), "after"])
    worker = Worker(model, tools=[melt, steady], hooks=[log])
    with pytest.raises(exception):
        await worker.run("go")
    assert len(log.causes) == 1
    assert history_violations(worker.history) == []
    results = {i.name: i for i in worker.history if isinstance(i, ToolResult)}
    assert results["melt"].status == "error"
    assert not worker.running
    assert (await worker.run("again")).output == "after"


async def test_an_async_tool_that_swallows_every_cancellation_is_reported() -> None:
    @tool
    async def stubborn(ctx: ToolContext) -> str:
        """Ignores every request to stop, for a second."""
        with anyio.CancelScope(shield=True):
            await ctx.token.wait()
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # every await cancelled at once, and swallowed
            try:
                await anyio.sleep(0.025)
            except anyio.get_cancelled_exc_class():  # the attack
                pass
        return "stubborn partial"

    worker = Worker(
        ScriptedModel([Script.tool_calls(("stubborn", {}))]), tools=[stubborn], tool_grace=0.1
    )
    events: list[object] = []
    async with worker.stream("go") as run:
        async for event in run:
            events.append(event)
            if isinstance(event, ToolStarted):
                run.cancel("stop")
    assert isinstance(run.error, Cancelled)
    overran = [e for e in events if isinstance(e, ToolOverran)]
    assert [e.name for e in overran] == ["stubborn"]
    [result] = [i for i in worker.history if isinstance(i, ToolResult)]
    assert "ignored cancellation" in result.content


# -- 11, 16. data that cannot be trusted -----------------------------------------------------------


HUGE_NUMBER = '{"n": ' + "7" * 5000 + "}"
DEEP_NESTING = '{"n": ' + "[" * 100_000 + "]" * 100_000 + "}"


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def pathological_turn(raw: str, *, cut: bool) -> Script:
    events: list[Any] = [
        TextDelta(text="Let me check. "),
        ToolCallStart(index=0, call_id="good", name="add"),
        ToolCallDelta(index=0, arguments='{"a": 1, "b": 2}'),
        ToolCallEnd(index=0),
        ToolCallStart(index=1, call_id="bad", name="add"),
        ToolCallDelta(index=1, arguments=raw),
    ]
    if cut:
        return Script.events(events, then_hang=True)
    return Script.events([*events, ToolCallEnd(index=1), StopReason(reason="tool_use")])


@pytest.mark.parametrize("raw", [HUGE_NUMBER, DEEP_NESTING], ids=["5000-digits", "deep"])
async def test_pathological_complete_arguments_are_an_error_result_and_keep_the_rest(
    raw: str,
) -> None:
    worker = Worker(ScriptedModel([pathological_turn(raw, cut=False), "Done."]), tools=[add])
    result = await worker.run("go")
    assert result.output == "Done."
    results = {i.call_id: i for i in worker.history if isinstance(i, ToolResult)}
    assert results["good"].content == "3"
    assert results["bad"].status == "error"
    assert results["bad"].content.startswith("Error:")
    assert (
        "Let me check." in next(i for i in worker.history if isinstance(i, AssistantMessage)).text
    )
    dump_history(worker.history)  # and it can be stored


@pytest.mark.parametrize("raw", [HUGE_NUMBER, DEEP_NESTING], ids=["5000-digits", "deep"])
async def test_pathological_cut_off_arguments_do_not_poison_later_requests(raw: str) -> None:
    worker = Worker(ScriptedModel([pathological_turn(raw[: len(raw) - 3], cut=True)]), tools=[add])
    async with anyio.create_task_group() as group:

        async def stop() -> None:
            await wait_for(
                lambda: (
                    any(isinstance(i, ToolCall) for i in worker.history)
                    or (
                        worker._active is not None
                        and worker._active.timeline is not None
                        and len(worker._active.timeline.blocks) == 3
                    )
                )
            )
            worker.cancel("stop")

        group.start_soon(stop)
        with pytest.raises(Cancelled):
            await worker.run("go")
    assert history_violations(worker.history) == []
    with FakeProviderServer() as server:
        server.enqueue(Reply.openai_text("chat ok"))
        server.enqueue(Reply.responses_text("responses ok"))
        server.enqueue(Reply.anthropic_text("anthropic ok"))
        models = [
            OpenAIChatModel("m", base_url=server.openai_base_url, api_key="k"),
            OpenAIResponsesModel("m", base_url=server.openai_base_url, api_key="k"),
            AnthropicModel("m", base_url=server.anthropic_base_url, api_key="k"),
        ]
        outputs = []
        for model in models:
            again = Worker(model, tools=[add], history=worker.history)
            outputs.append((await again.run("go on")).output)
            await model.aclose()
    assert outputs == ["chat ok", "responses ok", "anthropic ok"]


async def test_lone_surrogates_from_a_stream_a_tool_and_the_user_never_break_encoding() -> None:
    file_name = os.fsdecode(b"report-\xff.txt")  # what os.listdir gives for a non-UTF-8 name

    @tool
    async def list_files(pattern: str) -> str:
        """Lists the files."""
        return f"{file_name} matching {pattern}"

    turn = Script.events(
        [
            TextDelta(text="Half a smile \ud83d"),
            TextDelta(text="\ude00 and a stray \udc80."),
            ToolCallStart(index=0, call_id="c\udcff", name="list_files"),
            ToolCallDelta(index=0, arguments='{"pattern": "\\ud800"}'),
            ToolCallEnd(index=0),
            StopReason(reason="tool_use"),
        ]
    )
    worker = Worker(ScriptedModel([turn, "Done."]), tools=[list_files])
    await worker.run("bad byte from argv: " + os.fsdecode(b"\xfe"))
    json.dumps(json.loads(dump_history(worker.history)), ensure_ascii=False).encode("utf-8")
    message = next(i for i in worker.history if isinstance(i, AssistantMessage))
    assert message.text == "Half a smile 😀 and a stray \ufffd."
    [result] = [i for i in worker.history if isinstance(i, ToolResult)]
    assert result.content == "report-\ufffd.txt matching \ufffd"


# -- 18. what the model is told --------------------------------------------------------------------


async def test_an_error_text_from_the_server_is_never_told_to_the_model() -> None:
    leak = ModelError("401: invalid key sk-live-SECRET for this org", status_code=401)
    worker = Worker(ScriptedModel([Script.error(leak, after=1), "fine"]))
    with pytest.raises(ModelError):
        await worker.run("go")
    await worker.run("again")
    [note] = [i for i in worker.history if isinstance(i, Note)]
    assert "sk-live-SECRET" not in note.text
    assert "invalid key" not in note.text
    assert "the model provider failed (HTTP 401)" in note.text


# -- 21. call ids reused by a server ---------------------------------------------------------------


async def test_a_server_reusing_one_call_id_gets_unique_ids_in_the_history() -> None:
    def turn() -> Script:
        return Script.tool_calls(
            ("add", {"a": 1, "b": 1}, "call_0"), ("add", {"a": 2, "b": 2}, "call_0")
        )

    worker = Worker(ScriptedModel([turn(), turn(), "Done."]), tools=[add])
    assert (await worker.run("go")).output == "Done."
    calls = [i.call_id for i in worker.history if isinstance(i, ToolCall)]
    results = {i.call_id: i.content for i in worker.history if isinstance(i, ToolResult)}
    assert len(calls) == len(set(calls)) == 4
    assert sorted(results.values()) == ["2", "2", "4", "4"]
    assert set(results) == set(calls)
    assert history_violations(worker.history) == []


# -- 22. the event stream --------------------------------------------------------------------------


async def test_an_outer_cancellation_of_a_stream_consumer_is_external_and_keeps_the_error() -> None:
    log = AbortLog()
    worker = Worker(ScriptedModel([hanging_text()]), hooks=[log])
    handle = worker.stream("go")
    with anyio.CancelScope() as scope:
        async with handle as run:
            async for event in run:
                if isinstance(event, TextDelta):
                    scope.cancel()
    assert scope.cancelled_caught
    assert [c.kind for c in log.causes] == ["external"]
    assert isinstance(handle.error, Cancelled)
    assert handle.error.kind == "external"
    assert handle.error.partial.items
    with pytest.raises(Cancelled):
        handle.result  # noqa: B018


async def test_an_exception_in_the_stream_block_comes_out_as_itself() -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    handles: list[RunStream] = []

    async def consume() -> None:
        async with worker.stream("go") as run:
            handles.append(run)
            async for event in run:
                if isinstance(event, TextDelta):
                    raise ValueError("consumer bug")

    with pytest.raises(ValueError, match="consumer bug") as caught:
        await consume()
    assert caught.type is ValueError  # not an ExceptionGroup around it
    assert not worker.running
    assert isinstance(handles[0].error, Cancelled)
