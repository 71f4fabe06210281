"""The Worker: the turn loop, and the only module that knows the order of things.

A run is: commit the user message → [ask the model → stream its answer into the timeline →
commit what it said → run the tool calls it asked for → commit their results] until the model
stops asking for tools. Everything a run does happens inside one `move_on_cancel` scope bound to
the run's own token, so one ``cancel()`` — from any task or thread, a deadline, newer input or a
parent token — interrupts it at whatever await it is in. Then, exactly once and shielded:

1. the open block is closed as aborted and what it held is committed (an interrupted message,
   tool calls whose arguments were cut off marked incomplete);
2. every tool call without a result gets a synthetic one, so the history stays valid;
3. ``on_abort`` hooks run (bounded in time; their failures are reported, never raised instead).

Commits are synchronous list appends (no await inside), so history is never half-written. An
outer cancellation of the awaiting task goes through the same clean-up and is then re-raised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .cancel import (
    CancelToken,
    Cause,
    ConcurrentMap,
    Interrupted,
    InterruptKind,
    Outcome,
    cancelled_exc_class,
    checkpoint_if_cancelled,
    move_on_cancel,
    shielded,
)
from .errors import Aborted, Cancelled, HookFailed, ModelError, RunError, ToolFailed, WorkerBusy
from .events import (
    Event,
    ItemCommitted,
    RunBoundary,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolFinished,
    ToolStarted,
    TurnEnded,
    TurnStarted,
)
from .hooks import Abort, Decision, HookContext, Hooks, Pause, Skip, overrides
from .items import (
    AssistantMessage,
    Item,
    Note,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
    unanswered_calls,
)
from .models import Model, ModelRequest, ModelSettings, resolve_model
from .result import RunResult, RunStatus
from .timeline import MalformedStream, Timeline
from .tools import Tool, ToolArgumentsError, Toolset

logger = logging.getLogger("llm_worker")

HookPoint = Literal[
    "on_prompt_submit",
    "before_llm_request",
    "before_tool_call",
    "after_tool_call",
    "on_turn_end",
    "on_text_delta",
    "on_tool_call_delta",
]
_ALLOWED: dict[HookPoint, tuple[type, ...]] = {
    "on_prompt_submit": (Abort,),
    "before_llm_request": (Abort, Pause),
    "before_tool_call": (Abort, Pause, Skip),
    "after_tool_call": (Abort, Pause),
    "on_turn_end": (Abort, Pause),
    "on_text_delta": (Abort,),
    "on_tool_call_delta": (Abort,),
}


def _ignore(event: Event) -> None:
    return None


@dataclass(eq=False)
class _Run:
    """The state of one run; lives from ``run()`` being called until it has fully ended."""

    id: str
    token: CancelToken
    input: str | None
    ctx: HookContext
    items: list[Item] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    turn: int = 0
    timeline: Timeline | None = None
    emit: Callable[[Event], None] = _ignore
    disarm_deadline: Callable[[], None] = lambda: None
    done: anyio.Event = field(default_factory=anyio.Event)
    cleaned_up: bool = False
    started: bool = False
    reason: str | None = None  # why it paused or stopped at the turn limit

    @property
    def observed(self) -> bool:
        """True when someone consumes this run's events (``stream()``): build them only then."""
        return self.emit is not _ignore

    def result(self, status: RunStatus) -> RunResult:
        return RunResult(
            status=status,
            items=tuple(self.items),
            usage=self.usage,
            turns=self.turn,
            run_id=self.id,
            reason=self.reason if status in ("paused", "limit_reached") else None,
        )


