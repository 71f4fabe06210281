"""Clean-up that must finish: run one async callable to its end, whatever cancels the caller.

Invariants:
* The callable runs where no outer cancellation reaches it: inside an anyio shield on every
  backend and, on asyncio, in a task of its own, because a native ``Task.cancel()`` of the caller
  (``task.cancel()``, ``asyncio.timeout``) goes through every anyio shield.
* It is bounded: after ``timeout`` seconds it is cancelled; on asyncio, one that still has not
  ended a further ``_ABANDON_AFTER`` later is abandoned (left running, logged, kept referenced so
  it is not garbage-collected mid-await), never awaited forever. trio cannot abandon a task: a
  callable that swallows every cancellation there holds its caller, as any trio code would.
* A cancellation of the caller that arrives meanwhile is never swallowed: it is handed back in
  ``deferred`` and the caller re-raises it once the rest of its clean-up is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.lowlevel import current_token

logger = logging.getLogger("llm_worker.cancel")

_ABANDON_AFTER = 1.0  # seconds a cancelled clean-up gets to end before it is abandoned
_abandoned: set[asyncio.Task[None]] = set()


@dataclass
class CleanupOutcome:
    """What became of one clean-up step.

    ``overran``: it hit its bound and was cancelled; ``abandoned``: it did not end even then and
    was left running (asyncio only); ``error``: the exception it raised; ``deferred``: a
    cancellation of the caller that arrived while it ran, for the caller to re-raise.
    """

    overran: bool = False
    abandoned: bool = False
    error: Exception | None = None
    deferred: BaseException | None = None


async def run_cleanup(
    step: Callable[[], Awaitable[object]], *, timeout: float | None, what: str
) -> CleanupOutcome:
    """Run ``step()`` to its end in a shielded region bounded by ``timeout`` seconds.

    Cancellation: nothing that cancels the caller reaches ``step``; such a cancellation is returned
    in ``CleanupOutcome.deferred`` (on asyncio) or stays pending for the caller's next await (trio,
    anyio scopes), so the caller can finish its other clean-up first. Exceptions ``step`` raises
    are returned in ``error``, never raised.
    """
    outcome = CleanupOutcome()
    if isinstance(current_token().native_token, asyncio.AbstractEventLoop):
        await _in_own_task(step, timeout, what, outcome)
    else:
        await _in_shield(step, timeout, outcome)
    if outcome.overran:
        logger.warning("%s overran its %gs bound and was cancelled", what, timeout)
    return outcome


async def _in_shield(
    step: Callable[[], Awaitable[object]], timeout: float | None, outcome: CleanupOutcome
) -> None:
    with anyio.CancelScope(shield=True):
        with anyio.CancelScope() if timeout is None else anyio.move_on_after(timeout) as bound:
            try:
                await step()
            except Exception as exc:
                outcome.error = exc
        outcome.overran = bound.cancel_called


async def _in_own_task(
    step: Callable[[], Awaitable[object]],
    timeout: float | None,
    what: str,
    outcome: CleanupOutcome,
) -> None:
    async def body() -> None:
        try:
            await step()
        except Exception as exc:
            outcome.error = exc

    loop = asyncio.get_running_loop()
    task = loop.create_task(body(), name=what)
    # The shield keeps anyio scopes from re-delivering their cancellation at every pass while we
    # wait; only a native Task.cancel() of this task can still arrive, and it is deferred.
    with anyio.CancelScope(shield=True):
        await _wait(task, timeout, outcome)
        if task.done():
            return
        outcome.overran = True
        task.cancel(f"{what} overran its {timeout:g}s bound")
        await _wait(task, _ABANDON_AFTER, outcome)
    if not task.done():
        outcome.abandoned = True
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)
        logger.error("%s ignored its cancellation and was abandoned, still running", what)


async def _wait(task: asyncio.Task[None], timeout: float | None, outcome: CleanupOutcome) -> None:
    """Wait until ``task`` is done or ``timeout`` passed, deferring cancellations of the waiter."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while not task.done():
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return
        try:
            await asyncio.wait((task,), timeout=remaining)
        except asyncio.CancelledError as exc:
            if outcome.deferred is None:
                outcome.deferred = exc
