"""The cancellation sweep: cancel a scenario at every await point and check every invariant.

How it counts await points: a helper task yields to the scheduler in a loop while the scenario
runs once, counting the scheduler ticks the run takes (N). Each re-run then cancels after exactly
k ticks, for k = 0, 1, …, N, so the cancel lands at each place the run can be suspended. With a
deterministic scenario (a scripted model with no pace, cooperative tools) each tick is one await
of the run; with paced models or threads there are more ticks than awaits, never fewer.

How it sees what happened: every worker it builds is watched, without adding an await anywhere.
Its model is wrapped (each stream event delivered to the run is logged, with whether the run had
to wait for it), its tools are wrapped (what each call returned, and whether its token was
cancelled by then), a hook that never awaits is put first (the run's token, ``on_abort`` calls)
and listeners log every commit and run boundary. All of it goes into one sequence, so "after the
cancel was acknowledged" is exact.

Invariants (DESIGN §2.2), each a named check; `INVARIANTS` lists them and the report counts them:
every run ends; it ends the way it was stopped; an acknowledged cancel stops it; nothing said or
done is lost (input, streamed text, tool output, every call answered once); clean-up runs once;
nothing is left running; the worker runs again and is told; the user's ``check`` holds.

Invariants of this module: a sweep never leaves a task running (each re-run is one task group,
bounded by ``run_timeout``); the user's ``check`` is called once for every run that ended.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, get_args

import anyio
import anyio.abc
import anyio.lowlevel

from ..cancel import CancelToken, Cause
from ..errors import Cancelled, RunError
from ..events import (
    ReasoningDelta,
    ReasoningStart,
    RunBoundary,
    RunCancelled,
    RunFailed,
    RunFinished,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from ..hooks import Decision, HookContext, Hooks
from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, UserMessage
from ..models import Model, ModelRequest
from ..result import RunResult
from ..tools import Tool, Toolset
from ..worker import Worker

SweepMode = Literal["cancel", "token", "thread", "timeout", "supersede", "external"]
"""How each re-run is stopped at its checkpoint (see `cancellation_sweep`)."""

_EXPECTED_KIND = {
    "cancel": "explicit",
    "token": "explicit",
    "thread": "explicit",
    "timeout": "deadline",
    "supersede": "superseded",
}
# A cancel from another thread (a Stop button, the deadline timer) reaches the loop up to one
# iteration later (DESIGN §2.2.3, "about one loop iteration"): one more stream event may arrive,
# and a tool may start in the loop turn the cancel lands in. From the loop's own thread, none may.
_CROSS_THREAD = frozenset({"thread", "timeout"})
_POOL_THREADS = ("AnyIO worker thread", "Trio thread", "asyncio_", "llm-worker-deadlines")

INVARIANTS: dict[str, str] = {
    "ended": "§2.2.3 the run ends (within run_timeout), the cancel notwithstanding",
    "outcome": "§2.2.8 a stopped run raises Cancelled with the cause kind of how it was stopped",
    "cancel-lost": "§2.2.2 cancel() acknowledges a cancel while the run is in progress",
    "cancel-ignored": "§2.2.3 an acknowledged cancel stops the run: no new model event waited "
    "for, model request or tool started after it (unless the run had already completed)",
    "cancel-swallowed": "§2.2.8 an outer cancellation re-raises the framework's own exception",
    "boundary": "§2.2.8 the run's end event (on_run) matches how it ended",
    "user-message": "§2.2.5 the input is in the history exactly once, before the run's answers",
    "streamed-text": "§2.2.5 text, reasoning and call arguments streamed to the run are kept",
    "interrupted-flag": "§2.2.5 a cut-off message is marked interrupted, a finished one is not",
    "tool-results": "§2.2.5 every tool call answered exactly once, right after its turn",
    "tool-output": "§2.2.4 a tool's (partial) output is kept in its result; cut calls never run",
    "on-abort": "§2.2.6 on_abort runs exactly once per interrupted run, never for a finished one",
    "partial": "§2.2.5 err.partial.items / result.items are exactly what the run added",
    "leak": "§2.2.9 no task or thread the run started is left running; the worker is idle",
    "reuse": "§2.2.10 the worker runs again, its request is valid and tells of the interruption",
    "check": "the user's check(worker, outcome) passes",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant at one checkpoint: ``invariant`` is a key of `INVARIANTS`."""

    invariant: str
    how: str
    checkpoint: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.how} at checkpoint {self.checkpoint}] {self.invariant}: {self.detail}"


