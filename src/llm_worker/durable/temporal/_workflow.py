"""The run workflow: one execution per run, whose id names the session (one run per session).

Invariants:
* Deterministic: the workflow only schedules the agent activity, records cancel requests and
  keeps the events it is sent; it never touches a model, a tool or the store.
* Who stopped a run is recorded *before* the activity is asked to cancel (the first request
  wins; later ones, and any after the run ended, change nothing), so the activity can always
  learn the reason and kind (`cancel_request`), and the caller receives exactly them.
* A cancel that comes before the activity started ends the run with `Cancelled` and nothing
  kept, as a local run cancelled before it began; one that comes after the end is a no-op.
  When the activity ends with no outcome (cancelled before it started, or its last attempt died
  and it was then cancelled or failed), a short activity reads what the run committed back from
  the session store, so the caller still gets everything kept.
* The activity is cancelled with ``WAIT_CANCELLATION_COMPLETED`` and awaited through a shield:
  the workflow always receives the activity's own outcome (the partial run), also when the
  workflow itself is cancelled (then the kind is ``parent`` for a child workflow, else
  ``explicit``).
* Events are kept in order; a follower reads them by position, so reconnecting loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from ...cancel import Cause
    from ...errors import Cancelled, RunError
    from ...result import RunResult
    from ._cancel import run_kind, workflow_cancel_request
    from ._payloads import (
        ActivitySettings,
        CancelRequest,
        EventBatch,
        RemoteError,
        RunOutcome,
        RunRequest,
        encode_error,
        encode_result,
    )

__all__ = ["ACTIVITY_NAME", "SETTLE_ACTIVITY_NAME", "WORKFLOW_NAME", "AgentRunWorkflow"]

WORKFLOW_NAME = "llm-worker-run"
ACTIVITY_NAME = "llm-worker-run-agent"
SETTLE_ACTIVITY_NAME = "llm-worker-settle-run"
NON_RETRYABLE = ["AgentNotRegistered", "AgentFactoryFailed"]
FOLLOW_WAIT = timedelta(seconds=20)  # a follower's long poll returns empty after this
SETTLE_TIMEOUT = timedelta(seconds=60)  # reading a dead attempt's items back (waits for a lock)


@workflow.defn(name=WORKFLOW_NAME)
class AgentRunWorkflow:
    """Runs one agent run as an activity; records cancel requests; keeps events for followers."""

    def __init__(self) -> None:
        self._cancel: CancelRequest | None = None
        self._activity: workflow.ActivityHandle[RunOutcome] | None = None
        self._events: list[str] = []
        self._done = False

    @workflow.run
    async def run(self, request: RunRequest, settings: ActivitySettings) -> RunOutcome:
        info = workflow.info()
        request = dataclasses.replace(request, run_key=f"{info.workflow_id}/{info.run_id}")
        if self._cancel is not None:  # signalled with the start, before anything ran
            return await self._end(_cancelled_before_start(self._cancel))
        self._activity = workflow.start_activity(
            ACTIVITY_NAME,
            request,
            result_type=RunOutcome,
            task_queue=settings.task_queue,
            heartbeat_timeout=timedelta(seconds=settings.heartbeat_timeout),
            start_to_close_timeout=(
                timedelta(seconds=settings.start_to_close_timeout)
                if settings.start_to_close_timeout is not None
                else None
            ),
            schedule_to_close_timeout=None,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=settings.retry_initial_interval),
                maximum_interval=timedelta(seconds=settings.retry_maximum_interval),
                maximum_attempts=settings.retry_maximum_attempts,
                non_retryable_error_types=NON_RETRYABLE,
            ),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        try:
            outcome = await self._await_activity(self._activity)
        except ActivityError as error:
            # No outcome: cancelled before it started, or its last attempt died and then it was
            # cancelled or failed for good. What it committed is in the session: read it back.
            partial = await self._settle(request, settings)
            if self._cancel is not None or isinstance(error.cause, CancelledError):
                # A cancel requested while an attempt was lost ends the run (Temporal retries
                # no further): whatever error the lost attempt left, it was stopped.
                outcome = _cancelled_without_outcome(self._cancel or _fallback(), partial)
            else:
                outcome = _activity_failed(error, partial)
        return await self._end(outcome)

    async def _settle(self, request: RunRequest, settings: ActivitySettings) -> dict[str, Any]:
        try:
            partial: dict[str, Any] = await workflow.execute_activity(
                SETTLE_ACTIVITY_NAME,
                request,
                result_type=dict,
                task_queue=settings.task_queue,
                start_to_close_timeout=SETTLE_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError:
            return encode_result(RunResult(status="interrupted"))
        return partial

    async def _await_activity(self, handle: workflow.ActivityHandle[RunOutcome]) -> RunOutcome:
        """The activity's outcome. Cancellation of the workflow: recorded, passed on, awaited."""
        while True:
            try:
                return await asyncio.shield(handle)
            except asyncio.CancelledError:
                if self._cancel is None:
                    self._cancel = workflow_cancel_request(
                        has_parent=workflow.info().parent is not None
                    )
                handle.cancel()

    async def _end(self, outcome: RunOutcome) -> RunOutcome:
        self._done = True  # wakes followers; let their updates answer before the end
        await workflow.wait_condition(workflow.all_handlers_finished)
        return outcome

    @workflow.signal(name="cancel")
    def cancel(self, request: CancelRequest) -> None:
        """Stop the run with ``request``'s reason and kind; the first request wins."""
        if self._done:
            return
        if self._cancel is None:
            self._cancel = request
        if self._activity is not None and not self._activity.done():
            self._activity.cancel()

    @workflow.query(name="cancel_request")
    def cancel_request(self) -> list[CancelRequest]:
        """The recorded request, if any (a list of at most one: payloads carry no bare None)."""
        return [self._cancel] if self._cancel is not None else []

    @workflow.signal(name="publish_events")
    def publish_events(self, events: list[str]) -> None:
        self._events.extend(events)

    @workflow.query(name="events_since")
    def events_since(self, cursor: int) -> EventBatch:
        return EventBatch(cursor, self._events[cursor:], self._done)

    @workflow.update(name="next_events", unfinished_policy=workflow.HandlerUnfinishedPolicy.ABANDON)
    async def next_events(self, cursor: int) -> EventBatch:
        """Events after ``cursor``, waiting (long poll) until there are some or the run ended."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: len(self._events) > cursor or self._done, timeout=FOLLOW_WAIT
            )
        return EventBatch(cursor, self._events[cursor:], self._done)


def _fallback() -> CancelRequest:
    return CancelRequest("the run was cancelled through Temporal", "explicit")


def _cancelled_before_start(request: CancelRequest) -> RunOutcome:
    return _cancelled_without_outcome(request, encode_result(RunResult(status="interrupted")))


def _cancelled_without_outcome(request: CancelRequest, partial: dict[str, Any]) -> RunOutcome:
    """Cancelled before it started (nothing kept), or after its last attempt died (``partial``)."""
    cause = Cause.interrupt(run_kind(request.kind), request.reason, origin="temporal")
    started = bool(partial.get("items_ref")) or partial.get("items", "[]") != "[]"
    when = "while its worker was lost" if started else "before it started"
    error = Cancelled(f"run cancelled {when}: {cause}", cause=cause)
    encoded = encode_error(error)
    encoded["partial"] = partial
    return RunOutcome(error=encoded)


def _activity_failed(error: ActivityError, partial: dict[str, Any]) -> RunOutcome:
    cause_error = error.cause
    if isinstance(cause_error, ApplicationError):
        remote = RemoteError(cause_error.type or "ApplicationError", cause_error.message)
    else:
        remote = RemoteError(type(cause_error).__name__, str(cause_error))
    reason = f"{remote.type_name}: {remote}"
    cause = Cause("failure", error=remote, origin="temporal", reason=reason)
    failure = RunError(f"the agent activity failed: {reason}", cause=cause)
    encoded = encode_error(failure)
    encoded["partial"] = partial
    return RunOutcome(error=encoded)
