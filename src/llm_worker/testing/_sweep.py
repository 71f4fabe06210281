"""The cancellation sweep's driver: cancel a scenario at every await point, then check it.

How it counts await points: a helper task yields to the scheduler in a loop while the scenario
runs once, counting the scheduler ticks the run takes (N). Each re-run then cancels after exactly
k ticks, for k = 0, 1, …, N, so the cancel lands at each place the run can be suspended. With a
deterministic scenario (a scripted model with no pace, cooperative tools) each tick is one await
of the run; with paced models or threads there are more ticks than awaits, never fewer.

Every worker it builds is watched (`_sweep_probe`), and what each re-run left is judged by the
invariant checks (`_sweep_checks`); the report's vocabulary is in `_sweep_report`.

Invariants of this module: a sweep never leaves a task running (each re-run is one task group,
bounded by ``run_timeout``); the user's ``check`` is called once for every run that ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, get_args

import anyio
import anyio.abc
import anyio.lowlevel

from ..cancel import CancelToken
from ..errors import RunError
from ..result import RunResult
from ..worker import Worker
from ._sweep_checks import Check, RunChecks
from ._sweep_probe import Probe, RunRecord
from ._sweep_report import SweepMode, SweepReport

__all__ = ["Check", "SweepMode", "cancellation_sweep"]


async def cancellation_sweep(
    make_worker: Callable[[], Worker],
    input: str,
    *,
    how: SweepMode = "cancel",
    follow_up: str | None = "Please continue.",
    run_timeout: float = 30.0,
    max_checkpoints: int = 500,
    check: Check | None = None,
    deadline: float = 0.02,
) -> SweepReport:
    """Cancel ``make_worker().run(input)`` at each of its await points; return a `SweepReport`.

    ``how``: ``"cancel"`` calls ``worker.cancel()`` from a task, ``"token"`` cancels a token
    passed to ``run``, ``"thread"`` calls ``worker.cancel()`` from another thread,
    ``"timeout"`` runs with ``timeout=`` and holds the loop at the checkpoint until that deadline
    has passed (at least ``deadline`` seconds, more for a slow scenario: each re-run takes that
    long), ``"supersede"`` starts ``run(follow_up, supersede=True)`` there (that run is then
    the follow-up), ``"external"`` cancels the task awaiting the run (the framework's own
    exception must come out).

    ``follow_up`` is sent as a second run to prove the worker is reusable (None to skip; with
    ``"supersede"`` it is always sent). ``check(worker, outcome)`` (sync or async) is called for
    every run that ended, with its `RunResult`, its `RunError`, or the framework's cancellation
    exception; whatever it raises is reported as a violation of ``check``. A scenario that
    waits on sockets or threads takes many ticks; beyond ``max_checkpoints`` the sweep cancels
    at every ``stride``-th tick (``report.stride``), spread evenly over the whole run.

    Cancellation: cancelling the sweep itself stops it at once (each re-run is one task group).
    """
    if how not in get_args(SweepMode):
        raise ValueError(f"how must be one of {get_args(SweepMode)}, not {how!r}")
    started = time.monotonic()
    total = await _count_ticks(make_worker(), input, run_timeout)
    elapsed = time.monotonic() - started
    stride = max(1, -(-total // max_checkpoints))  # ceil: at most max_checkpoints re-runs
    report = SweepReport(checkpoints=total, stride=stride, how=how)
    settings = _Settings(
        input=input,
        how=how,
        follow_up=follow_up if how != "supersede" else follow_up or "Please continue.",
        run_timeout=run_timeout,
        check=check,
        deadline=max(deadline, 2 * elapsed),
    )
    for k in range(0, total + 1, stride):
        await _SweepRun(make_worker(), settings, k, report).run()
    return report


async def _count_ticks(worker: Worker, input: str, run_timeout: float) -> int:
    probe = Probe.attach(worker)  # watched like every re-run, so the ticks are the same
    done = False

    async def count() -> None:
        while not done:
            await anyio.lowlevel.checkpoint()
            probe.clock += 1

    with anyio.fail_after(run_timeout):
        async with anyio.create_task_group() as group:
            group.start_soon(count)
            try:
                await worker.run(input)
            except RunError:
                pass
            finally:
                done = True
    return probe.clock


@dataclass(frozen=True)
class _Settings:
    input: str
    how: SweepMode
    follow_up: str | None
    run_timeout: float
    check: Check | None
    deadline: float


class _SweepRun:
    """One re-run, stopped after ``k`` ticks: it runs and stops the worker, writes what
    happened into its `RunRecord`, and hands that to the checks."""

    def __init__(self, worker: Worker, settings: _Settings, k: int, report: SweepReport) -> None:
        self.worker = worker
        self.s = settings
        self.k = k
        self.report = report
        self.probe = Probe.attach(worker)
        self.record = RunRecord(
            worker, settings.how, settings.input, self.probe, before=len(worker.history)
        )
        self.checks = RunChecks(self.record, report, k)
        self.token = CancelToken("sweep") if settings.how == "token" else None
        self.successor: Coroutine[Any, Any, RunResult] | None = None  # the superseding run
        self.successor_outcome: RunResult | BaseException | None = None
        self.deadline_at = 0.0

    async def run(self) -> None:
        self.report.runs += 1
        worker, how, record = self.worker, self.s.how, self.record
        tasks_before = len(anyio.get_running_tasks())
        threads_before = set(threading.enumerate())
        try:
            with anyio.fail_after(self.s.run_timeout):
                async with anyio.create_task_group() as group:
                    ticking = anyio.CancelScope()
                    with anyio.CancelScope() as run_scope:
                        group.start_soon(self._stop_at_checkpoint, ticking, run_scope, group)
                        timeout = self.s.deadline if how == "timeout" else None
                        self.deadline_at = time.monotonic() + self.s.deadline
                        try:
                            record.outcome = await worker.run(
                                self.s.input, token=self.token, timeout=timeout
                            )
                        except RunError as exc:
                            record.outcome = exc
                        except anyio.get_cancelled_exc_class() as exc:
                            record.outcome = exc
                            raise
                        finally:
                            record.ended = self.probe.tick()
                            record.added = worker.history[record.before :]
                            ticking.cancel()
        except TimeoutError:
            self.checks.violation("ended", f"the run did not end within {self.s.run_timeout}s")
            return
        await self.checks.check_the_run(tasks_before, threads_before, self.s.check)
        if self.successor is not None:
            self.checks.check_follow_up(self.successor_outcome, superseding=True)
            self.checks.check_stream_kept(since=record.ended, until=self.probe.tick())
        elif self.s.follow_up is not None:
            await self._follow_up()

    async def _stop_at_checkpoint(
        self, ticking: anyio.CancelScope, run_scope: anyio.CancelScope, group: anyio.abc.TaskGroup
    ) -> None:
        """Tick ``k`` times, stop the run the sweep's way, then keep ticking (the clock)."""
        with ticking:
            for _ in range(self.k):
                await anyio.lowlevel.checkpoint()
                self.probe.clock += 1
            self.record.acknowledged = self._stop(run_scope, group)
            self.record.fired, self.record.fired_clock = self.probe.tick(), self.probe.clock
            while True:
                await anyio.lowlevel.checkpoint()
                self.probe.clock += 1

    def _stop(self, run_scope: anyio.CancelScope, group: anyio.abc.TaskGroup) -> bool:
        how, reason = self.s.how, f"sweep {self.k}"
        if how == "cancel":
            return self.worker.cancel(reason)
        if how == "token":
            assert self.token is not None
            return self.token.cancel(reason)
        if how == "thread":
            answer: list[bool] = []
            thread = threading.Thread(target=lambda: answer.append(self.worker.cancel(reason)))
            thread.start()
            thread.join()
            return answer[0]
        if how == "timeout":
            return self._hold_until_the_deadline()
        if how == "supersede":
            assert self.s.follow_up is not None
            self.successor = self.worker.run(self.s.follow_up, supersede=True)
            group.start_soon(self._await_successor)
            return True
        run_scope.cancel()
        return True

    def _hold_until_the_deadline(self) -> bool:
        """Block the loop (on purpose) until the run's deadline fired: it lands at this tick."""
        time.sleep(max(0.0, self.deadline_at - time.monotonic()))
        tokens = list(self.probe.tokens.values())
        give_up = time.monotonic() + 5.0
        while tokens and not tokens[0].cancelled and time.monotonic() < give_up:
            time.sleep(0.0005)
        return tokens[0].cancelled if tokens else True  # unseen token: cannot tell, say yes

    async def _await_successor(self) -> None:
        assert self.successor is not None
        try:
            self.successor_outcome = await self.successor
        except RunError as exc:
            self.successor_outcome = exc

    async def _follow_up(self) -> None:
        assert self.s.follow_up is not None
        try:
            with anyio.fail_after(self.s.run_timeout):
                outcome: RunResult | BaseException = await self.worker.run(self.s.follow_up)
        except (Exception, TimeoutError) as exc:
            outcome = exc
        self.checks.check_follow_up(outcome, superseding=False)
        self.checks.check_stream_kept(since=self.record.ended, until=self.probe.tick())