@dataclass
class SweepReport:
    """What a sweep did: the checkpoints the run has, the stride it swept them at, what it found.

    ``cancelled`` counts runs that were stopped, ``completed`` runs that returned normally (of
    which ``late`` returned after an acknowledged cancel that came when the run had no await
    left to notice it at), ``checked`` the calls of the user's ``check``.
    """

    checkpoints: int
    stride: int = 1
    how: str = "cancel"
    runs: int = 0
    cancelled: int = 0
    completed: int = 0
    late: int = 0
    checked: int = 0
    findings: list[Violation] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        """Every violation as text: ``[how at checkpoint k] invariant: detail``."""
        return [str(finding) for finding in self.findings]

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        """How many times each invariant was violated, most frequent first."""
        return dict(Counter(finding.invariant for finding in self.findings).most_common())

    def summary(self) -> str:
        """One line: runs and outcomes, then each violated invariant with its count."""
        line = (
            f"{self.how}: {self.checkpoints} checkpoints (stride {self.stride}), {self.runs} runs: "
            f"{self.cancelled} cancelled, {self.completed} completed ({self.late} after a late "
            f"cancel), {self.checked} checked"
        )
        if not self.findings:
            return f"{line}; no violations"
        counted = ", ".join(f"{name} ×{n}" for name, n in self.counts().items())
        return f"{line}; {len(self.findings)} violations: {counted}"

    def raise_for_violations(self, per_invariant: int = 5) -> None:
        """Raise AssertionError naming each violated invariant, with its first few cases."""
        if not self.findings:
            return
        lines = [f"cancellation sweep found violations — {self.summary()}"]
        for invariant, count in self.counts().items():
            cases = [f for f in self.findings if f.invariant == invariant][:per_invariant]
            lines.extend(str(case) for case in cases)
            if count > len(cases):
                lines.append(f"… and {count - len(cases)} more {invariant}")
        raise AssertionError("\n".join(lines))


def history_violations(history: Sequence[Item]) -> list[str]:
    """Why ``history`` would be rejected by some provider (empty if it is valid).

    Call ids are unique; every tool call is answered exactly once, after the call and before the
    next user message, note, assistant message or later response's call; a result answers a call
    made before it.
    """
    problems: list[str] = []
    open_calls: dict[str, ToolCall] = {}
    seen_calls: set[str] = set()
    answered: set[str] = set()
    after_result = False
    for position, item in enumerate(history):
        if isinstance(item, ToolCall):
            if item.call_id in seen_calls:
                problems.append(f"item {position}: duplicate tool call id {item.call_id}")
            if after_result and open_calls:
                ids = ", ".join(open_calls)
                problems.append(f"item {position}: a new call before the results of {ids}")
                open_calls.clear()
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
        after_result = isinstance(item, ToolResult)
    if open_calls:
        problems.append(f"end of history: unanswered calls {', '.join(open_calls)}")
    return problems


# -- watching a worker -----------------------------------------------------------------------------


@dataclass(eq=False)
class _Delivered:
    """One stream event handed to the run: when its wait began and ended, and if it waited."""

    event: StreamEvent
    asked: int
    at: int
    waited: bool


@dataclass(eq=False)
class _Response:
    """One model request of a watched worker and what its stream delivered."""

    request: ModelRequest
    opened: int
    events: list[_Delivered] = field(default_factory=list)
    ended: bool = False  # the stream said it was over (StopAsyncIteration)

    def text(self) -> str:
        return "".join(d.event.text for d in self.events if isinstance(d.event, TextDelta))

    def reasoning(self) -> str:
        return "".join(d.event.text for d in self.events if isinstance(d.event, ReasoningDelta))

    @property
    def has_content(self) -> bool:
        content = TextDelta | ReasoningDelta | ReasoningStart | ToolCallStart
        return any(isinstance(d.event, content) for d in self.events)


