"""Runs as child workflows: a parent workflow starts agent runs; cancelling it stops them.

Invariants:
* Called only inside a workflow (deterministic: the deadline counts from ``workflow.now()``).
* The child is cancelled with ``WAIT_CANCELLATION_COMPLETED``: a parent cancelled by anyone gets
  its children's partial runs, each ended with kind ``parent`` (the run workflow records it).
* The child's id names its session, as for `TemporalRuns`: one run per session still holds (a
  child started on a session with a run going fails to start, as Temporal refuses the id).
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from ...result import RunResult
from ._client import ID_PREFIX, RunOptions, activity_settings
from ._payloads import RunOutcome, RunRequest, decode_outcome
from ._workflow import WORKFLOW_NAME

__all__ = ["child_run_result", "start_child_run"]


async def start_child_run(
    agent: str,
    input: str | None,
    *,
    session: str,
    task_queue: str,
    options: RunOptions | None = None,
    timeout: float | None = None,
    id_prefix: str = ID_PREFIX,
) -> workflow.ChildWorkflowHandle[Any, RunOutcome]:
    """Start a run of ``agent`` on ``session`` as a child of the calling workflow.

    ``await`` the handle for its outcome and pass it to `child_run_result`. Cancellation: a
    cancel of the parent reaches the run as kind ``parent``; its partial result is kept.
    """
    deadline = workflow.now().timestamp() + timeout if timeout is not None else None
    request = RunRequest(agent, input, session, deadline=deadline, timeout=timeout)
    return await workflow.start_child_workflow(
        WORKFLOW_NAME,
        args=[request, activity_settings(task_queue, options or RunOptions())],
        id=f"{id_prefix}{session}",
        task_queue=task_queue,
        result_type=RunOutcome,
        cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
    )


def child_run_result(outcome: RunOutcome) -> RunResult:
    """The child run's `RunResult`, or raise its `RunError` — as `RunHandle.result` does."""
    return decode_outcome(outcome)
