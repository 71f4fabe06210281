"""The invariant checks of the cancellation sweep: what one re-run left, judged against the
guarantees (docs/cancellation.md).

Each check is named after a key of `INVARIANTS`: every run ends; it ends the way it was stopped;
an acknowledged cancel stops it; nothing said or done is lost (input, streamed text, tool output,
every call answered once); clean-up runs once; nothing is left running; the worker runs again and
is told; the user's ``check`` holds.

Invariants of this module: a check only reads its `RunRecord` (what the probe saw, stamped by
the driver while the run went on) and the worker, and only writes findings and counts into the
report; no check changes the worker, except ``call_users_check``, which calls the user's code.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel

from ..errors import Cancelled, RunError
from ..events import RunCancelled, RunFinished, ToolCallDelta, ToolCallEnd, ToolCallStart
from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, UserMessage
from ..result import RunResult
from ..worker import Worker
from ._sweep_probe import Response, RunRecord
from ._sweep_report import INVARIANTS, SweepReport, Violation

Check = Callable[[Worker, RunResult | BaseException], Awaitable[None] | None]
"""The user's own check of a run that ended: ``check(worker, outcome)``, sync or async."""

_EXPECTED_KIND = {
    "cancel": "explicit",
    "token": "explicit",
    "thread": "explicit",
    "timeout": "deadline",
    "supersede": "superseded",
}
# A cancel from another thread (a Stop button, the deadline timer) reaches the loop up to one
# iteration later (guarantee 3, "about one loop iteration"): one more stream event may arrive,
# and a tool may start in the loop turn the cancel lands in. From the loop's own thread, none may.
_CROSS_THREAD = frozenset({"thread", "timeout"})
_THREAD_SETTLE_POLLS = 100  # 10 ms each: a thread outside the tools gets a second to end
_POOL_THREADS = ("AnyIO worker thread", "Trio thread", "asyncio_", "llm-worker-deadlines")


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