@dataclass(eq=False)
class _ToolRun:
    """One execution of a watched tool: what it returned, if anything."""

    call_id: str
    tool: Tool[..., Any]
    in_thread: bool
    started: int
    clock: int = 0  # the sweep's clock when it started
    running: bool = True
    returned: bool = False
    value: Any = None
    cancelled_at_return: bool = False
    thread: threading.Thread | None = None
    grace: float = 0.0
    token_cancelled_at: float | None = None  # time.monotonic() of its token's cancel
    returned_at: float = 0.0

    @property
    def overran_its_grace(self) -> bool:
        """It returned after its grace was over: the map may have stopped waiting for it."""
        cancelled = self.token_cancelled_at
        return cancelled is not None and self.returned_at - cancelled >= self.grace


class _Probe(Hooks):
    """Logs what a watched worker does, in one sequence; never awaits, never decides.

    Cancellation: nothing here awaits, so watching adds no checkpoint to the run; the tool
    wrappers and the event wrapper only pass through what the wrapped calls raise.
    """

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.clock = 0  # advanced by the sweep's ticking task: a change means the loop turned
        self.responses: list[_Response] = []
        self.tool_runs: list[_ToolRun] = []
        self.commits: list[tuple[int, Item]] = []
        self.boundaries: list[tuple[int, RunBoundary]] = []
        self.aborts: list[str] = []  # run ids
        self.tokens: dict[str, CancelToken] = {}
        self.token_cancelled: dict[str, tuple[int, int]] = {}  # run id -> (seq, clock)

    def tick(self) -> int:
        return next(self._seq)

    @classmethod
    def attach(cls, worker: Worker) -> _Probe:
        probe = cls()
        worker.hooks.insert(0, probe)  # first: it sees each text delta as soon as it is fed
        worker.model = _WatchedModel(worker.model, probe)
        worker.toolset = Toolset([probe._watch(tool) for tool in worker.toolset])
        worker.on_commit(lambda items: probe.commits.extend((probe.tick(), i) for i in items))
        worker.on_run(lambda event: probe.boundaries.append((probe.tick(), event)))
        return probe

    # hooks: the run's token (to see when it is cancelled), and on_abort calls
    def _see(self, ctx: HookContext) -> None:
        if ctx.run_id not in self.tokens:
            self.tokens[ctx.run_id] = ctx.token
            run_id = ctx.run_id
            ctx.token.on_cancel(
                lambda: self.token_cancelled.setdefault(run_id, (self.tick(), self.clock))
            )

    async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> Decision:
        self._see(ctx)
        return None

    async def before_llm_request(self, ctx: HookContext, request: ModelRequest) -> Decision:
        self._see(ctx)
        return None

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        self.aborts.append(ctx.run_id)

    def _watch(self, tool: Tool[..., Any]) -> Tool[..., Any]:
        """A copy of ``tool`` whose calls are logged (the user's tool object is left alone)."""
        clone = copy.copy(tool)
        original = tool.bind
        probe = self

        def bind(arguments: Any, **options: Any) -> Callable[[CancelToken], Any]:
            call = original(arguments, **options)
            record = _ToolRun(str(options.get("call_id", "")), tool, not tool.is_async, 0)
            record.grace = float(options.get("grace", 0.0))

            def returned(value: Any, token: CancelToken) -> Any:
                record.returned_at = time.monotonic()
                if not inspect.isawaitable(value):
                    record.returned, record.value = True, value
                    record.cancelled_at_return = token.cancelled
                return value

            def begin(token: CancelToken) -> None:
                record.started, record.clock = probe.tick(), probe.clock
                token.on_cancel(lambda: setattr(record, "token_cancelled_at", time.monotonic()))
                if record.in_thread:
                    record.thread = threading.current_thread()
                probe.tool_runs.append(record)

            if tool.is_async:

                async def watched_async(token: CancelToken) -> Any:
                    begin(token)
                    try:
                        return returned(await call(token), token)
                    finally:
                        record.running = False

                return watched_async

            def watched_sync(token: CancelToken) -> Any:
                begin(token)
                try:
                    return returned(call(token), token)
                finally:
                    record.running = False

            return watched_sync

        clone.__dict__["bind"] = bind
        return clone


