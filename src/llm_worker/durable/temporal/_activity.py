"""The agent activity: one run of a registered agent on its session, on a worker machine.

Invariants:
* The run goes in its own task with its own `CancelToken`; the activity's task only awaits it
  through `await_translating_cancel`, so a Temporal cancel reaches the run as its token's cause
  (reason and kind from the workflow), never as an ``external`` task cancel.
* Every item the worker commits is written to the session store at once (the session is
  attached): that is the checkpoint a later attempt resumes from after a crash. Heartbeats keep
  the attempt alive and carry its progress; they are also how Temporal delivers a cancel.
* The outcome returned is what a local ``worker.run`` gives (result or `RunError`, encoded), with
  every item the run added across attempts. An attempt stopped for a hand-off (shutdown, given
  up) fails with a retryable ``HandedOff``; a missing agent, a failing factory or a run that
  raises something other than a `RunError` (a bug: another attempt would repeat it) fails for
  good; the workflow turns that into a `RunError` for the caller.
* A retried attempt first asks the workflow whether the run was cancelled meanwhile (a cancel
  made while no attempt ran): if so, it starts with its token cancelled and returns the partial.
* Events are published until the end, then flushed (shielded, bounded) before the outcome is
  returned, so a follower sees every event of the attempt before the run is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError

from ...cancel import CancelToken
from ...errors import RunError
from ...items import Item, dump_item
from ...result import RunResult
from ...worker import Worker
from ._cancel import HandedOff, await_translating_cancel, cancel_run
from ._events import EventPublisher
from ._payloads import (
    CancelRequest,
    ItemsRef,
    RunOutcome,
    RunRequest,
    encode_error,
    encode_result,
)
from ._sessions import OpenedSession, SessionHistories
from ._workflow import ACTIVITY_NAME, SETTLE_ACTIVITY_NAME

__all__ = ["AgentActivity", "AgentFactory"]

AgentFactory = Callable[[list[Item]], Worker]
"""Builds an agent's `Worker` on a session's history: ``factory(history) -> Worker``."""

FLUSH_BOUND = 5.0  # seconds the last events may take to reach the workflow
QUESTION_BOUND = 5.0  # seconds a retried attempt waits to learn of a cancel made meanwhile


class AgentActivity:
    """The activity that runs registered agents; one instance per `AgentWorker`."""

    def __init__(
        self,
        agents: Mapping[str, AgentFactory],
        histories: SessionHistories,
        *,
        heartbeat_every: float,
        event_interval: float,
        inline_items_limit: int,
    ) -> None:
        self._agents = dict(agents)
        self._histories = histories
        self._heartbeat_every = heartbeat_every
        self._event_interval = event_interval
        self._inline_items_limit = inline_items_limit

    @activity.defn(name=ACTIVITY_NAME)
    async def run_agent(self, request: RunRequest) -> RunOutcome:
        """Run ``request`` to its end. Cancellation: translated (see `await_translating_cancel`)."""
        factory = self._agents.get(request.agent)
        if factory is None:
            known = ", ".join(sorted(self._agents)) or "none"
            raise ApplicationError(
                f"no agent named {request.agent!r} on this worker (registered: {known})",
                type="AgentNotRegistered",
                non_retryable=True,
            )
        opened = await self._open(request)
        try:
            try:
                worker = factory(opened.session.history)
            except Exception as error:
                raise ApplicationError(
                    f"the factory of agent {request.agent!r} raised {error!r}",
                    type="AgentFactoryFailed",
                    non_retryable=True,
                ) from error
            opened.session.attach(worker)
            token = CancelToken(f"temporal {request.run_key}")
            if activity.info().attempt > 1:
                await _cancel_if_requested(token)
            run = asyncio.create_task(self._drive(worker, request, opened, token))
            try:
                outcome, handed_off = await await_translating_cancel(
                    run, token, _ask_cancel_request
                )
            except Exception as error:  # not a RunError: a bug another attempt would repeat
                raise ApplicationError(
                    f"the run of agent {request.agent!r} raised {error!r}",
                    type=type(error).__name__,
                    non_retryable=True,
                ) from error
            if handed_off:
                raise ApplicationError(
                    "this attempt stopped so that another one resumes the run",
                    type=HandedOff.__name__,
                )
            return outcome
        finally:
            opened.session.close()

    async def _open(self, request: RunRequest) -> OpenedSession:
        """Open the run's session (in a thread: it may wait for the session's lock).

        Cancellation: the open cannot be abandoned half-way (the lock would stay held), so it
        finishes, the session is closed again, and the cancellation goes on.
        """
        opening = asyncio.ensure_future(self._histories.open(request))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                opening.result().session.close()
            raise

    @activity.defn(name=SETTLE_ACTIVITY_NAME)
    async def settle_run(self, request: RunRequest) -> dict[str, Any]:
        """The partial result of a run whose attempt died without an outcome (encoded)."""
        items, base = await self._histories.settle(request)
        ref = ItemsRef(request.session, base, base + len(items))
        too_large = sum(len(dump_item(item)) for item in items) > self._inline_items_limit
        partial = RunResult(status="interrupted", items=tuple(items))
        return encode_result(partial, items_ref=ref if too_large else None)

    async def _drive(
        self, worker: Worker, request: RunRequest, opened: OpenedSession, token: CancelToken
    ) -> RunOutcome:
        """The run with its heartbeats and event publishing. Cancellation: through ``token``."""
        publisher = EventPublisher(_publish, self._event_interval) if request.events else None
        disarm = _arm_deadline(token, request)
        try:
            async with anyio.create_task_group() as helpers:
                helpers.start_soon(self._heartbeat, opened)
                if publisher is not None:
                    helpers.start_soon(publisher.run)
                try:
                    outcome = await self._run(worker, request, opened, token, publisher)
                finally:
                    helpers.cancel_scope.cancel()
            if publisher is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_BOUND):
                    await publisher.flush()
            return outcome
        finally:
            disarm()

    async def _run(
        self,
        worker: Worker,
        request: RunRequest,
        opened: OpenedSession,
        token: CancelToken,
        publisher: EventPublisher | None,
    ) -> RunOutcome:
        stream = worker.stream(None if opened.resume else request.input, token=token)
        async with stream as run:
            async for event in run:
                if publisher is not None:
                    publisher.add(event)
        items = opened.run_items()
        ref = self._items_ref(opened, items)
        if run.error is None:
            result = dataclasses.replace(run.result, items=tuple(items))
            return RunOutcome(result=encode_result(result, items_ref=ref))
        if isinstance(run.error, RunError):
            run.error.partial = dataclasses.replace(run.error.partial, items=tuple(items))
            return RunOutcome(error=encode_error(run.error, items_ref=ref))
        raise run.error

    def _items_ref(self, opened: OpenedSession, items: list[Item]) -> ItemsRef | None:
        """A reference instead of the items when they would not fit in a payload."""
        size = sum(len(dump_item(item)) for item in items)
        if size <= self._inline_items_limit:
            return None
        return ItemsRef(opened.session.name, opened.base, opened.base + len(items))

    async def _heartbeat(self, opened: OpenedSession) -> None:
        """Heartbeat with the run's progress until cancelled. Cancellation: at the sleep."""
        while True:
            activity.heartbeat({"items": len(opened.session.history) - opened.base})
            await anyio.sleep(self._heartbeat_every)


