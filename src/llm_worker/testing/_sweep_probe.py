"""Watching a worker for the cancellation sweep, without adding an await anywhere; and the
record of one re-run (`RunRecord`) that the checks judge.

Its model is wrapped (each stream event delivered to the run is logged, with whether the run had
to wait for it), its tools are wrapped (what each call returned, and whether its token was
cancelled by then), a hook that never awaits is put first (the run's token, ``on_abort`` calls)
and listeners log every commit and run boundary. All of it goes into one sequence, so "after the
cancel was acknowledged" is exact.

Invariants of this module: nothing here awaits except to pass on the wrapped model's own awaits,
so a watched run has exactly the checkpoints of an unwatched one; the user's tool objects and
model are left alone (copies and wrappers are put on the worker); ``Probe.tick`` is the one
sequence every record is stamped with.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..cancel import CancelToken, Cause
from ..events import (
    ReasoningDelta,
    ReasoningStart,
    RunBoundary,
    RunCancelled,
    RunFailed,
    RunFinished,
    StreamEvent,
    TextDelta,
    ToolCallStart,
)
from ..hooks import Decision, HookContext, Hooks
from ..items import Item, UserMessage
from ..models import Model, ModelRequest
from ..result import RunResult
from ..tools import Tool, Toolset
from ..worker import Worker
from ._sweep_report import SweepMode


@dataclass(eq=False)
class Delivered:
    """One stream event handed to the run: when its wait began and ended, and if it waited."""

    event: StreamEvent
    asked: int
    at: int
    waited: bool


@dataclass(eq=False)
class Response:
    """One model request of a watched worker and what its stream delivered."""

    request: ModelRequest
    opened: int
    events: list[Delivered] = field(default_factory=list)
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
class ToolRun:
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


class Probe(Hooks):
    """Logs what a watched worker does, in one sequence; never awaits, never decides.

    Cancellation: nothing here awaits, so watching adds no checkpoint to the run; the tool
    wrappers and the event wrapper only pass through what the wrapped calls raise.
    """

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self.clock = 0  # advanced by the sweep's ticking task: a change means the loop turned
        self.responses: list[Response] = []
        self.tool_runs: list[ToolRun] = []
        self.commits: list[tuple[int, Item]] = []
        self.boundaries: list[tuple[int, RunBoundary]] = []
        self.aborts: list[str] = []  # run ids
        self.tokens: dict[str, CancelToken] = {}
        self.token_cancelled: dict[str, tuple[int, int]] = {}  # run id -> (seq, clock)

    def tick(self) -> int:
        return next(self._seq)

    @classmethod
    def attach(cls, worker: Worker) -> Probe:
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
            record = ToolRun(str(options.get("call_id", "")), tool, not tool.is_async, 0)
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

    def __init__(self, model: Model, probe: Probe) -> None:
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
        response = Response(request, opened=self._probe.tick())
        self._probe.responses.append(response)
        return _WatchedStream(self._model.stream(request), response, self._probe)


class _WatchedStream:
    def __init__(
        self,
        inner: AbstractAsyncContextManager[AsyncIterator[StreamEvent]],
        response: Response,
        probe: Probe,
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
    def __init__(self, inner: AsyncIterator[StreamEvent], response: Response, probe: Probe):
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
        self._response.events.append(Delivered(event, asked, probe.tick(), waited))
        return event


# -- one re-run, as the sweep saw it ---------------------------------------------------------------


@dataclass(eq=False)
class RunRecord:
    """What one re-run was and what it left: written by the driver as the run goes, read by the
    checks. Sequence numbers (``fired``, ``ended``) come from the probe's one sequence."""

    worker: Worker
    how: SweepMode
    input: str
    probe: Probe
    before: int  # history length before the run
    outcome: RunResult | BaseException | None = None
    fired: int | None = None  # seq when the stop was requested
    fired_clock: int = 0
    acknowledged: bool | None = None
    ended: int = 0  # seq when run() returned or raised
    added: list[Item] = field(default_factory=list)

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

    def responses(self) -> list[Response]:
        return [r for r in self.probe.responses if r.opened < self.ended]

    def end_boundary(self) -> RunBoundary | None:
        run_id = self.run_id
        for seq, event in self.probe.boundaries:
            ends = isinstance(event, RunFinished | RunCancelled | RunFailed) and seq <= self.ended
            if ends and (run_id is None or event.run_id == run_id):
                return event
        return None