class _WatchedModel:
    """``model``, with every request and every event it delivers logged; otherwise the same."""

    def __init__(self, model: Model, probe: _Probe) -> None:
        self._model = model
        self._probe = probe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def name(self) -> str:
        return self._model.name

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        response = _Response(request, opened=self._probe.tick())
        self._probe.responses.append(response)
        return _WatchedStream(self._model.stream(request), response, self._probe)


class _WatchedStream:
    def __init__(
        self,
        inner: AbstractAsyncContextManager[AsyncIterator[StreamEvent]],
        response: _Response,
        probe: _Probe,
    ) -> None:
        self._inner = inner
        self._response = response
        self._probe = probe

    async def __aenter__(self) -> AsyncIterator[StreamEvent]:
        return _WatchedEvents(await self._inner.__aenter__(), self._response, self._probe)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)


class _WatchedEvents:
    def __init__(self, inner: AsyncIterator[StreamEvent], response: _Response, probe: _Probe):
        self._inner = inner
        self._response = response
        self._probe = probe

    def __aiter__(self) -> _WatchedEvents:
        return self

    async def __anext__(self) -> StreamEvent:
        probe = self._probe
        asked, clock = probe.tick(), probe.clock
        try:
            event = await self._inner.__anext__()
        except StopAsyncIteration:
            self._response.ended = True
            raise
        waited = probe.clock != clock
        self._response.events.append(_Delivered(event, asked, probe.tick(), waited))
        return event


# -- the sweep -------------------------------------------------------------------------------------


