"""`AgentWorker`: serves runs of registered agents on one machine (a Temporal worker).

Invariants:
* Models, tools and keys stay on the worker machines: agents are registered by name, and a run
  names its agent. Histories stay in the session store (`SessionHistories`).
* The defaults serve the guarantees (`docs/temporal.md` gives their cost): a short heartbeat
  throttle (a cancel reaches a run within about one throttle interval), a short sticky-queue
  timeout (a dead worker's workflows move on quickly), no graceful shutdown wait (a shutdown
  hands runs off at once; they resume elsewhere from the store).
* The workflow sandbox passes ``llm_worker`` through: the workflow only uses its plain values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker as TemporalWorker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ...cancel import checked_duration
from ...store import SQLiteStore
from ._activity import AgentActivity, AgentFactory
from ._sessions import SessionHistories
from ._workflow import AgentRunWorkflow

__all__ = ["AgentWorker"]


class AgentWorker:
    """Runs registered agents for `TemporalRuns` callers: ``async with AgentWorker(...): ...``.

    ``agents`` maps a name to a factory ``factory(history) -> Worker``, called for every run with
    the session's history. ``store`` is the session store shared by every agent worker of the
    task queue (an `SQLiteStore` or a path; default: ``$LLM_WORKER_DB`` or the user data
    directory): histories and checkpoints live there, by reference. ``heartbeat_throttle``
    bounds how late a run learns of a cancel; ``sticky_queue_timeout`` how long a workflow
    waits for a dead worker; ``event_interval`` how often events are published to followers.
    ``workflows`` and ``activities`` host your own beside them (e.g. a parent workflow that
    runs agents with `start_child_run`). Other keyword arguments go to `temporalio.worker.Worker`.

    Cancellation: leaving the block shuts the worker down; runs still going are stopped and
    handed off (they resume on another worker from what they committed).
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        agents: Mapping[str, AgentFactory],
        store: SQLiteStore | str | os.PathLike[str] | None = None,
        heartbeat_throttle: float = 0.5,
        sticky_queue_timeout: float = 1.0,
        event_interval: float = 0.1,
        session_wait: float = 30.0,
        inline_items_limit: int = 512 * 1024,
        workflows: Sequence[type] = (),
        activities: Sequence[Callable[..., Any]] = (),
        **worker_options: Any,
    ) -> None:
        if not agents:
            raise ValueError("register at least one agent: agents={'name': factory}")
        throttle = _positive(heartbeat_throttle, "heartbeat_throttle")
        if store is None:
            from ...store import default_db_path

            store = default_db_path()
        self.histories = SessionHistories(store, wait=_positive(session_wait, "session_wait"))
        self.activity = AgentActivity(
            agents,
            self.histories,
            heartbeat_every=throttle / 2,
            event_interval=_positive(event_interval, "event_interval"),
            inline_items_limit=inline_items_limit,
        )
        options: dict[str, Any] = {
            "max_heartbeat_throttle_interval": timedelta(seconds=throttle),
            "default_heartbeat_throttle_interval": timedelta(seconds=throttle),
            "sticky_queue_schedule_to_start_timeout": timedelta(
                seconds=_positive(sticky_queue_timeout, "sticky_queue_timeout")
            ),
            "workflow_runner": SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules("llm_worker")
            ),
        }
        options.update(worker_options)
        self.worker = TemporalWorker(
            client,
            task_queue=task_queue,
            workflows=[AgentRunWorkflow, *workflows],
            activities=[self.activity.run_agent, self.activity.settle_run, *activities],
            **options,
        )

    async def __aenter__(self) -> AgentWorker:
        await self.worker.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.worker.__aexit__(exc_type, exc, tb)
        finally:
            self.histories.close()

    async def run(self) -> None:
        """Serve until cancelled (or `shutdown`). Cancellation: shuts down, hands runs off."""
        try:
            await self.worker.run()
        finally:
            self.histories.close()

    async def shutdown(self) -> None:
        """Stop polling, hand off the runs still going, and return when the worker stopped."""
        await self.worker.shutdown()


def _positive(value: float, name: str) -> float:
    seconds = checked_duration(value, name)
    if seconds is None or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds
