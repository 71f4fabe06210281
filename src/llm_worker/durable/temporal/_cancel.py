"""The cancel mapping: a Temporal cancellation becomes the run token's cause, not a task cancel.

Temporal's Python SDK tells an async activity it was cancelled by cancelling its asyncio task.
Passed on as is, that would end the run with kind ``external`` (the awaiting task was cancelled)
and the framework's own exception — the caller would lose the partial result. So the run goes in
its own task, awaited through a shield, and a cancel of the activity is translated:

* requested by someone (``cancel_requested``): the workflow recorded who and why (a
  `CancelRequest`) before it asked for the cancel; the activity learns it (a query) and cancels
  the run's token with that reason and kind. The run cleans up as usual and its outcome is
  returned: with ``WAIT_CANCELLATION_COMPLETED`` the workflow receives it.
* the server gave this attempt up (heartbeat timeout, not found, reset, paused) or this worker
  is shutting down: the run is stopped (what it committed is kept in the session) and the
  attempt fails with a retryable `HandedOff`, so another attempt resumes from the session.
* anything else (a cancel with no Temporal details): it is not ours to translate; re-raised.

Invariants: the run's task is never cancelled by this module, only its token, so every
guarantee of a local stop holds (partial kept, calls answered, ``on_abort`` once); learning the
reason is bounded in time and falls back to a generic explicit request; a native cancellation
is never swallowed — it is either turned into the token's cause or re-raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, cast

from temporalio import activity

from ..._error_base import LLMWorkerError
from ...cancel import INTERRUPT_KINDS, CancelToken, Cause, InterruptKind
from ._payloads import CancelRequest

__all__ = [
    "FALLBACK_REQUEST",
    "HandedOff",
    "await_translating_cancel",
    "cancel_run",
    "classify_cancel",
    "run_kind",
    "workflow_cancel_request",
]

T = TypeVar("T")
CancelClass = Literal["requested", "handoff", "foreign"]

FALLBACK_REQUEST = CancelRequest("the run was cancelled through Temporal", "explicit")
SHUTDOWN_REQUEST = CancelRequest("the agent worker is shutting down", "explicit")
GIVEN_UP_REQUEST = CancelRequest("Temporal gave this attempt up; another one resumes", "explicit")


class HandedOff(LLMWorkerError):
    """This attempt stopped so that another one resumes the run (shutdown, heartbeat timeout)."""


def classify_cancel(details: activity.ActivityCancellationDetails | None) -> CancelClass:
    """What a cancellation of the activity means: a request, a hand-off, or not Temporal's."""
    if details is None:
        return "foreign"
    if details.cancel_requested:
        return "requested"
    if details.worker_shutdown or details.timed_out or details.not_found:
        return "handoff"
    if details.paused or details.reset:
        return "handoff"
    return "foreign"


def workflow_cancel_request(*, has_parent: bool) -> CancelRequest:
    """The request recorded when the workflow itself is cancelled (not through `TemporalRuns`).

    A child workflow is cancelled by its parent's cancellation: kind ``parent``; otherwise
    someone cancelled the workflow directly (the CLI, the UI, a client): ``explicit``.
    """
    if has_parent:
        return CancelRequest("the parent workflow was cancelled", "parent")
    return CancelRequest("the workflow was cancelled", "explicit")


def run_kind(kind: str) -> InterruptKind:
    """The kind a cancel request gives a run: its own, or ``explicit`` if unknown or external.

    ``external`` would mean the caller's own task was cancelled, and lose the partial result
    the caller is owed; a request from another process is never that.
    """
    if kind in INTERRUPT_KINDS and kind != "external":
        return cast(InterruptKind, kind)
    return "explicit"


def cancel_run(token: CancelToken, request: CancelRequest) -> bool:
    """Cancel the run's token with ``request``'s reason and kind (see `run_kind`)."""
    cause = Cause.interrupt(run_kind(request.kind), request.reason, origin="temporal")
    return token.cancel(cause=cause)


async def await_translating_cancel(
    run: asyncio.Task[T],
    token: CancelToken,
    learn_request: Callable[[], Awaitable[CancelRequest | None]],
    *,
    learn_timeout: float = 5.0,
) -> tuple[T, bool]:
    """Await ``run``; a Temporal cancel of this activity cancels ``token`` instead of the task.

    Returns the run's value and whether the attempt must be handed off (raise `HandedOff` after
    it: the run was stopped for another attempt, not by a person).

    Cancellation: a cancel of the activity is translated as the module says and the wait goes
    on until the run has cleaned up; a cancel that is not Temporal's is passed to the run (so
    it cleans up as ``external``) and re-raised after it ended.
    """
    handed_off = False
    while True:
        try:
            return await asyncio.shield(run), handed_off
        except asyncio.CancelledError:
            if run.done():  # the run's own task ended cancelled: nothing to translate
                raise
            what = classify_cancel(activity.cancellation_details())
            if what == "foreign":
                run.cancel()
                await asyncio.wait([run])
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # translated into the token's cause just below
            if what == "handoff":
                handed_off = True
                details = activity.cancellation_details()
                shutdown = details is not None and details.worker_shutdown
                cancel_run(token, SHUTDOWN_REQUEST if shutdown else GIVEN_UP_REQUEST)
                continue
            request: CancelRequest | None = None
            learning = asyncio.ensure_future(learn_request())
            try:
                request = await asyncio.wait_for(asyncio.shield(learning), learn_timeout)
            except asyncio.CancelledError:  # a second cancel while asking: same translation
                if current is not None:
                    current.uncancel()
                learning.cancel()
            except Exception:  # the workflow could not be asked (or not in time): fall back
                learning.cancel()
            cancel_run(token, request or FALLBACK_REQUEST)