class RunChecks:
    """Every check of one re-run's record; each broken invariant becomes a `Violation`."""

    def __init__(self, record: RunRecord, report: SweepReport, checkpoint: int) -> None:
        self.record = record
        self.report = report
        self.checkpoint = checkpoint

    def violation(self, invariant: str, detail: str) -> None:
        assert invariant in INVARIANTS, invariant
        self.report.findings.append(Violation(invariant, self.record.how, self.checkpoint, detail))

    async def check_the_run(
        self, tasks_before: int, threads_before: set[threading.Thread], check: Check | None
    ) -> None:
        """Every check of the run itself, in order (the follow-up is checked on its own).

        Cancellation: awaits only a checkpoint and the user's check; a cancel there stops the
        checks, leaving the findings made so far in the report.
        """
        self.check_outcome()
        self.check_user_message()
        self.check_stream_kept()
        self.check_tool_results()
        self.check_tool_output()
        self.check_on_abort()
        await self.check_nothing_left_running(tasks_before, threads_before)
        await self.call_users_check(check)

    def check_outcome(self) -> None:
        how, outcome = self.record.how, self.record.outcome
        if self.record.acknowledged is False:
            self.violation("cancel-lost", f"the {how} stop was not acknowledged during the run")
        end = self.record.end_boundary()
        if isinstance(outcome, RunResult):
            self.report.completed += 1
            stopped = self.record.ack is not None and self.record.acknowledged is not False
            if stopped and not self._went_on_after_the_cancel():
                self.report.late += 1
            if (
                how == "external"
                and self.record.fired is not None
                and isinstance(end, RunCancelled)
            ):
                self.violation(
                    "cancel-swallowed",
                    "run() returned a result after its task was cancelled and cleaned up",
                )
            if list(outcome.items) != self.record.added:
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
        if list(outcome.partial.items) != self.record.added:
            missing = [i.type for i in self.record.added if i not in outcome.partial.items]
            self.violation(
                "partial",
                f"err.partial.items ({len(outcome.partial.items)}) differ from the "
                f"{len(self.record.added)} items the run added (missing: {missing})",
            )
        if not isinstance(end, RunCancelled):
            self.violation("boundary", f"raised Cancelled but its end event was {end!r}")

    def _went_on_after_the_cancel(self) -> bool:
        """Report new work the run started after the stop took effect; True if there was any."""
        if self.record.ack is None:
            return False
        ack, ack_clock = self.record.ack
        latency = 1 if self.record.how in _CROSS_THREAD else 0  # loop turns the cancel may take
        found = False
        for response in self.record.responses():
            if response.opened > ack:
                self.violation("cancel-ignored", "a model request was made after the cancel")
                found = True
        for run in self.record.probe.tool_runs:
            # A thread may begin a call the map dispatched before the cancel: only async count.
            late = ack < run.started < self.record.ended and run.clock > ack_clock + latency
            if not run.in_thread and late:
                self.violation(
                    "cancel-ignored", f"tool call {run.call_id} started after the cancel"
                )
                found = True
        if isinstance(self.record.outcome, RunResult):
            waited = [
                d
                for r in self.record.responses()
                for d in r.events
                if d.waited and d.asked > ack and d.at < self.record.ended
            ]
            if len(waited) > latency:
                self.violation(
                    "cancel-ignored",
                    f"the run waited for {len(waited)} more model events after the cancel was "
                    f"acknowledged and returned normally",
                )
                found = True
        return found

    def check_user_message(self) -> None:
        mine = [
            (n, item)
            for n, item in enumerate(self.record.added)
            if isinstance(item, UserMessage) and item.text == self.record.input
        ]
        if len(mine) != 1:
            self.violation(
                "user-message", f"the input is in what the run added {len(mine)} times, not once"
            )
            return
        position = mine[0][0]
        history = self.record.worker.history[: self.record.before]
        earlier_calls = {c.call_id for c in history if isinstance(c, ToolCall)}
        for item in self.record.added[:position]:
            answers_earlier = isinstance(item, ToolResult) and item.call_id in earlier_calls
            if not (answers_earlier or isinstance(item, Note)):
                self.violation("user-message", f"a {item.type} was added before the input")
                return

    def check_stream_kept(self, since: int = 0, until: int | None = None) -> None:
        """Everything streamed to a run is in the message (and calls) committed for it.

        The swept run by default; ``since``/``until`` (sequence numbers) select a later run.
        """
        until = self.record.ended if until is None else until
        responses = [r for r in self.record.probe.responses if since < r.opened < until]
        commits = [(seq, item) for seq, item in self.record.probe.commits if since < seq < until]
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

    def _check_calls_kept(self, response: Response, kept: list[Item], where: str) -> None:
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
        self, response: Response, message: AssistantMessage, where: str
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

    def check_tool_results(self) -> None:
        problems = history_violations(self.record.worker.history)
        if isinstance(self.record.outcome, RunResult) and self.record.outcome.status == "paused":
            # A paused run legitimately ends with the calls it paused on; resume() runs them.
            problems = [p for p in problems if not p.startswith("end of history")]
        for problem in problems:
            self.violation("tool-results", problem)

    def check_tool_output(self) -> None:
        results = {i.call_id: i for i in self.record.added if isinstance(i, ToolResult)}
        calls = {i.call_id: i for i in self.record.added if isinstance(i, ToolCall)}
        for run in self.record.probe.tool_runs:
            if run.started > self.record.ended:
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

    def check_on_abort(self) -> None:
        ran = (
            self.record.probe.aborts.count(self.record.run_id)
            if self.record.run_id
            else len(self.record.probe.aborts)
        )
        if self.record.interrupted and ran != 1:
            self.violation("on-abort", f"on_abort ran {ran} times for an interrupted run, not once")
        elif not self.record.interrupted and ran:
            self.violation("on-abort", f"on_abort ran {ran} times for a completed run")

    async def check_nothing_left_running(
        self, tasks_before: int, threads_before: set[threading.Thread]
    ) -> None:
        if self.record.worker.running:
            self.violation("leak", "the worker still counts as running")
        await anyio.lowlevel.checkpoint()
        leaked = len(anyio.get_running_tasks()) - tasks_before
        if leaked > 0:
            self.violation("leak", f"{leaked} task(s) still running after the run ended")
        statuses = {
            i.call_id: i.status for i in self.record.worker.history if isinstance(i, ToolResult)
        }
        for run in self.record.probe.tool_runs:
            if run.running and not (run.in_thread and statuses.get(run.call_id) == "abandoned"):
                self.violation("leak", f"tool call {run.call_id} is still running")
        tool_threads = {run.thread for run in self.record.probe.tool_runs if run.running}

        def new_threads() -> list[str]:
            return [
                thread.name
                for thread in threading.enumerate()
                if thread not in threads_before
                and thread not in tool_threads  # checked above, by what their result says
                and not thread.name.startswith(_POOL_THREADS)
            ]

        # A thread the map gave up on before it started only has to pass its gate to end (it
        # never calls the tool); on a loaded machine that takes a moment. One still there after
        # a second is left running (threads are polled: nothing signals their end).
        for _ in range(_THREAD_SETTLE_POLLS):
            if not new_threads():
                break
            await anyio.sleep(0.01)
        if left := new_threads():
            self.violation("leak", f"thread(s) still running: {', '.join(left)}")

    async def call_users_check(self, check: Check | None) -> None:
        outcome = self.record.outcome
        if check is None or outcome is None:
            return
        self.report.checked += 1
        try:
            maybe = check(self.record.worker, outcome)
            if maybe is not None:
                await maybe
        except Exception as exc:
            self.violation("check", f"{type(exc).__name__}: {exc}")

    def check_follow_up(
        self, outcome: RunResult | BaseException | None, *, superseding: bool
    ) -> None:
        what = "the superseding run" if superseding else "the follow-up run"
        if not isinstance(outcome, RunResult):
            self.violation("reuse", f"{what} failed: {outcome!r}")
            return
        requests = [r.request for r in self.record.probe.responses if r.opened > self.record.ended]
        if requests:
            sent = list(requests[0].history)
            for problem in history_violations(sent):
                self.violation("reuse", f"{what} sent an invalid history: {problem}")
            since = sent[self.record.before + len(self.record.added) :]
            told = any(isinstance(i, Note) and i.kind == "interrupted" for i in since)
            if self.record.interrupted and self.record.added and not told:
                self.violation("reuse", f"{what} did not tell the model about the interruption")
        for problem in history_violations(self.record.worker.history):
            if not (outcome.status == "paused" and problem.startswith("end of history")):
                self.violation("reuse", f"after {what}: {problem}")
        if self.record.worker.running:
            self.violation("leak", f"the worker still counts as running after {what}")
