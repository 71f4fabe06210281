"""The sweep proves itself: each planted violation of a guarantee must be reported, by name.

Every test plants one bug in an otherwise correct worker (``monkeypatch``, undone after the
test; the worker's code is untouched) and asserts that the sweep reports the invariant it
breaks. The unplanted scenarios report nothing, so every report here is the planted bug's.
Scenarios are small (a few deltas, one cooperative tool) to keep the file fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

from llm_worker import Hooks, ToolContext, Worker, tool
from llm_worker import _runs as runs_module
from llm_worker import hooks as hooks_module
from llm_worker import worker as worker_module
from llm_worker.cancel import Cause
from llm_worker.errors import Cancelled
from llm_worker.events import StreamEvent
from llm_worker.hooks import overrides
from llm_worker.items import AssistantMessage, Item, ToolCall, ToolResult, UserMessage, replace
from llm_worker.models import Model, ModelRequest
from llm_worker.result import RunResult
from llm_worker.testing import (
    INVARIANTS,
    Script,
    ScriptedModel,
    SweepMode,
    SweepReport,
    cancellation_sweep,
)
from llm_worker.timeline import Timeline
from llm_worker.tools import _runner as runner_module

pytestmark = pytest.mark.timeout(60)

ALL_WAYS: list[SweepMode] = ["cancel", "token", "thread", "timeout", "supersede", "external"]


@tool
async def crawl(steps: int, ctx: ToolContext) -> str:
    """A cooperative tool: a checkpoint per step; returns how far it got when cancelled."""
    done = 0
    while done < steps and not ctx.cancelled:
        await anyio.lowlevel.checkpoint()
        done += 1
    return f"crawled {done} of {steps}"


def text_scenario(model: Callable[[Model], Model] = lambda m: m) -> Callable[[], Worker]:
    """A four-delta answer, and one for the follow-up."""

    def make() -> Worker:
        scripted = ScriptedModel([Script.text("One two three four.", chunks=4), "Follow-up."])
        return Worker(model(scripted))

    return make


def tool_scenario() -> Callable[[], Worker]:
    """A call streamed in fragments, a tool that keeps partial output, an answer, a follow-up."""

    def make() -> Worker:
        scripted = ScriptedModel(
            [
                Script.tool_calls(("crawl", {"steps": 4}), fragments=3),
                Script.text("Crawled.", chunks=2),
                "Follow-up.",
            ]
        )
        return Worker(scripted, tools=[crawl], tool_grace=1.0)

    return make


async def sweep(make: Callable[[], Worker], how: SweepMode = "cancel", **options: Any) -> Any:
    report = await cancellation_sweep(make, "Go.", how=how, **options)
    print(report.summary())
    return report


def assert_reported(report: SweepReport, invariant: str) -> None:
    assert invariant in INVARIANTS
    counts = report.counts()
    assert counts.get(invariant, 0) > 0, f"{invariant} not reported: {report.summary()}"


# -- without a planted bug, nothing is reported ------------------------------------------------


@pytest.mark.parametrize("how", ALL_WAYS)
async def test_the_unplanted_text_scenario_reports_nothing(how: SweepMode) -> None:
    report = await sweep(text_scenario(), how)
    report.raise_for_violations()
    assert report.cancelled > 0
    assert report.checkpoints >= 5


# external: see test_sweep.py (a tool may start after an outer cancellation, a known hole).
@pytest.mark.parametrize("how", ["cancel", "token", "thread", "timeout", "supersede"])
async def test_the_unplanted_tool_scenario_reports_nothing(how: SweepMode) -> None:
    report = await sweep(tool_scenario(), how)
    report.raise_for_violations()
    assert report.cancelled > 0


# -- planted bugs ------------------------------------------------------------------------------


async def test_a_lost_user_message_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The input vanishes from the history when the run is interrupted."""
    original = worker_module.Worker._clean_up

    async def forget_the_input(self: Worker, run: Any, cause: Cause) -> list[BaseException]:
        self._history.items[:] = [i for i in self._history.items if not _is_input_of(i, run)]
        run.items[:] = [i for i in run.items if not isinstance(i, UserMessage)]
        return await original(self, run, cause)

    monkeypatch.setattr(worker_module.Worker, "_clean_up", forget_the_input)
    assert_reported(await sweep(text_scenario()), "user-message")