class Worker:
    """Runs a conversation with a model, its tools and hooks; can be stopped at any moment.

    Runs are sequential: a second concurrent ``run()`` raises `WorkerBusy` unless it passes
    ``supersede=True``. After any outcome the same worker is ready for the next run.
    """

    def __init__(
        self,
        model: Model | str = "offline",
        *,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
        system: str | None = None,
        hooks: Sequence[Hooks] = (),
        history: Iterable[Item] = (),
        max_turns: int = 16,
        tool_concurrency: int = 8,
        tool_grace: float = 2.0,
        tool_errors: Literal["return", "raise"] = "return",
        cleanup_timeout: float = 5.0,
        settings: ModelSettings | None = None,
        deps: Any = None,
    ) -> None:
        self.model = resolve_model(model)
        self.toolset = Toolset(tools)
        self.system = system
        self.hooks = list(hooks)
        self.max_turns = max_turns
        self.tool_concurrency = tool_concurrency
        self.tool_grace = tool_grace
        self.tool_errors = tool_errors
        self.cleanup_timeout = cleanup_timeout
        self.settings = settings or ModelSettings()
        self.deps = deps
        self._history: list[Item] = list(history)
        # Calls without a result, kept up to date by _commit: clean-up never rescans the history.
        self._unanswered: dict[str, ToolCall] = {
            call.call_id: call for call in unanswered_calls(self._history)
        }
        self._active: _Run | None = None
        self._queued: _Run | None = None
        # The model is told about it on the next run (a Note is built only then: runs are cheap).
        self._interruption: Cause | Note | None = None
        self._approved: set[str] = set()  # calls a hook paused on; resume() runs them unasked
        self._commit_listeners: list[Callable[[Sequence[Item]], None]] = []
        self._run_listeners: list[Callable[[RunBoundary], None]] = []

    # -- public surface ----------------------------------------------------------------------------

    @property
    def history(self) -> list[Item]:
        """A copy of the conversation so far: provider-neutral and serialisable."""
        return list(self._history)

    @property
    def running(self) -> bool:
        return self._active is not None or self._queued is not None

    def cancel(self, reason: str | None = None, *, kind: InterruptKind = "explicit") -> bool:
        """Cancel the active (or starting) run from any thread; False when there is none.

        A cancel while idle does nothing and never affects a later run.
        """
        cancelled = False
        for run in (self._active, self._queued):
            if run is not None:
                cancelled = run.token.cancel(reason, kind=kind) or cancelled
        return cancelled

    def run(
        self,
        input: str,
        *,
        token: CancelToken | None = None,
        timeout: float | None = None,
        supersede: bool = False,
    ) -> Coroutine[Any, Any, RunResult]:
        """``await worker.run(input)``: run until the model stops asking for tools.

        Returns a `RunResult` (finished, paused or limit_reached) or raises a `RunError` whose
        ``partial`` holds everything kept. The run is registered when ``run()`` is *called*, not
        when the coroutine first runs, so a ``cancel()`` in between (e.g. right after
        ``start_soon(worker.run, ...)``) is not lost, and `WorkerBusy` is raised at once.

        Cancellation: ``cancel()``, ``token``, ``timeout`` and ``supersede`` by a newer run end it
        with `Cancelled`; if the awaiting task itself is cancelled, the same clean-up runs and the
        framework's own exception is re-raised.
        """
        return self._start(self._begin(input, token, timeout, supersede))

    def resume(
        self, *, token: CancelToken | None = None, timeout: float | None = None
    ) -> Coroutine[Any, Any, RunResult]:
        """``await worker.resume()``: continue a paused or interrupted run with no new input.

        Runs the tool calls left without a result (a pause before a tool, a crash), then goes on
        with the turn loop. Same registration and cancellation semantics as `run`.
        """
        return self._start(self._begin(None, token, timeout, supersede=False))

    def stream(
        self,
        input: str | None,
        *,
        token: CancelToken | None = None,
        timeout: float | None = None,
        supersede: bool = False,
    ) -> RunStream:
        """``async with worker.stream("hi") as run: async for event in run: ...`` — for UIs.

        ``input=None`` resumes. The run starts on entering the block; leaving the block before
        the run ended cancels it (and waits for its clean-up).
        """
        return RunStream(self, self._begin(input, token, timeout, supersede))

    def note_interruption(self, note: Note) -> None:
        """Have the next run tell the model ``note`` (e.g. that a crash cut the last turn off).

        The worker does this itself after every interrupted run. It is committed after the
        results of any pending calls (``resume()``) or before new input, never between a call
        and its result. Sessions use it when they reopen after a crash.
        """
        self._interruption = note

    def on_commit(self, listener: Callable[[Sequence[Item]], None]) -> Callable[[], None]:
        """Call ``listener(items)`` synchronously whenever items are appended to the history."""
        self._commit_listeners.append(listener)
        return lambda: self._commit_listeners.remove(listener)

    def on_run(self, listener: Callable[[RunBoundary], None]) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously when a run starts and when it ends.

        The end event (`RunFinished`, `RunCancelled` or `RunFailed`) is delivered after the
        run's clean-up, before its result or error reaches the caller — also when the awaiting
        task was cancelled. Sessions use it to record run boundaries.
        """
        self._run_listeners.append(listener)
        return lambda: self._run_listeners.remove(listener)

    def _boundary(self, run: _Run, event: RunBoundary) -> None:
        for listener in self._run_listeners:
            listener(event)
        run.emit(event)

    # -- run lifecycle ---------------------------------------------------------------------------

    def _start(self, run: _Run) -> Coroutine[Any, Any, RunResult]:
        coro = self._drive(run)
        weakref.finalize(coro, self._forget, run)  # a run never awaited must not stay registered
        return coro

    def _forget(self, run: _Run) -> None:
        if run.started:
            return
        if self._active is run:
            self._active = None
        if self._queued is run:
            self._queued = None
        run.disarm_deadline()
        run.token.detach()

    def _begin(
        self, input: str | None, token: CancelToken | None, timeout: float | None, supersede: bool
    ) -> _Run:
        """Register a run synchronously, so a cancel that arrives before it starts is not lost."""
        if self.running and not supersede:
            raise WorkerBusy("the worker is already running; pass supersede=True to replace it")
        run_id = uuid.uuid4().hex[:12]
        run_token = (
            CancelToken.linked(token, name=f"run-{run_id}")
            if token
            else CancelToken(f"run-{run_id}")
        )
        run = _Run(
            id=run_id,
            token=run_token,
            input=input,
            ctx=HookContext(run_id=run_id, turn=0, token=run_token, deps=self.deps),
            done=anyio.Event(),
        )
        if timeout is not None:
            run.disarm_deadline = run_token.cancel_after(
                timeout, reason=f"the run timed out after {timeout:g}s"
            )
        for previous in (self._active, self._queued):
            if previous is not None:
                previous.token.cancel("superseded by newer input", kind="superseded")
        if self._active is None:
            self._active = run
        else:
            self._queued = run
        return run

    async def _drive(self, run: _Run) -> RunResult:
        run.started = True
        try:
            while self._active is not run:  # superseding: let the previous run finish its clean-up
                previous = self._active
                if previous is None:
                    self._active = run
                    if self._queued is run:
                        self._queued = None
                else:
                    await previous.done.wait()
            return await self._execute(run)
        finally:
            if self._active is run:
                self._active = None
            if self._queued is run:
                self._queued = None
            run.disarm_deadline()
            run.token.detach()
            run.done.set()

    async def _execute(self, run: _Run) -> RunResult:
        status: RunStatus | None = None
        failure: RunError | None = None
        self._boundary(run, RunStarted(run_id=run.id))
        try:
            with move_on_cancel(run.token):
                status = await self._turns(run)
        except cancelled_exc_class():
            # The awaiting task was cancelled from outside: clean up like any interruption, then
            # let the framework's own exception propagate.
            await self._stop_from_outside(
                run, Cause.interrupt("external", "the task awaiting the run was cancelled")
            )
            raise
        except Interrupted:
            pass  # the token was cancelled between awaits; handled below
        except RunError as exc:
            failure = exc
        except Exception as exc:
            cause = Cause.failure(exc, origin="worker")
            await self._clean_up(run, cause)
            self._boundary(run, RunFailed(error=repr(exc), cause=str(cause), run_id=run.id))
            raise
        except (KeyboardInterrupt, BaseExceptionGroup) as exc:
            # trio raises Ctrl-C inside the running task (asyncio cancels the main task instead,
            # handled above): keep what was said, then let it propagate.
            if not _is_keyboard_interrupt(exc):
                raise
            await self._stop_from_outside(run, Cause.interrupt("keyboard_interrupt", "Ctrl-C"))
            raise

        if status is not None:  # the run completed: completion wins over a late cancel
            self._interruption = None
            result = run.result(status)
            finished = RunFinished(
                status=status, output=result.output, reason=result.reason, run_id=run.id
            )
            self._boundary(run, finished)
            return result

        token_cause = run.token.cause
        if token_cause is not None:
            cause = Cause.sequential(token_cause, failure.cause if failure else None)
            error: RunError = Cancelled(f"run cancelled: {cause}", cause=cause)
            if failure is not None:
                error.__cause__ = failure
        else:
            assert failure is not None
            error = failure
        error.cleanup_errors = await self._clean_up(run, error.cause)
        error.partial = run.result("interrupted")
        if isinstance(error, Cancelled):
            end: RunBoundary = RunCancelled(
                kind=error.kind, reason=error.reason, cause=str(error.cause), run_id=run.id
            )
        else:
            end = RunFailed(
                error=str(error), cause=str(error.cause), kind=error.cause.kind, run_id=run.id
            )
        self._boundary(run, end)
        raise error

    async def _stop_from_outside(self, run: _Run, cause: Cause) -> None:
        """Clean up after an interruption the run does not turn into an error of its own."""
        run.token.cancel(cause=cause)
        cause = run.token.cause or cause  # a cancel that got there first is the real reason
        await self._clean_up(run, cause)
        self._boundary(
            run, RunCancelled(kind=cause.kind, reason=cause.reason, cause=str(cause), run_id=run.id)
        )

    async def _clean_up(self, run: _Run, cause: Cause) -> list[BaseException]:
        """Close the open block, answer every call, run ``on_abort`` hooks: once, shielded.

        The history part has no await (nothing can cut it); only the hooks await, so only they
        run in a shielded region bounded by ``cleanup_timeout``.
        """
        errors: list[BaseException] = []
        if run.cleaned_up:
            return errors
        run.cleaned_up = True
        timeline, run.timeline = run.timeline, None
        if timeline is not None and timeline.blocks:  # nothing streamed: nothing to keep
            timeline.abort_current_block()
            self._commit(run, timeline.items(interrupted=True), usage=timeline.usage)
        self._answer_unanswered(run, cause)
        if run.items:
            self._interruption = cause
        hooks = [hook for hook in self.hooks if overrides(hook, "on_abort")]
        if not hooks:
            return errors
        reason = cause.reason or str(cause)
        with shielded(self.cleanup_timeout, "on_abort hooks"):
            for hook in hooks:
                try:
                    await hook.on_abort(run.ctx, reason, cause)
                except Exception as exc:
                    logger.exception("on_abort hook %s raised", type(hook).__name__)
                    errors.append(exc)
        return errors

    # -- the turn loop ---------------------------------------------------------------------------

    async def _turns(self, run: _Run) -> RunStatus:
        if run.input is not None:
            self._answer_unanswered(run, None)  # a paused run the user moved on from
            message = UserMessage(text=run.input)
            await self._decide("on_prompt_submit", run, message)
            self._note_interruption(run)
            self._commit(run, [message])
        else:
            pending = list(self._unanswered.values())  # their results must come right after them
            if pending:
                status = await self._run_tools(run, pending)
                if status is not None:
                    return status
            self._note_interruption(run)

        while True:
            if run.turn >= self.max_turns:
                run.reason = f"the turn limit ({self.max_turns}) was reached"
                return "limit_reached"
            run.token.raise_if_cancelled()
            run.turn = run.ctx.turn = run.turn + 1
            if run.observed:
                run.emit(TurnStarted(turn=run.turn))
            request = ModelRequest(
                history=tuple(self._history),
                system=self.system,
                tools=self.toolset.specs(),
                settings=self.settings,
            )
            if self._pauses(run, await self._decide("before_llm_request", run, request)):
                return "paused"
            new_items = await self._stream_turn(run, request)
            if run.observed:
                run.emit(TurnEnded(turn=run.turn))
            calls = [item for item in new_items if isinstance(item, ToolCall)]
            if not calls:
                answer = next((i for i in new_items if isinstance(i, AssistantMessage)), None)
                if self._pauses(run, await self._decide("on_turn_end", run, answer)):
                    return "paused"
                return "finished"
            status = await self._run_tools(run, calls)
            if status is not None:
                return status

    async def _stream_turn(self, run: _Run, request: ModelRequest) -> list[Item]:
        """Stream one model response into the timeline; commit it when the stream ends."""
        timeline = run.timeline = Timeline(model=self.model.name)
        text_hooks = [h for h in self.hooks if overrides(h, "on_text_delta")]
        call_hooks = [h for h in self.hooks if overrides(h, "on_tool_call_delta")]
        async with self.model.stream(request) as events:
            async for event in events:
                try:
                    timeline.feed(event)
                except MalformedStream as exc:
                    raise ModelError(f"malformed model stream: {exc}") from exc
                run.emit(event)
                if isinstance(event, StreamError):
                    raise ModelError(
                        f"the model reported an error: {event.message}", retryable=event.retryable
                    )
                if text_hooks and isinstance(event, TextDelta):
                    for hook in text_hooks:
                        await self._call_hook(hook, "on_text_delta", run, event.text)
                elif call_hooks and isinstance(event, ToolCallDelta):
                    for hook in call_hooks:
                        await self._call_hook(
                            hook, "on_tool_call_delta", run, event.index, event.arguments
                        )
        timeline.finish()
        run.timeline = None
        items = timeline.items()
        self._commit(run, items, usage=timeline.usage)
        return items

    async def _run_tools(self, run: _Run, calls: Sequence[ToolCall]) -> RunStatus | None:
        """Check, approve and run ``calls`` concurrently; commit every result that exists."""
        runnable: list[tuple[ToolCall, Tool[..., Any], dict[str, Any]]] = []
        for call in calls:
            tool = self.toolset.get(call.name)
            rejection = _reject(call, tool)
            if rejection is not None:
                self._commit(run, [rejection])
                continue
            assert tool is not None
            try:
                arguments = tool.validate(call.arguments if call.arguments is not None else "")
            except ToolArgumentsError as exc:
                self._commit(run, [_result(call, f"Error: {exc}", "error")])
                continue
            if call.call_id not in self._approved:
                decision = await self._decide("before_tool_call", run, call)
                if isinstance(decision, Skip):
                    self._commit(run, [_result(call, f"Skipped: {decision.reason}", "skipped")])
                    continue
                if self._pauses(run, decision):
                    self._approved.update(c.call_id for c, _, _ in runnable)
                    self._approved.add(call.call_id)
                    return "paused"
            runnable.append((call, tool, arguments))
        if not runnable:
            return None

        self._approved.difference_update(call.call_id for call, _, _ in runnable)
        results: list[tuple[ToolCall, ToolResult]] = []

        def started(outcome: Outcome[Any]) -> None:  # when it really starts (it got a slot)
            if run.observed:
                call, _, arguments = runnable[outcome.index]
                run.emit(ToolStarted(call_id=call.call_id, name=call.name, arguments=arguments))

        def finished(outcome: Outcome[Any]) -> None:
            # Each result is committed the moment its tool ends: a slow sibling, a cancel or a
            # crash can never take a finished result with it.
            call, tool, _ = runnable[outcome.index]
            result = _outcome_result(call, tool, outcome)
            results.append((call, result))
            self._commit(run, [result])
            if run.observed:
                run.emit(ToolFinished(result=result))

        tool_map: ConcurrentMap[Any] = ConcurrentMap(
            [
                tool.bind(
                    arguments,
                    call_id=call.call_id,
                    turn=run.turn,
                    deps=self.deps,
                    grace=self.tool_grace,
                )
                for call, tool, arguments in runnable
            ],
            token=run.token,
            limit=self.tool_concurrency,
            grace=self.tool_grace,
            cancel_on_failure=self.tool_errors == "raise",
            on_start=started,
            on_outcome=finished,
        )
        await tool_map.run()  # if interrupted, calls that never ended are answered in clean-up

        run.token.raise_if_cancelled()
        if self.tool_errors == "raise" and (cause := tool_map.cause) is not None:
            failed = ", ".join(o.error.__class__.__name__ for o in tool_map.outcomes if o.error)
            raise ToolFailed(f"tool call failed: {failed}", cause=cause)
        paused = False
        for call, result in results:
            paused |= self._pauses(run, await self._decide("after_tool_call", run, call, result))
        return "paused" if paused else None

    # -- hooks ---------------------------------------------------------------------------------

    async def _decide(self, point: HookPoint, run: _Run, *args: Any) -> Decision:
        """Ask every hook implementing ``point``; the first decision that is not None wins."""
        for hook in self.hooks:
            if overrides(hook, point):
                decision = await self._call_hook(hook, point, run, *args)
                if decision is not None:
                    return decision
        return None

    @staticmethod
    def _pauses(run: _Run, decision: Decision) -> bool:
        """True if ``decision`` pauses the run; its reason goes into the result."""
        if not isinstance(decision, Pause):
            return False
        run.reason = run.reason or decision.reason
        return True

    async def _call_hook(self, hook: Hooks, point: HookPoint, run: _Run, *args: Any) -> Decision:
        name = f"{type(hook).__name__}.{point}"
        try:
            decision: Decision = await getattr(hook, point)(run.ctx, *args)
        except Exception as exc:
            cause = Cause.failure(exc, origin=f"hook {name}")
            raise HookFailed(f"hook {name} raised {exc!r}", cause=cause) from exc
        if decision is None:
            return None
        if not isinstance(decision, _ALLOWED[point]):
            error = TypeError(f"{type(decision).__name__} is not a valid decision for {point}")
            raise HookFailed(f"hook {name}: {error}", cause=Cause.failure(error, origin=name))
        if isinstance(decision, Abort):
            cause = Cause.interrupt("aborted", decision.reason, origin=f"hook {name}")
            raise Aborted(f"aborted by hook {name}: {decision.reason}", cause=cause)
        return decision

    # -- history ---------------------------------------------------------------------------------

    def _commit(self, run: _Run, items: Sequence[Item], *, usage: Usage | None = None) -> None:
        """Append to the history: synchronous, so never half-done whatever is cancelled."""
        if usage is not None:
            run.usage = run.usage + usage
        if not items:
            return
        self._history.extend(items)
        run.items.extend(items)
        for item in items:
            if isinstance(item, ToolCall):
                self._unanswered[item.call_id] = item
            elif isinstance(item, ToolResult):
                self._unanswered.pop(item.call_id, None)
        for listener in self._commit_listeners:
            listener(items)
        if run.observed:
            for item in items:
                run.emit(ItemCommitted(item=item))

    def _answer_unanswered(self, run: _Run, cause: Cause | None) -> None:
        """Give every call without a result a synthetic one, so the next request is valid."""
        results = []
        for call in list(self._unanswered.values()):
            if not call.complete:
                text = "Not executed: its arguments were cut off when the turn was interrupted."
            elif cause is None:
                text = "Not executed: the run was paused and the user moved on."
            else:
                text = f"Not executed: the run was interrupted ({cause})."
            results.append(_result(call, text, "cancelled"))
            if not call.complete:
                logger.info(
                    "tool call %s (%s) was cut off and not executed", call.call_id, call.name
                )
        if cause is None:
            self._approved.clear()
        self._commit(run, results)

    def _note_interruption(self, run: _Run) -> None:
        told, self._interruption = self._interruption, None
        if told is not None:
            self._commit(run, [told if isinstance(told, Note) else _interruption_note(told)])


class RunStream:
    """A run in progress, as an async iterator of `Event`s; created by `Worker.stream`."""

    def __init__(self, worker: Worker, run: _Run) -> None:
        self._worker = worker
        self._run = run
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](math.inf)
        self._group = anyio.create_task_group()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._finished = False

    @property
    def run_id(self) -> str:
        return self._run.id

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel this run (any thread); False if it already ended or was cancelled."""
        if self._run.done.is_set():
            return False
        return self._run.token.cancel(reason)

    @property
    def result(self) -> RunResult:
        """The run's result; raises its `RunError` if it failed, RuntimeError if still going."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the run has not finished yet")
        return self._result

    @property
    def error(self) -> BaseException | None:
        return self._error

    async def __aenter__(self) -> RunStream:
        send = self._send

        def emit(event: Event) -> None:
            with contextlib.suppress(anyio.ClosedResourceError):  # the consumer went away
                send.send_nowait(event)

        self._run.emit = emit
        await self._group.__aenter__()
        self._group.start_soon(self._drive)
        return self

    async def _drive(self) -> None:
        try:
            self._result = await self._worker._drive(self._run)
        except Exception as exc:
            self._error = exc
        finally:
            self._finished = True
            self._send.close()

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        """The next event. Cancellation: safe; no event is lost (they are buffered).

        A buffered event is handed out without a trip through the loop (a cancellation is still
        noticed first); the loop is entered only to wait for the next one.
        """
        await checkpoint_if_cancelled()
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if not self._finished:
            self._run.token.cancel("the event stream was closed before the run ended")
        try:
            return await self._group.__aexit__(exc_type, exc, tb)
        finally:
            self._receive.close()


def _interruption_note(cause: Cause) -> Note:
    why = f"{cause.kind}: {cause.reason}" if cause.reason else cause.kind
    text = (
        f"[The previous turn was interrupted ({why}). The last assistant message and tool "
        "results above may be incomplete.]"
    )
    return Note(kind="interrupted", text=text)


def _is_keyboard_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def _reject(call: ToolCall, tool: Tool[..., Any] | None) -> ToolResult | None:
    """An error result for a call that cannot run at all, or None if it can."""
    if not call.complete:
        return _result(call, "Not executed: its arguments never finished streaming.", "cancelled")
    if tool is None:
        return _result(call, f"Error: there is no tool named {call.name!r}.", "error")
    if call.parse_error is not None:
        return _result(call, f"Error: {call.parse_error}", "error")
    return None


def _result(call: ToolCall, content: str, status: Any) -> ToolResult:
    return ToolResult(call_id=call.call_id, name=call.name, content=content, status=status)


def _outcome_result(call: ToolCall, tool: Tool[..., Any], outcome: Outcome[Any]) -> ToolResult:
    token = outcome.token
    why = (token.reason if token is not None else None) or "cancelled"
    if outcome.status == "ok":
        return _result(call, tool.render_result(outcome.value), "ok")
    if outcome.status == "interrupted":
        partial = tool.render_result(outcome.value)
        return _result(
            call, f"{partial}\n[Interrupted: {why}; the output above is partial.]", "interrupted"
        )
    if outcome.status == "error":
        error = outcome.error
        return _result(call, f"Error: {type(error).__name__}: {error}", "error")
    if outcome.status == "abandoned":
        text = f"Abandoned: the tool ignored cancellation ({why}) and was left running."
        return _result(call, text, "abandoned")
    return _result(call, f"Cancelled: {why}.", "cancelled")