def _arm_deadline(token: CancelToken, request: RunRequest) -> Callable[[], None]:
    """Cancel ``token`` (kind deadline) at the run's deadline, which counts from its start."""
    if request.deadline is None:
        return lambda: None
    remaining = max(0.0, request.deadline - time.time())
    timeout = request.timeout if request.timeout is not None else remaining
    return token.cancel_after(remaining, reason=f"the run timed out after {timeout:g}s")


async def _cancel_if_requested(token: CancelToken) -> None:
    """Cancel ``token`` now if the run was cancelled while no attempt was running.

    Temporal retries an attempt that died even when a cancel was requested meanwhile; the new
    attempt would learn of it only at a heartbeat, possibly after finishing the run. Asking first
    makes the recorded cancel win. Cancellation: the question is bounded; on failure, go on.
    """
    with anyio.move_on_after(QUESTION_BOUND):
        try:
            request = await _ask_cancel_request()
        except Exception:  # the workflow cannot be asked now: a cancel comes by heartbeat
            return
        if request is not None:
            cancel_run(token, request)


async def _ask_cancel_request() -> CancelRequest | None:
    """Who cancelled this run and why, as the workflow recorded it."""
    requests: list[CancelRequest] = await _own_workflow().query(
        "cancel_request", result_type=list[CancelRequest]
    )
    return requests[0] if requests else None


async def _publish(events: list[str]) -> None:
    await _own_workflow().signal("publish_events", events)


def _own_workflow() -> WorkflowHandle[Any, Any]:
    info = activity.info()
    assert info.workflow_id is not None  # always set for an activity of a workflow
    return activity.client().get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