def _is_input_of(item: Item, run: Any) -> bool:
    return isinstance(item, UserMessage) and any(item is mine for mine in run.items)


async def test_streamed_text_that_is_thrown_away_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clean-up forgets the open block: the interrupted message is never committed."""
    original = worker_module.Worker._clean_up

    async def drop_the_block(self: Worker, run: Any, cause: Cause) -> list[BaseException]:
        run.timeline = None
        return await original(self, run, cause)

    monkeypatch.setattr(worker_module.Worker, "_clean_up", drop_the_block)
    assert_reported(await sweep(text_scenario()), "streamed-text")


async def test_a_cut_off_message_not_marked_interrupted_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Timeline.items

    def never_interrupted(self: Timeline, *, interrupted: bool = False) -> list[Item]:
        return [
            replace(item, interrupted=False) if isinstance(item, AssistantMessage) else item
            for item in original(self, interrupted=interrupted)
        ]

    monkeypatch.setattr(Timeline, "items", never_interrupted)
    assert_reported(await sweep(text_scenario()), "interrupted-flag")


async def test_a_finished_message_marked_interrupted_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Timeline.items

    def always_interrupted(self: Timeline, *, interrupted: bool = False) -> list[Item]:
        return original(self, interrupted=True)

    monkeypatch.setattr(Timeline, "items", always_interrupted)
    assert_reported(await sweep(tool_scenario()), "interrupted-flag")


async def test_a_tools_partial_output_thrown_away_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tool returned partial output on cancel; the worker keeps a bare "cancelled"."""
    original = runner_module._outcome_result

    def lose_partial_output(call: ToolCall, tool: Any, outcome: Any) -> ToolResult:
        if outcome.status == "interrupted":
            return ToolResult(
                call_id=call.call_id, name=call.name, content="Cancelled.", status="cancelled"
            )
        return original(call, tool, outcome)

    monkeypatch.setattr(runner_module, "_outcome_result", lose_partial_output)
    assert_reported(await sweep(tool_scenario()), "tool-output")


async def test_partial_output_not_marked_interrupted_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partial output is kept but passed off as a finished result ("ok")."""
    original = runner_module._outcome_result

    def call_it_ok(call: ToolCall, tool: Any, outcome: Any) -> ToolResult:
        result = original(call, tool, outcome)
        return replace(result, status="ok") if outcome.status == "interrupted" else result

    monkeypatch.setattr(runner_module, "_outcome_result", call_it_ok)
    assert_reported(await sweep(tool_scenario()), "tool-output")


class StubbornModel:
    """A model whose every event is awaited shielded: it ignores every cancel."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self.name = model.name

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        return _StubbornStream(self._model.stream(request))


class _StubbornStream:
    def __init__(self, inner: AbstractAsyncContextManager[AsyncIterator[StreamEvent]]) -> None:
        self._inner = inner

    async def __aenter__(self) -> AsyncIterator[StreamEvent]:
        return _StubbornEvents(await self._inner.__aenter__())

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._inner.__aexit__(kind, exc, tb)


class _StubbornEvents:
    def __init__(self, inner: AsyncIterator[StreamEvent]) -> None:
        self._inner = inner

    def __aiter__(self) -> _StubbornEvents:
        return self

    async def __anext__(self) -> StreamEvent:
        with anyio.CancelScope(shield=True):
            event = await self._inner.__anext__()
        return event


@pytest.mark.parametrize("how", ["cancel", "thread"])
async def test_a_model_that_ignores_every_cancel_is_reported(how: SweepMode) -> None:
    """Before: "N completed runs, 0 violations". An acknowledged cancel must stop the run."""
    report = await sweep(text_scenario(StubbornModel), how)
    assert_reported(report, "cancel-ignored")
    assert report.late < report.completed  # not every completion passes for a late cancel


