"""Running one response's tool calls: checks, approval hooks, concurrent execution, results.

Invariants:
* Every call gets exactly one result, committed the moment it exists: refused calls (cut off,
  unknown tool, bad arguments) at once, a skipped call at once, a call that ran as soon as it
  ends — so a slow sibling, a cancel or a crash never takes a finished result with it.
* Calls a hook paused on are remembered (``approved``) so that ``resume()`` runs them without
  asking again; new input that moves on forgets them.
* Grace and hard cancellation are `ConcurrentMap`'s alone; this module only reports outcomes.
  A call the map stopped hard that can say what it had so far (`ReportsPartial`: an MCP call
  whose server never answered) is reported ``abandoned`` with that partial output kept.
* Tool sources are listed (`Toolset.prepare`) before the calls are checked, so a resumed run
  finds the tools of a source it has not listed yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .. import history
from .._runs import Run
from ..cancel import ConcurrentMap, Outcome
from ..errors import ToolFailed
from ..events import ToolFinished, ToolOverran, ToolProgress, ToolStarted
from ..hooks import Hooks, Skip, decide
from ..items import Item, ToolCall, ToolResult, ToolResultStatus
from ..result import RunStatus
from ._output import ReportsPartial, ToolOutput
from ._signature import ToolArgumentsError
from ._tool import ProgressCallback, Tool
from ._toolset import Toolset

logger = logging.getLogger("llm_worker")


class ToolRunner:
    """Runs tool calls for a worker; ``commit(run, items)`` appends to its history."""

    def __init__(self, commit: Callable[[Run, Sequence[Item]], None]) -> None:
        self._commit = commit
        self.approved: set[str] = set()  # calls a hook paused on; resume() runs them unasked

    async def run(
        self,
        run: Run,
        calls: Sequence[ToolCall],
        *,
        toolset: Toolset,
        hooks: Sequence[Hooks],
        grace: float | None,
        concurrency: int,
        errors: Literal["return", "raise"],
        deps: Any,
    ) -> RunStatus | None:
        """Check, approve and run ``calls`` concurrently; commit every result that exists.

        Returns "paused" if a hook paused before or after a call, else None. Cancellation: the
        run's token stops the calls (grace, then hard: `ConcurrentMap`); results that exist are
        committed as each call ends, and the calls that never ended are left for the worker's
        clean-up to answer. With ``errors="raise"`` a failing call raises `ToolFailed`.
        """
        await toolset.prepare()
        runnable: list[tuple[ToolCall, Tool[..., Any], dict[str, Any]]] = []
        for call in calls:
            tool = toolset.get(call.name)
            rejection = history.refusal(call, tool_exists=tool is not None)
            if rejection is not None:
                self._commit(run, [rejection])
                continue
            assert tool is not None
            try:
                arguments = tool.validate(call.arguments if call.arguments is not None else "")
            except ToolArgumentsError as exc:
                self._commit(run, [history.invalid_arguments(call, str(exc))])
                continue
            except Exception as exc:  # Tool.validate promises not to; bad arguments never crash
                logger.exception("validating the arguments of %s raised", call.name)
                text = f"the arguments could not be validated ({type(exc).__name__})."
                self._commit(run, [history.invalid_arguments(call, text)])
                continue
            if call.call_id not in self.approved:
                with run.observer.hook("before_tool_call", hooks):
                    decision = await decide(hooks, "before_tool_call", run.ctx, call)
                if isinstance(decision, Skip):
                    self._commit(run, [history.skipped(call, decision.reason)])
                    continue
                if run.pauses(decision):
                    self.approved.update(c.call_id for c, _, _ in runnable)
                    self.approved.add(call.call_id)
                    return "paused"
            runnable.append((call, tool, arguments))
        if not runnable:
            return None

        self.approved.difference_update(call.call_id for call, _, _ in runnable)
        results: list[tuple[ToolCall, ToolResult]] = []

        def started(outcome: Outcome[Any]) -> None:  # when it really starts (it got a slot)
            if run.observed:
                call, _, arguments = runnable[outcome.index]
                run.emit(ToolStarted(call_id=call.call_id, name=call.name, arguments=arguments))

        def finished(outcome: Outcome[Any]) -> None:
            # Each result is committed the moment its tool ends: a slow sibling, a cancel or a
            # crash can never take a finished result with it.
            call, tool, _ = runnable[outcome.index]
            result = _outcome_result(call, tool, outcome, bound[outcome.index])
            results.append((call, result))
            self._commit(run, [result])
            run.observer.tool_ended(outcome.index, result, outcome)
            if run.observed:
                run.emit(ToolFinished(result=result))

        def overran(outcome: Outcome[Any]) -> None:  # it swallows even the hard cancellation
            call, _, _ = runnable[outcome.index]
            logger.warning("tool %s (%s) ignores cancellation", call.name, call.call_id)
            if run.observed:
                run.emit(ToolOverran(call_id=call.call_id, name=call.name))

        bound = [
            tool.bind(
                arguments,
                call_id=call.call_id,
                turn=run.turn,
                deps=deps,
                on_progress=_progress_emitter(run, call),
            )
            for call, tool, arguments in runnable
        ]
        tool_map: ConcurrentMap[Any] = ConcurrentMap(
            run.observer.tool_calls([call for call, _, _ in runnable], bound),
            token=run.token,
            limit=concurrency,
            grace=grace,  # for the tools that can see a stop; the others have nothing to return
            no_grace=[i for i, (_, tool, _) in enumerate(runnable) if not tool.sees_its_token],
            cancel_on_failure=errors == "raise",
            on_start=started,
            on_outcome=finished,
            on_overrun=overran,
        )
        await tool_map.run()  # if interrupted, calls that never ended are answered in clean-up

        run.token.raise_if_cancelled()
        if errors == "raise" and (cause := tool_map.cause) is not None:
            failed = ", ".join(o.error.__class__.__name__ for o in tool_map.outcomes if o.error)
            raise ToolFailed(f"tool call failed: {failed}", cause=cause)
        paused = False
        for call, result in results:
            with run.observer.hook("after_tool_call", hooks):
                decision = await decide(hooks, "after_tool_call", run.ctx, call, result)
            paused |= run.pauses(decision)
        return "paused" if paused else None


def _progress_emitter(run: Run, call: ToolCall) -> ProgressCallback:
    def emit(progress: float, total: float | None, message: str | None) -> None:
        if run.observed:
            run.emit(
                ToolProgress(
                    call_id=call.call_id,
                    name=call.name,
                    progress=progress,
                    total=total,
                    message=message,
                )
            )

    return emit


def _outcome_result(
    call: ToolCall, tool: Tool[..., Any], outcome: Outcome[Any], bound: object
) -> ToolResult:
    token = outcome.token
    why = (token.reason if token is not None else None) or "cancelled"
    value = outcome.value
    output = value if isinstance(value, ToolOutput) else None
    text = tool.render_result(value)
    attachments = output.attachments if output is not None else ()
    if outcome.status == "ok":
        status: ToolResultStatus = "error" if output and output.status == "error" else "ok"
        return history.answer(call, text, status, attachments)
    if outcome.status == "interrupted":
        return history.partial_output(
            call, text, why, overran=outcome.overran, attachments=attachments
        )
    if outcome.status == "error":
        assert outcome.error is not None
        return history.tool_error(call, outcome.error)
    graceless = not tool.sees_its_token
    if outcome.status == "abandoned":
        return history.abandoned(call, why, graceless=graceless)
    partial = bound.partial() if outcome.started and isinstance(bound, ReportsPartial) else None
    if partial is not None:  # stopped hard while its server still had it: what it had so far
        return history.abandoned(call, why, partial.text, partial.attachments)
    return history.stopped(call, why, graceless=graceless and outcome.started)
