"""`TemporalRuns` and `RunHandle`: start, stop, follow and await runs from any process.

Invariants:
* One run at a time per session across the cluster: the run workflow's id names the session, so
  Temporal itself refuses a second one; newer input supersedes the running run (recorded as
  ``superseded``), waits for it to end (its partial is kept in the session), then starts.
* A run id names one workflow *execution*: a cancel addressed to a run that has ended reaches
  nothing (no stale cancel, even if the session runs again), and a cancel addressed to a run that
  has not started yet is recorded and takes effect (no lost cancel).
* `RunHandle.result` gives what a local ``worker.run`` gives: a `RunResult`, or the run's own
  `RunError` (same class, reason, kind, partial, cause).
* `RunHandle.events` reads events by position: reconnecting with ``after=n`` loses none.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from ..._error_base import LLMWorkerError
from ...cancel import Cause, InterruptKind, checked_duration
from ...errors import RunError, WorkerBusy
from ...events import Event
from ...result import RunResult
from ...store import SQLiteStore
from ._events import decode_event
from ._payloads import (
    ActivitySettings,
    CancelRequest,
    EventBatch,
    ItemsRef,
    RemoteError,
    RunOutcome,
    RunRequest,
    decode_outcome,
)
from ._sessions import SessionHistories
from ._workflow import WORKFLOW_NAME

__all__ = ["RunHandle", "RunNotFound", "RunOptions", "TemporalRuns"]

ID_PREFIX = "llm-worker-session:"
SUPERSEDE_ATTEMPTS = 20
SUPERSEDED = CancelRequest("superseded by newer input", "superseded")


class RunNotFound(LLMWorkerError, ValueError):
    """A run id that does not name a run of this integration."""


@dataclass(frozen=True)
class RunOptions:
    """How runs are scheduled (seconds). See ``docs/temporal.md`` for what each one costs.

    ``heartbeat_timeout``: how long a silent worker is trusted before its run resumes elsewhere.
    ``start_to_close_timeout``: one attempt's limit (None: none). Retries (crashes, hand-offs)
    start after ``retry_initial_interval``, back off to ``retry_maximum_interval``, at most
    ``retry_maximum_attempts`` times (0: no limit).
    """

    heartbeat_timeout: float = 10.0
    start_to_close_timeout: float | None = 24 * 3600.0
    retry_initial_interval: float = 0.5
    retry_maximum_interval: float = 10.0
    retry_maximum_attempts: int = 0


def activity_settings(task_queue: str, options: RunOptions) -> ActivitySettings:
    """What the run workflow needs of ``options`` to schedule the agent activity."""
    return ActivitySettings(
        task_queue=task_queue,
        heartbeat_timeout=options.heartbeat_timeout,
        start_to_close_timeout=options.start_to_close_timeout,
        retry_initial_interval=options.retry_initial_interval,
        retry_maximum_interval=options.retry_maximum_interval,
        retry_maximum_attempts=options.retry_maximum_attempts,
    )


class TemporalRuns:
    """Starts runs of agents served by `AgentWorker` processes, and stops them from anywhere.

    ``store``: only needed to read a run's items that were too large for a Temporal payload
    (kept by reference in the agent workers' session store).
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        options: RunOptions | None = None,
        store: SQLiteStore | str | None = None,
        id_prefix: str = ID_PREFIX,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.options = options or RunOptions()
        self.id_prefix = id_prefix
        self._histories = SessionHistories(store) if store is not None else None

    def workflow_id(self, session: str) -> str:
        return f"{self.id_prefix}{session}"

    async def start(
        self,
        agent: str,
        input: str | None,
        *,
        session: str | None = None,
        timeout: float | None = None,
        supersede: bool = True,
        events: bool = True,
    ) -> RunHandle:
        """Start a run of ``agent`` on ``session`` (default: a new session); return its handle.

        ``input`` None resumes the session. ``timeout`` ends the run with `Cancelled` (kind
        ``deadline``), counted from now. A run still going on the session is superseded (kind
        ``superseded``; it keeps what it said) unless ``supersede=False``, which raises
        `WorkerBusy` instead. Cancellation: the start is one request; a run whose start went
        out keeps running (cancel it by its session's latest run id).
        """
        limit = checked_duration(timeout, "timeout")
        session = session or f"temporal-{uuid.uuid4().hex[:12]}"
        request = RunRequest(
            agent=agent,
            input=input,
            session=session,
            deadline=time.time() + limit if limit is not None else None,
            timeout=limit,
            events=events,
        )
        workflow_id = self.workflow_id(session)
        for _ in range(SUPERSEDE_ATTEMPTS):
            try:
                handle: WorkflowHandle[Any, RunOutcome] = await self.client.start_workflow(
                    WORKFLOW_NAME,
                    args=[request, self._settings()],
                    id=workflow_id,
                    task_queue=self.task_queue,
                    result_type=RunOutcome,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                )
            except WorkflowAlreadyStartedError:
                if not supersede:
                    raise WorkerBusy(f"session {session!r} has a run going") from None
                await self._supersede(workflow_id)
                continue
            assert handle.result_run_id is not None
            return RunHandle(self, session, workflow_id, handle.result_run_id)
        raise WorkerBusy(f"session {session!r}: newer input kept arriving; gave up superseding")

    def get(self, run_id: str) -> RunHandle:
        """The handle of a run started anywhere, from its id (`RunHandle.run_id`)."""
        temporal_run_id, sep, workflow_id = run_id.partition(":")
        if not sep or not workflow_id.startswith(self.id_prefix):
            raise RunNotFound(f"not a run id of this integration: {run_id!r}")
        session = workflow_id.removeprefix(self.id_prefix)
        return RunHandle(self, session, workflow_id, temporal_run_id)

    async def cancel(
        self, run_id: str, reason: str | None = None, *, kind: InterruptKind = "explicit"
    ) -> bool:
        """Stop the run ``run_id`` with ``reason``; False if it had already ended. Any process."""
        return await self.get(run_id).cancel(reason, kind=kind)

    async def _supersede(self, workflow_id: str) -> None:
        """Cancel the session's running run as superseded and wait until it has ended."""
        previous: WorkflowHandle[Any, Any] = self.client.get_workflow_handle(workflow_id)
        with contextlib.suppress(RPCError):
            await previous.signal("cancel", SUPERSEDED)
        with contextlib.suppress(Exception):
            await previous.result(follow_runs=False)

    def _settings(self) -> ActivitySettings:
        return activity_settings(self.task_queue, self.options)

    def _load_items(self, ref: ItemsRef) -> list[Any]:
        if self._histories is None:
            raise LLMWorkerError(
                f"the run's items are kept by reference in session {ref.session!r} (too large "
                "for a Temporal payload): pass store= to TemporalRuns to read them"
            )
        return self._histories.load_items(ref)


class RunHandle:
    """One run: ``run_id`` works in any process (`TemporalRuns.get`)."""

    def __init__(
        self, runs: TemporalRuns, session: str, workflow_id: str, temporal_run_id: str
    ) -> None:
        self._runs = runs
        self.session = session
        self.run_id = f"{temporal_run_id}:{workflow_id}"
        self._handle: WorkflowHandle[Any, RunOutcome] = runs.client.get_workflow_handle(
            workflow_id, run_id=temporal_run_id, result_type=RunOutcome
        )

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id!r}>"

    async def cancel(self, reason: str | None = None, *, kind: InterruptKind = "explicit") -> bool:
        """Stop this run with ``reason`` and ``kind``; False if it had already ended.

        The first cancel of a run wins (two at once: both return True, one reason is kept).
        """
        try:
            await self._handle.signal("cancel", CancelRequest(reason, kind))
        except RPCError as error:
            if _already_ended(error):
                return False
            raise
        return True

    async def result(self) -> RunResult:
        """The run's `RunResult`, or raise its `RunError` (`Cancelled`, ...) with ``.partial``."""
        try:
            outcome = await self._handle.result(follow_runs=False)
        except WorkflowFailureError as error:
            remote = RemoteError(type(error.cause).__name__, str(error.cause))
            raise RunError(
                f"the run's workflow failed: {error.cause}", cause=Cause.failure(remote)
            ) from error
        return decode_outcome(outcome, self._runs._load_items)

    async def events(self, after: int = 0) -> AsyncIterator[Event]:
        """The run's events from position ``after`` on, live, until the run ended.

        To reconnect, pass the number of events already received: none is lost or repeated.
        Cancellation: safe at every await (nothing is consumed that was not yielded).
        """
        cursor = after
        done = False
        while not done:
            batch = await self._next_batch(cursor)
            for data in batch.events:
                cursor += 1
                yield decode_event(data)
            done = batch.done

    async def _next_batch(self, cursor: int) -> EventBatch:
        try:
            next_batch: EventBatch = await self._handle.execute_update(
                "next_events", cursor, result_type=EventBatch
            )
            return next_batch
        except (WorkflowUpdateFailedError, RPCError):
            # The run has ended: its events stay readable (a query replays the workflow).
            batch: EventBatch = await self._handle.query(
                "events_since", cursor, result_type=EventBatch
            )
            if not batch.done:  # ended without finishing (terminated), or a passing failure
                description = await self._handle.describe()
                batch.done = description.status != WorkflowExecutionStatus.RUNNING
            return batch


def _already_ended(error: RPCError) -> bool:
    text = str(error).lower()
    return "already completed" in text or "not found" in text