async def test_a_lost_cancel_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """cancel() does nothing and says so while a run is going on."""
    monkeypatch.setattr(worker_module.Worker, "cancel", lambda self, *a, **k: False)
    assert_reported(await sweep(text_scenario()), "cancel-lost")


async def test_a_skipped_on_abort_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_on_abort(hooks: Hooks, point: str) -> bool:
        return point != "on_abort" and overrides(hooks, point)

    monkeypatch.setattr(hooks_module, "overrides", no_on_abort)
    assert_reported(await sweep(text_scenario()), "on-abort")


async def test_on_abort_run_twice_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    original = worker_module.Worker._clean_up

    async def twice(self: Worker, run: Any, cause: Cause) -> Any:
        outcome = await original(self, run, cause)
        for hooks in self.hooks:
            await hooks.on_abort(run.ctx, "again", cause)
        return outcome

    monkeypatch.setattr(worker_module.Worker, "_clean_up", twice)
    assert_reported(await sweep(text_scenario()), "on-abort")


async def test_a_missing_synthetic_result_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call cut off mid-arguments is never answered: the next request would be rejected."""
    monkeypatch.setattr(worker_module.Worker, "_answer_unanswered", lambda self, run, cause: None)
    report = await sweep(tool_scenario())
    assert_reported(report, "tool-results")
    assert any("unanswered" in v for v in report.violations)


async def test_a_duplicate_result_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean-up answers every call of the run again, answered or not."""
    original = worker_module.Worker._answer_unanswered

    def answer_all(self: Worker, run: Any, cause: Cause | None) -> None:
        original(self, run, cause)
        if cause is not None:
            again = [
                ToolResult(call_id=i.call_id, name=i.name, content="again", status="cancelled")
                for i in run.items
                if isinstance(i, ToolCall)
            ]
            self._commit(run, again)

    monkeypatch.setattr(worker_module.Worker, "_answer_unanswered", answer_all)
    report = await sweep(tool_scenario())
    assert_reported(report, "tool-results")
    assert any("second result" in v for v in report.violations)


async def test_a_swallowed_external_cancellation_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run cleans up after an outer cancellation, then returns as if it had finished."""
    original = worker_module.Worker._execute

    async def swallow(self: Worker, run: Any) -> RunResult:
        try:
            return await original(self, run)
        except anyio.get_cancelled_exc_class():
            return run.result("finished")  # type: ignore[no-any-return]

    monkeypatch.setattr(worker_module.Worker, "_execute", swallow)
    assert_reported(await sweep(text_scenario(), "external"), "cancel-swallowed")


async def test_an_outer_cancellation_turned_into_cancelled_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = worker_module.Worker._execute

    async def convert(self: Worker, run: Any) -> RunResult:
        try:
            return await original(self, run)
        except anyio.get_cancelled_exc_class():
            cause = Cause.interrupt("external")
            raise Cancelled("cancelled", cause=cause, partial=run.result("interrupted")) from None

    monkeypatch.setattr(worker_module.Worker, "_execute", convert)
    assert_reported(await sweep(text_scenario(), "external"), "cancel-swallowed")


async def test_a_partial_result_missing_items_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    original = runs_module.Run.result

    def short(self: Any, status: Any) -> RunResult:
        result = original(self, status)
        if status == "interrupted":
            return dataclasses.replace(result, items=result.items[:-1])
        return result

    monkeypatch.setattr(runs_module.Run, "result", short)
    assert_reported(await sweep(text_scenario()), "partial")


async def test_a_leaked_task_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean-up starts a task outside any task group and leaves it running."""
    original = worker_module.Worker._clean_up
    with stray_tasks() as spawn:

        async def leak(self: Worker, run: Any, cause: Cause) -> list[BaseException]:
            spawn()
            return await original(self, run, cause)

        monkeypatch.setattr(worker_module.Worker, "_clean_up", leak)
        report = await sweep(text_scenario())
    assert_reported(report, "leak")