Check = Callable[[Worker, RunResult | BaseException], Awaitable[None] | None]


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
    probe = _Probe.attach(worker)  # watched like every re-run, so the ticks are the same
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
    """One re-run, stopped after ``k`` ticks, and every check of what it left behind."""

    def __init__(self, worker: Worker, settings: _Settings, k: int, report: SweepReport) -> None:
        self.worker = worker
        self.s = settings
        self.k = k
        self.report = report
        self.probe = _Probe.attach(worker)
        self.before = len(worker.history)
        self.token = CancelToken("sweep") if settings.how == "token" else None
        self.outcome: RunResult | BaseException | None = None
        self.fired: int | None = None  # seq when the stop was requested
        self.fired_clock = 0
        self.acknowledged: bool | None = None
        self.ended = 0  # seq when run() returned or raised
        self.added: list[Item] = []
        self.successor: Coroutine[Any, Any, RunResult] | None = None  # the superseding run
        self.successor_outcome: RunResult | BaseException | None = None
        self.deadline_at = 0.0

    def violation(self, invariant: str, detail: str) -> None:
        assert invariant in INVARIANTS, invariant
        self.report.findings.append(Violation(invariant, self.s.how, self.k, detail))

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.report.runs += 1
        worker, how = self.worker, self.s.how
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
                            self.outcome = await worker.run(
                                self.s.input, token=self.token, timeout=timeout
                            )
                        except RunError as exc:
                            self.outcome = exc
                        except anyio.get_cancelled_exc_class() as exc:
                            self.outcome = exc
                            raise
                        finally:
                            self.ended = self.probe.tick()
                            self.added = worker.history[self.before :]
                            ticking.cancel()
        except TimeoutError:
            self.violation("ended", f"the run did not end within {self.s.run_timeout}s")
            return
        self._check_outcome()
        self._check_user_message()
        self._check_stream_kept()
        self._check_tool_results()
        self._check_tool_output()
        self._check_on_abort()
        await self._check_nothing_left_running(tasks_before, threads_before)
        await self._call_check()
        if self.successor is not None:
            self._check_follow_up(self.successor_outcome, superseding=True)
            self._check_stream_kept(since=self.ended, until=self.probe.tick())
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
            self.acknowledged = self._stop(run_scope, group)
            self.fired, self.fired_clock = self.probe.tick(), self.probe.clock
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

    # -- what the run was, and when ------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return next(iter(self.probe.tokens), None)

    @property
    def ack(self) -> tuple[int, int] | None:
        """When the stop was acknowledged, as (seq, clock): once the sweep's stop returned (the
        loop did nothing in between), or when the run's token was cancelled if that came first
        (a deadline that fired early)."""
        fired = None if self.fired is None else (self.fired, self.fired_clock)
        cancelled = self.probe.token_cancelled.get(self.run_id or "")
        if cancelled is not None and cancelled[0] < self.ended:
            return cancelled if fired is None else min(cancelled, fired)
        return fired

    @property
    def interrupted(self) -> bool:
        return not isinstance(self.outcome, RunResult)

    def _responses(self) -> list[_Response]:
        return [r for r in self.probe.responses if r.opened < self.ended]

    def _commits(self) -> list[tuple[int, Item]]:
        return [(seq, item) for seq, item in self.probe.commits if seq < self.ended]

    def _end_boundary(self) -> RunBoundary | None:
        run_id = self.run_id
        for seq, event in self.probe.boundaries:
            ends = isinstance(event, RunFinished | RunCancelled | RunFailed) and seq <= self.ended
            if ends and (run_id is None or event.run_id == run_id):
                return event
        return None

    # -- the checks ----------------------------------------------------------------------------

    def _check_outcome(self) -> None:
        how, outcome = self.s.how, self.outcome
        if self.acknowledged is False:
            self.violation("cancel-lost", f"the {how} stop was not acknowledged during the run")
        end = self._end_boundary()
        if isinstance(outcome, RunResult):
            self.report.completed += 1
            stopped = self.ack is not None and self.acknowledged is not False
            if stopped and not self._went_on_after_the_cancel():
                self.report.late += 1
            if how == "external" and self.fired is not None and isinstance(end, RunCancelled):
                self.violation(
                    "cancel-swallowed",
                    "run() returned a result after its task was cancelled and cleaned up",
                )
            if list(outcome.items) != self.added:
                self.violation("partial", "result.items differ from the history the run added")
            if not isinstance(end, RunFinished):
                self.violation("boundary", f"returned a result but its end event was {end!r}")
            return
        self.report.cancelled += 1
        self._went_on_after_the_cancel()
        if how == "external":
            if isinstance(outcome, RunError):
                self.violation(
                    "cancel-swallowed",
                    f"the outer cancellation came out as {type(outcome).__name__}: {outcome}",
                )
            if not isinstance(end, RunCancelled):
                self.violation("boundary", f"cancelled from outside but its end event was {end!r}")
            return
        if not isinstance(outcome, Cancelled):
            self.violation(
                "outcome", f"expected Cancelled, got {type(outcome).__name__}: {outcome}"
            )
            return
        expected = _EXPECTED_KIND[how]
        if outcome.kind != expected:
            self.violation("outcome", f"cause kind {outcome.kind!r}, expected {expected!r}")
        if list(outcome.partial.items) != self.added:
            missing = [i.type for i in self.added if i not in outcome.partial.items]
            self.violation(
                "partial",
                f"err.partial.items ({len(outcome.partial.items)}) differ from the "
                f"{len(self.added)} items the run added (missing: {missing})",
            )
        if not isinstance(end, RunCancelled):
            self.violation("boundary", f"raised Cancelled but its end event was {end!r}")

    def _went_on_after_the_cancel(self) -> bool:
        """Report new work the run started after the stop took effect; True if there was any."""
        if self.ack is None:
            return False
        ack, ack_clock = self.ack
        latency = 1 if self.s.how in _CROSS_THREAD else 0  # loop turns the cancel may take
        found = False
        for response in self._responses():
            if response.opened > ack:
                self.violation("cancel-ignored", "a model request was made after the cancel")
                found = True
        for run in self.probe.tool_runs:
            # A thread may begin a call the map dispatched before the cancel: only async count.
            late = ack < run.started < self.ended and run.clock > ack_clock + latency
            if not run.in_thread and late:
                self.violation(
                    "cancel-ignored", f"tool call {run.call_id} started after the cancel"
                )
                found = True
        if isinstance(self.outcome, RunResult):
            waited = [
                d
                for r in self._responses()
                for d in r.events
                if d.waited and d.asked > ack and d.at < self.ended
            ]
            if len(waited) > latency:
                self.violation(
                    "cancel-ignored",
                    f"the run waited for {len(waited)} more model events after the cancel was "
                    f"acknowledged and returned normally",
                )
                found = True
        return found

    def _check_user_message(self) -> None:
        mine = [
            (n, item)
            for n, item in enumerate(self.added)
            if isinstance(item, UserMessage) and item.text == self.s.input
        ]
        if len(mine) != 1:
            self.violation(
                "user-message", f"the input is in what the run added {len(mine)} times, not once"
            )
            return
        position = mine[0][0]
        history = self.worker.history[: self.before]
        earlier_calls = {c.call_id for c in history if isinstance(c, ToolCall)}
        for item in self.added[:position]:
            answers_earlier = isinstance(item, ToolResult) and item.call_id in earlier_calls
            if not (answers_earlier or isinstance(item, Note)):
                self.violation("user-message", f"a {item.type} was added before the input")
                return

    def _check_stream_kept(self, since: int = 0, until: int | None = None) -> None:
        """Everything streamed to a run is in the message (and calls) committed for it.

        The swept run by default; ``since``/``until`` (sequence numbers) select a later run.
        """
        until = self.ended if until is None else until
        responses = [r for r in self.probe.responses if since < r.opened < until]
        commits = [(seq, item) for seq, item in self.probe.commits if since < seq < until]
        run = "" if since == 0 else "follow-up "
        for number, response in enumerate(responses):
            after = responses[number + 1].opened if number + 1 < len(responses) else until
            kept = [item for seq, item in commits if response.opened < seq < after]
            message = next((i for i in kept if isinstance(i, AssistantMessage)), None)
            where = f"{run}response {number + 1}"
            if message is None:
                if response.has_content:
                    text = response.text()
                    self.violation(
                        "streamed-text", f"{where}: nothing kept of what it streamed ({text!r})"
                    )
                continue
            for streamed, got in (
                (response.text(), message.text),
                (response.reasoning(), message.reasoning),
            ):
                if not got.startswith(streamed):
                    self.violation("streamed-text", f"{where}: streamed {streamed!r}, kept {got!r}")
            self._check_calls_kept(response, kept, where)
            self._check_interrupted_flag(response, message, where)

    def _check_calls_kept(self, response: _Response, kept: list[Item], where: str) -> None:
        calls = {item.call_id: item for item in kept if isinstance(item, ToolCall)}
        starts = {
            d.event.index: d.event for d in response.events if isinstance(d.event, ToolCallStart)
        }
        for index, start in starts.items():
            call = calls.get(start.call_id)
            if call is None:
                self.violation("streamed-text", f"{where}: call {start.call_id} was not kept")
                continue
            arguments = "".join(
                d.event.arguments
                for d in response.events
                if isinstance(d.event, ToolCallDelta) and d.event.index == index
            )
            finished = any(
                isinstance(d.event, ToolCallEnd) and d.event.index == index for d in response.events
            )
            if not call.raw_arguments.startswith(arguments):
                self.violation(
                    "streamed-text",
                    f"{where}: call {call.call_id} streamed {arguments!r}, "
                    f"kept {call.raw_arguments!r}",
                )
            if call.complete != finished:
                self.violation(
                    "streamed-text",
                    f"{where}: call {call.call_id} complete={call.complete} but its arguments "
                    f"{'did' if finished else 'did not'} finish streaming",
                )

    def _check_interrupted_flag(
        self, response: _Response, message: AssistantMessage, where: str
    ) -> None:
        starts = {d.event.index for d in response.events if isinstance(d.event, ToolCallStart)}
        ends = {d.event.index for d in response.events if isinstance(d.event, ToolCallEnd)}
        if not response.ended and response.has_content and not message.interrupted:
            self.violation(
                "interrupted-flag", f"{where} was cut off but its message is not interrupted"
            )
        if response.ended and starts <= ends and message.interrupted:
            self.violation(
                "interrupted-flag", f"{where} streamed to its end but is marked interrupted"
            )

    def _check_tool_results(self) -> None:
        problems = history_violations(self.worker.history)
        if isinstance(self.outcome, RunResult) and self.outcome.status == "paused":
            # A paused run legitimately ends with the calls it paused on; resume() runs them.
            problems = [p for p in problems if not p.startswith("end of history")]
        for problem in problems:
            self.violation("tool-results", problem)

    def _check_tool_output(self) -> None:
        results = {i.call_id: i for i in self.added if isinstance(i, ToolResult)}
        calls = {i.call_id: i for i in self.added if isinstance(i, ToolCall)}
        for run in self.probe.tool_runs:
            if run.started > self.ended:
                continue
            call = calls.get(run.call_id)
            if call is not None and not call.complete:
                self.violation("tool-output", f"call {run.call_id} ran with cut-off arguments")
            result = results.get(run.call_id)
            if not run.returned or result is None:
                continue  # it raised or was stopped; an unanswered call is tool-results' job
            if run.in_thread and run.overran_its_grace and result.status != "ok":
                continue  # it ignored its cancel past the grace: the map gave up on it
            rendered = run.tool.render_result(run.value)
            if rendered not in result.content:
                self.violation(
                    "tool-output",
                    f"call {run.call_id} returned {rendered!r} but its result is "
                    f"{result.status} {result.content!r}",
                )
            elif run.cancelled_at_return and result.status != "interrupted":
                self.violation(
                    "tool-output",
                    f"call {run.call_id} returned partial output after its cancel, but its "
                    f"result is {result.status!r}, not 'interrupted'",
                )

    def _check_on_abort(self) -> None:
        ran = self.probe.aborts.count(self.run_id) if self.run_id else len(self.probe.aborts)
        if self.interrupted and ran != 1:
            self.violation("on-abort", f"on_abort ran {ran} times for an interrupted run, not once")
        elif not self.interrupted and ran:
            self.violation("on-abort", f"on_abort ran {ran} times for a completed run")

    async def _check_nothing_left_running(
        self, tasks_before: int, threads_before: set[threading.Thread]
    ) -> None:
        if self.worker.running:
            self.violation("leak", "the worker still counts as running")
        await anyio.lowlevel.checkpoint()
        leaked = len(anyio.get_running_tasks()) - tasks_before
        if leaked > 0:
            self.violation("leak", f"{leaked} task(s) still running after the run ended")
        statuses = {i.call_id: i.status for i in self.worker.history if isinstance(i, ToolResult)}
        for run in self.probe.tool_runs:
            if run.running and not (run.in_thread and statuses.get(run.call_id) == "abandoned"):
                self.violation("leak", f"tool call {run.call_id} is still running")
        tool_threads = {run.thread for run in self.probe.tool_runs if run.running}
        new_threads = [
            thread.name
            for thread in threading.enumerate()
            if thread not in threads_before
            and thread not in tool_threads  # checked above, by what their result says
            and not thread.name.startswith(_POOL_THREADS)
        ]
        if new_threads:
            self.violation("leak", f"thread(s) still running: {', '.join(new_threads)}")

    async def _call_check(self) -> None:
        check, outcome = self.s.check, self.outcome
        if check is None or outcome is None:
            return
        self.report.checked += 1
        try:
            maybe = check(self.worker, outcome)
            if maybe is not None:
                await maybe
        except Exception as exc:
            self.violation("check", f"{type(exc).__name__}: {exc}")

    async def _follow_up(self) -> None:
        assert self.s.follow_up is not None
        try:
            with anyio.fail_after(self.s.run_timeout):
                outcome: RunResult | BaseException = await self.worker.run(self.s.follow_up)
        except (Exception, TimeoutError) as exc:
            outcome = exc
        self._check_follow_up(outcome, superseding=False)
        self._check_stream_kept(since=self.ended, until=self.probe.tick())

    def _check_follow_up(
        self, outcome: RunResult | BaseException | None, *, superseding: bool
    ) -> None:
        what = "the superseding run" if superseding else "the follow-up run"
        if not isinstance(outcome, RunResult):
            self.violation("reuse", f"{what} failed: {outcome!r}")
            return
        requests = [r.request for r in self.probe.responses if r.opened > self.ended]
        if requests:
            sent = list(requests[0].history)
            for problem in history_violations(sent):
                self.violation("reuse", f"{what} sent an invalid history: {problem}")
            since = sent[self.before + len(self.added) :]
            told = any(isinstance(i, Note) and i.kind == "interrupted" for i in since)
            if self.interrupted and self.added and not told:
                self.violation("reuse", f"{what} did not tell the model about the interruption")
        for problem in history_violations(self.worker.history):
            if not (outcome.status == "paused" and problem.startswith("end of history")):
                self.violation("reuse", f"after {what}: {problem}")
        if self.worker.running:
            self.violation("leak", f"the worker still counts as running after {what}")
