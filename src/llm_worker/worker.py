"""The Worker: the turn loop, and the only module that knows the order of things.

A run is: commit the user message → [ask the model → stream its answer into the timeline →
commit what it said → run the tool calls it asked for → commit their results] until the model
stops asking for tools. Everything a run does happens inside one `move_on_cancel` scope bound to
the run's own token, so one ``cancel()`` — from any task or thread, a deadline, newer input or a
parent token — interrupts it at whatever await it is in. Then, exactly once, whatever ended it:

1. the open block is closed as aborted and what it held is committed (an interrupted message,
   tool calls whose arguments were cut off marked incomplete), and a user message that a hook was
   still looking at is committed;
2. every tool call without a result gets a synthetic one, so the history stays valid;
3. ``on_abort`` hooks run, each in its own shielded, bounded region (`run_cleanup`), so that no
   cancellation of the caller cuts them; their failures and overruns are reported, never raised;
4. the end event is delivered; then the run's error (or the exception that ended it, as itself)
   is raised — a framework cancellation that arrived during clean-up last of all.

Commits are synchronous list appends (no await inside), so history is never half-written.
Which run holds the worker is `_runs.RunSlots`' business; events for UIs are `RunStream`'s.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, NoReturn, Self

from . import history
from ._ending import classify, end_event
from ._observe import observer_for
from ._runs import Run, RunCoroutine, RunSlots
from ._text import valid_text
from .cancel import (
    CancelToken,
    Cause,
    InterruptKind,
    checked_duration,
    move_on_cancel,
)
from .errors import Aborted, Cancelled, HookFailed, ModelError, OutputValidationError
from .events import (
    ItemCommitted,
    OutputDelta,
    RunBoundary,
    RunFinished,
    RunStarted,
    StreamError,
    TextDelta,
    ToolCallDelta,
    TurnEnded,
    TurnStarted,
)
from .history import History
from .hooks import (
    AbortHooksOutcome,
    Decision,
    HookContext,
    HookPoint,
    Hooks,
    call_hook,
    decide,
    overrides,
    run_abort_hooks,
)
from .items import (
    AssistantMessage,
    Item,
    Note,
    ToolCall,
    Usage,
    UserMessage,
    UserPart,
)
from .models import Model, ModelRequest, ModelSettings, resolve_model
from .output import RunOutput, output_schema
from .result import RunResult, RunStatus
from .run_stream import RunStream
from .timeline import MalformedStream, Timeline
from .tools import Tool, Toolset, ToolSource, ToolSpec
from .tools._runner import ToolRunner

__all__ = ["RunStream", "Worker"]

logger = logging.getLogger("llm_worker")


class Worker:
    """Runs a conversation with a model, its tools and hooks; can be stopped at any moment.

    Runs are sequential: a second concurrent ``run()`` raises `WorkerBusy` unless it passes
    ``supersede=True``. After any outcome the same worker is ready for the next run. A worker
    serves one event loop at a time; ``cancel()`` works from any thread. Tool sources (MCP
    servers) among ``tools`` are listed when a run first needs them and kept across runs;
    ``async with worker:`` or ``await worker.aclose()`` closes them.
    """

    def __init__(
        self,
        model: Model | str = "offline",
        *,
        tools: Iterable[Tool[..., Any] | Callable[..., Any] | ToolSource] = (),
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
        output_type: Any = None,
        output_retries: int = 2,
    ) -> None:
        """``output_type`` (a pydantic model, or any type pydantic validates) makes every run
        answer with a validated value in ``result.output_value``, unless a run names its own;
        an answer that does not validate is sent back to the model up to ``output_retries``
        times, then the run ends with `OutputValidationError`."""
        self.model = resolve_model(model)
        self.output_type = output_type
        self.output_retries = output_retries
        if output_type is not None:
            output_schema(output_type)  # a type with no JSON schema fails here, not mid-run
        self.toolset = Toolset(tools)
        self.system = valid_text(system) if system is not None else None
        self.hooks = list(hooks)
        self.max_turns = max_turns
        self.tool_concurrency = tool_concurrency
        # Durations are checked here, at the call: ``inf`` means no limit; NaN or < 0 is refused.
        self.tool_grace = checked_duration(tool_grace, "tool_grace")
        self.tool_errors = tool_errors
        self.cleanup_timeout = checked_duration(cleanup_timeout, "cleanup_timeout")
        self.settings = settings or ModelSettings()
        self.deps = deps
        self._history = History(history)
        self._slots = RunSlots()
        # The model is told about it on the next run (a Note is built only then: runs are cheap).
        self._interruption: Cause | Note | None = None
        self._tools = ToolRunner(self._commit)
        self._run_listeners: list[Callable[[RunBoundary], None]] = []

    # -- public surface ----------------------------------------------------------------------------

    @property
    def history(self) -> list[Item]:
        """A copy of the conversation so far: provider-neutral and serialisable."""
        return list(self._history.items)

    @property
    def running(self) -> bool:
        """True from the moment ``run()`` is called until that run has been released."""
        return self._slots.busy

    @property
    def _active(self) -> Run | None:
        return self._slots.active

    def cancel(self, reason: str | None = None, *, kind: InterruptKind = "explicit") -> bool:
        """Cancel the active (or starting) run from any thread; False when there is none.

        A cancel while idle does nothing and never affects a later run.
        """
        cancelled = False
        for run in (self._slots.active, self._slots.next):
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
        output_type: Any = None,
        attachments: Sequence[UserPart] = (),
    ) -> Coroutine[Any, Any, RunResult]:
        """``await worker.run(input)``: run until the model stops asking for tools.

        ``output_type`` (else the worker's) asks for a structured answer: the validated value
        is ``result.output_value`` (see `llm_worker.output`); on a stop, the object validated
        from what was streamed is ``error.partial.output_value``. ``attachments`` (images,
        documents: `llm_worker.attachments.attach`) go with ``input`` in its user message.

        Returns a `RunResult` (finished, paused or limit_reached) or raises a `RunError` whose
        ``partial`` holds everything kept. The run is registered when ``run()`` is *called*, not
        when the coroutine first runs, so a ``cancel()`` in between (e.g. right after
        ``start_soon(worker.run, ...)``) is not lost, and `WorkerBusy` is raised at once. A run
        that never takes its first step (its task cancelled at once, its coroutine dropped) never
        holds the worker.

        Cancellation: ``cancel()``, ``token``, ``timeout`` and ``supersede`` by a newer run end it
        with `Cancelled`; if the awaiting task itself is cancelled, the same clean-up runs and the
        framework's own exception is re-raised. A superseding run's ``timeout`` also bounds its
        wait for the previous run's clean-up; a run superseded (or cancelled) while it waits for
        its turn ends at once with `Cancelled`, having committed nothing.
        """
        run = self._admit(input, token, timeout, supersede, output_type)
        run.attachments = tuple(attachments)
        return RunCoroutine(self._run_to_end(run), lambda: self._slots.release(run))

    def resume(
        self, *, token: CancelToken | None = None, timeout: float | None = None
    ) -> Coroutine[Any, Any, RunResult]:
        """``await worker.resume()``: continue a paused or interrupted run with no new input.

        Runs the tool calls left without a result (a pause before a tool, a crash), then goes on
        with the turn loop. Same registration and cancellation semantics as `run`.
        """
        run = self._admit(None, token, timeout, supersede=False)
        return RunCoroutine(self._run_to_end(run), lambda: self._slots.release(run))

    def stream(
        self,
        input: str | None,
        *,
        token: CancelToken | None = None,
        timeout: float | None = None,
        supersede: bool = False,
        output_type: Any = None,
        attachments: Sequence[UserPart] = (),
    ) -> RunStream:
        """``async with worker.stream("hi") as run: async for event in run: ...`` — for UIs.

        ``input=None`` resumes. The run starts on entering the block; leaving the block before
        the run ended cancels it (and waits for its clean-up). A handle never entered releases
        the worker when it is dropped. With an ``output_type``, `OutputDelta` events carry the
        answer validated so far as it streams.
        """
        run = self._admit(input, token, timeout, supersede, output_type)
        run.attachments = tuple(attachments)
        return RunStream(run, lambda: self._run_to_end(run), lambda: self._slots.release(run))

    async def aclose(self) -> None:
        """Close what the worker's tool sources started (MCP server processes, connections).

        Cancellation: each source closes in a shielded, bounded region; the worker stays usable
        (a source is started again when a later run needs it).
        """
        await self.toolset.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def note_interruption(self, note: Note) -> None:
        """Have the next run tell the model ``note`` (e.g. that a crash cut the last turn off).

        The worker does this itself after every interrupted run. It is committed after the
        results of any pending calls (``resume()``) or before new input, never between a call
        and its result. Sessions use it when they reopen after a crash.
        """
        self._interruption = note

    def on_commit(self, listener: Callable[[Sequence[Item]], None]) -> Callable[[], None]:
        """Call ``listener(items)`` synchronously whenever items are appended to the history."""
        return self._history.on_append(listener)

    def on_run(self, listener: Callable[[RunBoundary], None]) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously when a run starts and when it ends.

        The end event (`RunFinished`, `RunCancelled` or `RunFailed`) is delivered after the
        run's clean-up, before its result or error reaches the caller — also when the awaiting
        task was cancelled. A run that ended before it started (superseded while it waited)
        has neither. Sessions use it to record run boundaries.
        """
        self._run_listeners.append(listener)
        return lambda: self._run_listeners.remove(listener)

    def _boundary(self, run: Run, event: RunBoundary) -> None:
        for listener in self._run_listeners:
            listener(event)
        run.emit(event)

    # -- run lifecycle ---------------------------------------------------------------------------

    def _admit(
        self,
        input: str | None,
        token: CancelToken | None,
        timeout: float | None,
        supersede: bool,
        output_type: Any = None,
    ) -> Run:
        """Register a run synchronously, so a cancel that arrives before it starts is not lost."""
        limit = checked_duration(timeout, "run timeout")  # before anything is registered
        output = self._run_output(output_type)
        run_id = uuid.uuid4().hex[:12]
        name = f"run-{run_id}"
        run_token = CancelToken.linked(token, name=name) if token else CancelToken(name)
        run = Run(
            id=run_id,
            token=run_token,
            input=valid_text(input) if input is not None else None,
            ctx=HookContext(
                run_id=run_id, turn=0, token=run_token, deps=self.deps, tools=self.toolset
            ),
            output=output,
        )
        run.observer = observer_for(run, self.model)
        try:
            superseded = self._slots.admit(run, supersede=supersede)
        except BaseException:
            run_token.detach()
            raise
        for previous in superseded:
            previous.token.cancel("superseded by newer input", kind="superseded")
        if limit is not None:
            run.disarm_deadline = run_token.cancel_after(
                limit, reason=f"the run timed out after {limit:g}s"
            )
        return run

    def _run_output(self, output_type: Any) -> RunOutput | None:
        """The structured-output policy of a run (None: a plain text answer)."""
        chosen = output_type if output_type is not None else self.output_type
        if chosen is None:
            return None
        native = bool(getattr(self.model, "native_output", False))
        return RunOutput(output_schema(chosen), native=native, retries=self.output_retries)

    async def _run_to_end(self, run: Run) -> RunResult:
        """Wait for the run's turn, execute it, and release the worker whatever happens."""
        run.started = True
        try:
            if not await self._slots.wait_for_turn(run):
                cause = run.token.cause or Cause.interrupt("superseded")
                run.error = Cancelled(f"run cancelled before it started: {cause}", cause=cause)
                run.error.partial = run.result("interrupted")
                raise run.error
            return await self._execute(run)
        finally:
            self._slots.release(run)

    async def _execute(self, run: Run) -> RunResult:
        self._boundary(run, RunStarted(run_id=run.id))
        run.observer.run_started()
        status: RunStatus | None = None
        try:
            with move_on_cancel(run.token):
                status = await self._turns(run)
        except GeneratorExit:  # the coroutine was closed: nothing may be awaited any more
            raise
        except BaseException as exc:
            await self._end_interrupted(run, exc)
        if status is None:  # the token was cancelled at an await
            await self._end_interrupted(run, None)
        assert status is not None
        # The run completed: completion wins over a cancel that came too late to stop it.
        self._interruption = None
        result = run.result(status)
        output, reason = result.output, result.reason
        run.observer.run_ended(status, None)
        self._boundary(run, RunFinished(status=status, output=output, reason=reason, run_id=run.id))
        return result

    async def _end_interrupted(self, run: Run, exc: BaseException | None) -> NoReturn:
        """Clean up after any interruption, deliver the end event, then raise; never returns.

        ``exc`` is what ended the run (None: its token was cancelled at an await). Run errors
        come out as the library's `RunError`; anything else — a framework cancellation of the
        awaiting task, Ctrl-C, an exception from inside the worker or a tool's ``SystemExit`` —
        comes out as itself, after the same clean-up.
        """
        error, outer = classify(run, exc)
        cleanup = await self._clean_up(run, error.cause)
        error.cleanup_errors = cleanup.errors
        error.partial = run.result("interrupted")
        run.error = error
        run.observer.run_ended(None, outer or cleanup.deferred or error)
        self._boundary(run, end_event(run, error, outer, cleanup.errors))
        if outer is not None:
            raise outer
        if cleanup.deferred is not None:  # the caller's task was cancelled during clean-up
            raise cleanup.deferred
        raise error

    async def _clean_up(self, run: Run, cause: Cause) -> AbortHooksOutcome:
        """Close the open block, keep the input, answer every call, run ``on_abort``: once.

        The history part has no await (nothing can cut it); the ``on_abort`` hooks run shielded
        and bounded by ``cleanup_timeout`` (`run_abort_hooks`).
        """
        if run.cleaned_up:
            return AbortHooksOutcome()
        run.cleaned_up = True
        run.observer.cleanup_started(cause, run.timeline)
        timeline, run.timeline = run.timeline, None
        if timeline is not None and timeline.blocks:  # nothing streamed: nothing to keep
            timeline.abort_current_block()
            self._commit(run, timeline.items(interrupted=True), usage=timeline.usage)
        elif timeline is not None:
            run.usage = run.usage + timeline.usage
        if run.unsent_input is not None:
            self._commit_input(run)
        if run.output is not None and run.output.value is None:
            run.output.value = run.output.partial(run.items)  # what validated of the answer
        self._answer_unanswered(run, cause)
        if run.items:
            self._interruption = cause
        outcome = await run_abort_hooks(self.hooks, run.ctx, cause, self.cleanup_timeout)
        run.observer.cleanup_ended(outcome)
        return outcome

    # -- the turn loop ---------------------------------------------------------------------------

    async def _turns(self, run: Run) -> RunStatus:
        if run.input is not None:
            self._answer_unanswered(run, None)  # a paused run the user moved on from
            message = run.unsent_input = UserMessage(text=run.input, parts=run.attachments)
            try:
                await self._decide("on_prompt_submit", run, message)
            except (Aborted, HookFailed):
                if not run.token.cancelled:  # the hook refused the prompt: keep it out
                    run.unsent_input = None
                raise
            self._commit_input(run)  # a cancel during the hook commits it in clean-up instead
        else:
            pending = self._history.unanswered  # their results must come right after them
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
            await self.toolset.prepare()  # lists tool sources when first needed, or changed
            output = run.output
            request = ModelRequest(
                history=self._history.for_request(),
                system=self.system,
                tools=self._tool_specs(output),
                settings=self.settings,
                output=output.spec if output is not None else None,
            )
            if run.pauses(await self._decide("before_llm_request", run, request)):
                return "paused"
            new_items = await self._stream_turn(run, request)
            if run.observed:
                run.emit(TurnEnded(turn=run.turn))
            calls = [item for item in new_items if isinstance(item, ToolCall)]
            if output is not None:
                verdict = output.judge(new_items)
                self._commit(run, verdict.commit)
                if verdict.failure is not None:
                    raise OutputValidationError(verdict.failure)
                calls = verdict.calls
                if verdict.done:
                    if run.observed:
                        run.emit(OutputDelta(value=output.value))  # the whole answer, last
                    answer = next((i for i in new_items if isinstance(i, AssistantMessage)), None)
                    if run.pauses(await self._decide("on_turn_end", run, answer)):
                        return "paused"
                    return "finished"
                if not calls:
                    continue  # the model was told why its answer failed: it answers again
            if not calls:
                answer = next((i for i in new_items if isinstance(i, AssistantMessage)), None)
                if run.pauses(await self._decide("on_turn_end", run, answer)):
                    return "paused"
                return "finished"
            status = await self._run_tools(run, calls)
            if status is not None:
                return status

    async def _stream_turn(self, run: Run, request: ModelRequest) -> list[Item]:
        """Stream one model response into the timeline; commit it when the stream ends."""
        run.observer.turn_started(request)
        timeline = run.timeline = Timeline(
            model=self.model.name, taken_call_ids=self._history.call_ids
        )
        text_hooks = [h for h in self.hooks if overrides(h, "on_text_delta")]
        call_hooks = [h for h in self.hooks if overrides(h, "on_tool_call_delta")]
        watched = run.output if run.observed else None  # partial answers only for a listener
        if watched is not None:
            watched.start_turn()
        async with self.model.stream(request) as events:
            async for event in events:
                try:
                    timeline.feed(event)
                except MalformedStream as exc:
                    raise ModelError(f"malformed model stream: {exc}") from exc
                run.emit(event)
                if watched is not None:
                    grown = watched.watch(event)
                    if grown is not None:
                        run.emit(grown)
                if isinstance(event, StreamError):
                    raise ModelError(
                        f"the model reported an error: {event.message}", retryable=event.retryable
                    )
                if text_hooks and isinstance(event, TextDelta):
                    for hook in text_hooks:
                        await call_hook(hook, "on_text_delta", run.ctx, event.text)
                elif call_hooks and isinstance(event, ToolCallDelta):
                    for hook in call_hooks:
                        await call_hook(
                            hook, "on_tool_call_delta", run.ctx, event.index, event.arguments
                        )
        timeline.finish()
        run.timeline = None
        items = timeline.items()
        self._commit(run, items, usage=timeline.usage)
        run.observer.turn_ended(timeline, items)
        return items

    def _tool_specs(self, output: RunOutput | None) -> Sequence[ToolSpec]:
        """The tools of a request: the worker's, and the final-answer tool in ``tool`` mode."""
        specs = self.toolset.specs()
        if output is None or output.tool_name is None:
            return specs
        if any(spec.name == output.tool_name for spec in specs):
            raise ValueError(
                f"a tool is named {output.tool_name!r}, the name of the final-answer tool of "
                "structured output; rename it"
            )
        return [*specs, *output.tool_specs()]

    async def _run_tools(self, run: Run, calls: Sequence[ToolCall]) -> RunStatus | None:
        return await self._tools.run(
            run,
            calls,
            toolset=self.toolset,
            hooks=self.hooks,
            grace=self.tool_grace,
            concurrency=self.tool_concurrency,
            errors=self.tool_errors,
            deps=self.deps,
        )

    # -- hooks ---------------------------------------------------------------------------------

    async def _decide(self, point: HookPoint, run: Run, *args: Any) -> Decision:
        with run.observer.hook(point, self.hooks):
            return await decide(self.hooks, point, run.ctx, *args)

    # -- history ---------------------------------------------------------------------------------

    def _commit(self, run: Run, items: Sequence[Item], *, usage: Usage | None = None) -> None:
        """Append to the history for ``run``: synchronous, so never half-done."""
        if usage is not None:
            run.usage = run.usage + usage
        if not items:
            return
        self._history.append(items)
        run.items.extend(items)
        if run.observed:
            for item in items:
                run.emit(ItemCommitted(item=item))

    def _answer_unanswered(self, run: Run, cause: Cause | None) -> None:
        """Give every call without a result a synthetic one, so the next request is valid."""
        calls = self._history.unanswered
        for call in calls:
            if not call.complete:
                logger.info(
                    "tool call %s (%s) was cut off and not executed", call.call_id, call.name
                )
        if cause is None:
            self._tools.approved.clear()
        self._commit(run, [history.unanswered(call, cause) for call in calls])

    def _commit_input(self, run: Run) -> None:
        """Commit the user's message after any note owed to the model: once, in one commit."""
        message, run.unsent_input = run.unsent_input, None
        if message is not None:
            self._commit(run, [*self._owed_note(), message])

    def _note_interruption(self, run: Run) -> None:
        self._commit(run, self._owed_note())

    def _owed_note(self) -> list[Note]:
        """The note owed to the model about an interruption (taken: it is told once)."""
        told, self._interruption = self._interruption, None
        if told is None:
            return []
        return [told if isinstance(told, Note) else history.interruption_note(told)]