@contextmanager
def stray_tasks() -> Iterator[Callable[[], None]]:
    """``spawn()`` starts a task no task group owns (as a buggy worker might); all are ended
    when the block is left."""
    scopes: list[anyio.CancelScope] = []

    async def stray(scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep_forever()

    def spawn() -> None:
        scope = anyio.CancelScope()
        scopes.append(scope)
        if sniffio.current_async_library() == "trio":
            import trio

            trio.lowlevel.spawn_system_task(stray, scope)
        else:
            asyncio.get_running_loop().create_task(stray(scope))

    try:
        yield spawn
    finally:
        for scope in scopes:
            scope.cancel()


@tool
def stubborn(ctx: ToolContext) -> str:
    """Ignores its token: runs 120 ms whatever happens (its grace is 30 ms)."""
    time.sleep(0.12)
    return "done"


def stubborn_scenario() -> Worker:
    scripted = ScriptedModel([Script.tool_calls(("stubborn", {})), "Done.", "Follow-up."])
    return Worker(scripted, tools=[stubborn], tool_grace=0.03)


async def test_an_abandoned_thread_reported_as_such_is_not_a_leak() -> None:
    """guarantee 9: a tool thread that ignored cancellation is the one reported exception."""
    report = await cancellation_sweep(stubborn_scenario, "Go.", max_checkpoints=6)
    report.raise_for_violations()
    assert report.cancelled > 0


async def test_a_leaked_tool_thread_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread is left running, but its result does not say it was abandoned."""
    original = runner_module._outcome_result

    def hide_abandonment(call: ToolCall, tool: Any, outcome: Any) -> ToolResult:
        result = original(call, tool, outcome)
        if outcome.status == "abandoned":
            return replace(result, status="cancelled")
        return result

    monkeypatch.setattr(runner_module, "_outcome_result", hide_abandonment)
    report = await sweep(stubborn_scenario, max_checkpoints=6, follow_up=None)
    assert_reported(report, "leak")
    assert any("is still running" in v for v in report.violations)


@pytest.mark.parametrize("how", ALL_WAYS)
async def test_the_check_is_called_for_every_run(how: SweepMode) -> None:
    """Every run, cancelled or not, every way: a check failing on cancelled runs is reported
    once per cancelled run (before, external runs were never checked)."""
    seen: list[type] = []

    def check(worker: Worker, outcome: RunResult | BaseException) -> None:
        seen.append(type(outcome))
        assert isinstance(outcome, RunResult), "the run was cancelled"

    report = await sweep(text_scenario(), how, check=check)
    assert report.checked == report.runs == len(seen)
    assert report.counts() == {"check": report.cancelled}
    expected = anyio.get_cancelled_exc_class() if how == "external" else Cancelled
    assert any(issubclass(kind, expected) for kind in seen)


async def test_an_async_check_that_fails_is_reported_not_raised() -> None:
    async def check(worker: Worker, outcome: RunResult | BaseException) -> None:
        await anyio.lowlevel.checkpoint()
        raise AssertionError("always")

    report = await sweep(text_scenario(), check=check)
    assert report.counts() == {"check": report.runs}
    assert all("AssertionError: always" in v for v in report.violations)


async def test_the_report_counts_and_names_what_it_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two planted bugs at once: both named, counted, and the text says where each was."""
    monkeypatch.setattr(worker_module.Worker, "_answer_unanswered", lambda self, run, cause: None)
    monkeypatch.setattr(hooks_module, "overrides", lambda hooks, point: point != "on_abort")
    report = await sweep(tool_scenario(), follow_up=None)
    counts = report.counts()
    assert {"tool-results", "on-abort"} <= set(counts)
    assert sum(counts.values()) == len(report.violations)
    summary = report.summary()
    assert f"tool-results ×{counts['tool-results']}" in summary
    assert f"on-abort ×{counts['on-abort']}" in summary
    with pytest.raises(
        AssertionError, match=r"\[cancel at checkpoint \d+\] on-abort: on_abort ran 0"
    ):
        report.raise_for_violations()


async def test_an_unknown_way_of_cancelling_is_refused() -> None:
    with pytest.raises(ValueError, match="how must be one of"):
        await cancellation_sweep(text_scenario(), "Go.", how="nicely")  # type: ignore[arg-type]
