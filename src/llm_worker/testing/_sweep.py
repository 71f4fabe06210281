"""The cancellation sweep: cancel a scenario at every await point and check every invariant.

How it counts await points: a helper task yields to the scheduler in a loop while the scenario
runs once, counting the scheduler ticks the run takes (N). Each re-run then cancels after exactly
k ticks, for k = 0, 1, …, N, so the cancel lands at each place the run can be suspended. With a
deterministic scenario (a scripted model with no pace, cooperative tools) each tick is one await
of the run; with paced models or threads there are more ticks than awaits, never fewer.

Invariants checked after every cancelled run (DESIGN §2.2):
* the run ended with `Cancelled` (or, external mode, the framework's own exception), or it had
  already completed; it never hangs (bounded by ``run_timeout``);
* the history is valid for every provider: every tool call answered exactly once, before any
  later message; no result without its call;
* ``partial.items`` is exactly what the run added to the history; the cause has the right kind;
* ``on_abort`` ran exactly once for an interrupted run and never for a completed one;
* no task the run started is still running; the worker is idle;
* the same worker runs again, and the model is told the previous turn was interrupted.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.lowlevel

from ..cancel import CancelToken, Cause
from ..errors import Cancelled, RunError
from ..hooks import HookContext, Hooks
from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, UserMessage
from ..result import RunResult
from ..worker import Worker

SweepMode = Literal["cancel", "token", "thread", "external"]
_EXPECTED_KIND = {"cancel": "explicit", "token": "explicit", "thread": "explicit"}


@dataclass
class SweepReport:
    """What a sweep did: the checkpoints the run has, the stride it swept them at, what it found."""

    checkpoints: int
    stride: int = 1
    runs: int = 0
    cancelled: int = 0
    completed: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def raise_for_violations(self) -> None:
        """Raise AssertionError listing every violated invariant (for use in tests)."""
        if self.violations:
            shown = "\n".join(self.violations[:20])
            more = len(self.violations) - 20
            extra = f"\n… and {more} more" if more > 0 else ""
            raise AssertionError(f"cancellation sweep found violations:\n{shown}{extra}")


class _AbortCounter(Hooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        self.calls.append(reason)


def history_violations(history: list[Item]) -> list[str]:
    """Why ``history`` would be rejected by some provider (empty if it is valid).

    Every tool call must be answered exactly once, after the call and before the next user
    message, note or assistant message; a result must answer a call made before it.
    """
    problems: list[str] = []
    open_calls: dict[str, ToolCall] = {}
    seen_calls: set[str] = set()
    answered: set[str] = set()
    for position, item in enumerate(history):
        if isinstance(item, ToolCall):
            if item.call_id in seen_calls:
                problems.append(f"item {position}: duplicate tool call id {item.call_id}")
            seen_calls.add(item.call_id)
            open_calls[item.call_id] = item
        elif isinstance(item, ToolResult):
            if item.call_id in answered:
                problems.append(f"item {position}: second result for call {item.call_id}")
            elif item.call_id not in open_calls:
                problems.append(f"item {position}: result for unknown call {item.call_id}")
            answered.add(item.call_id)
            open_calls.pop(item.call_id, None)
        elif isinstance(item, AssistantMessage | UserMessage | Note) and open_calls:
            ids = ", ".join(open_calls)
            problems.append(f"item {position}: {item.type} before the results of {ids}")
            open_calls.clear()
    if open_calls:
        problems.append(f"end of history: unanswered calls {', '.join(open_calls)}")
    return problems


async def _ticks(count: int) -> None:
    for _ in range(count):
        await anyio.lowlevel.checkpoint()


async def cancellation_sweep(
    make_worker: Callable[[], Worker],
    input: str,
    *,
    how: SweepMode = "cancel",
    follow_up: str | None = "Please continue.",
    run_timeout: float = 30.0,
    max_checkpoints: int = 500,
    check: Callable[[Worker, RunResult | BaseException], Awaitable[None] | None] | None = None,
) -> SweepReport:
    """Cancel ``make_worker().run(input)`` at each of its await points; return a `SweepReport`.

    ``how``: ``"cancel"`` calls ``worker.cancel()`` from a task, ``"token"`` cancels a token
    passed to ``run``, ``"thread"`` calls ``worker.cancel()`` from another thread, ``"external"``
    cancels the task awaiting the run (the framework's exception must come out). ``follow_up``
    is sent as a second run to prove the worker is reusable (None to skip). ``check`` is called
    with the worker and the outcome for scenario-specific invariants. A scenario that waits on
    sockets or threads takes many ticks; beyond ``max_checkpoints`` the sweep cancels at every
    ``stride``-th tick (``report.stride``), spread evenly over the whole run.
    """
    total = await _count_ticks(make_worker(), input, run_timeout)
    stride = max(1, -(-total // max_checkpoints))  # ceil: at most max_checkpoints re-runs
    report = SweepReport(checkpoints=total, stride=stride)
    for k in range(0, total + 1, stride):
        await _sweep_once(make_worker, input, k, how, follow_up, run_timeout, check, report)
    return report


async def _count_ticks(worker: Worker, input: str, run_timeout: float) -> int:
    ticks = 0
    done = False

    async def count() -> None:
        nonlocal ticks
        while not done:
            await anyio.lowlevel.checkpoint()
            ticks += 1

    with anyio.fail_after(run_timeout):
        async with anyio.create_task_group() as group:
            group.start_soon(count)
            try:
                await worker.run(input)
            except RunError:
                pass
            finally:
                done = True
    return ticks


async def _sweep_once(
    make_worker: Callable[[], Worker],
    input: str,
    k: int,
    how: SweepMode,
    follow_up: str | None,
    run_timeout: float,
    check: Callable[[Worker, RunResult | BaseException], Awaitable[None] | None] | None,
    report: SweepReport,
) -> None:
    worker = make_worker()
    aborts = _AbortCounter()
    worker.hooks.append(aborts)
    token = CancelToken("sweep") if how == "token" else None
    before = len(worker.history)
    tasks_before = len(anyio.get_running_tasks())
    where = f"[{how} at checkpoint {k}]"
    outcome: RunResult | BaseException | None = None
    external_caught = False

    def trigger(scope: anyio.CancelScope) -> None:
        if how == "cancel":
            worker.cancel(f"sweep {k}")
        elif how == "token":
            assert token is not None
            token.cancel(f"sweep {k}")
        elif how == "thread":
            thread = threading.Thread(target=worker.cancel, args=(f"sweep {k}",))
            thread.start()
            thread.join()
        else:
            scope.cancel()

    report.runs += 1
    try:
        with anyio.fail_after(run_timeout):
            async with anyio.create_task_group() as group:
                canceller_scope = anyio.CancelScope()
                with anyio.CancelScope() as run_scope:

                    async def canceller() -> None:
                        with canceller_scope:
                            await _ticks(k)
                            trigger(run_scope)

                    group.start_soon(canceller)
                    try:
                        outcome = await worker.run(input, token=token)
                    except RunError as exc:
                        outcome = exc
                    finally:
                        canceller_scope.cancel()
                external_caught = run_scope.cancelled_caught
    except TimeoutError:
        report.violations.append(f"{where} the run did not end within {run_timeout}s")
        return

    added = worker.history[before:]
    if isinstance(outcome, RunResult):
        report.completed += 1
        if aborts.calls:
            report.violations.append(f"{where} on_abort ran for a completed run")
        if list(outcome.items) != added:
            report.violations.append(f"{where} result.items differ from the history added")
    elif isinstance(outcome, Cancelled):
        report.cancelled += 1
        expected = _EXPECTED_KIND.get(how)
        if expected and outcome.kind != expected:
            report.violations.append(f"{where} cause kind {outcome.kind!r}, expected {expected!r}")
        if list(outcome.partial.items) != added:
            report.violations.append(f"{where} partial.items differ from the history added")
    elif how == "external" and external_caught:
        report.cancelled += 1
    elif isinstance(outcome, RunError):
        report.violations.append(f"{where} unexpected {type(outcome).__name__}: {outcome}")
    else:
        report.violations.append(f"{where} the run neither returned nor raised a RunError")

    interrupted = outcome is None or not isinstance(outcome, RunResult)
    if interrupted and len(aborts.calls) != 1:
        report.violations.append(f"{where} on_abort ran {len(aborts.calls)} times, not once")
    problems = history_violations(worker.history)
    if isinstance(outcome, RunResult) and outcome.status == "paused":
        # A paused run legitimately ends with the calls it paused on; resume() runs them.
        problems = [p for p in problems if not p.startswith("end of history")]
    report.violations.extend(f"{where} {p}" for p in problems)
    if worker.running:
        report.violations.append(f"{where} the worker still counts as running")
    await anyio.lowlevel.checkpoint()
    leaked = len(anyio.get_running_tasks()) - tasks_before
    if leaked > 0:
        report.violations.append(f"{where} {leaked} task(s) still running after the run ended")
    if check is not None and outcome is not None:
        maybe = check(worker, outcome)
        if maybe is not None:
            await maybe
    if follow_up is not None:
        await _check_follow_up(worker, follow_up, interrupted and bool(added), where, report)


async def _check_follow_up(
    worker: Worker, follow_up: str, expect_note: bool, where: str, report: SweepReport
) -> None:
    try:
        result = await worker.run(follow_up)
    except Exception as exc:
        report.violations.append(f"{where} the follow-up run failed: {exc!r}")
        return
    notes = [i for i in result.items if isinstance(i, Note) and i.kind == "interrupted"]
    if expect_note and not notes:
        report.violations.append(f"{where} the follow-up run was not told about the interruption")
    report.violations.extend(
        f"{where} after follow-up: {p}" for p in history_violations(worker.history)
    )
