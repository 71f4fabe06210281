"""How a stopped run ends: what it raises, and the one end event it reports.

Invariants:
* Every way a run can stop maps to exactly one `RunError` (what ``error.partial`` and the end
  event describe) and, when the library must not replace it, the exception to raise as itself:
  a framework cancellation of the awaiting task, Ctrl-C, or anything that is not a `RunError`.
* A cancel that reached the token first is the cause: later failures are composed after it.
* Nothing here awaits or touches the history; the worker's clean-up does, in between.
"""

from __future__ import annotations

import anyio

from ._runs import Run
from .cancel import Cause, Interrupted
from .errors import Cancelled, RunError
from .events import RunBoundary, RunCancelled, RunFailed


def classify(run: Run, exc: BaseException | None) -> tuple[RunError, BaseException | None]:
    """The run's `RunError`, and the exception to raise instead of it (or None)."""
    token = run.token
    if exc is None or isinstance(exc, Interrupted):
        cause = token.cause or Cause.interrupt("explicit")
        return Cancelled(f"run cancelled: {cause}", cause=cause), None
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        awaiting = "the task awaiting the run was cancelled"
        token.cancel(cause=Cause.interrupt("external", awaiting))
        cause = token.cause or Cause.interrupt("external")  # a cancel that came first wins
        return Cancelled(f"run cancelled: {cause}", cause=cause), exc
    if _is_keyboard_interrupt(exc):
        token.cancel(cause=Cause.interrupt("keyboard_interrupt", "Ctrl-C"))
        cause = token.cause or Cause.interrupt("keyboard_interrupt")
        return Cancelled(f"run cancelled: {cause}", cause=cause), exc
    if isinstance(exc, RunError):
        if token.cause is None:
            return exc, None
        cause = Cause.sequential(token.cause, exc.cause)
        error = Cancelled(f"run cancelled: {cause}", cause=cause)
        error.__cause__ = exc
        return error, None
    # A bug in the worker or a hook's helper, or a tool's SystemExit: clean up, then let it
    # out unchanged; its RunError twin only carries what was kept (``stream().error``).
    cause = Cause.failure(exc, origin="worker")
    return RunError(f"the run failed: {exc!r}", cause=cause), exc


def end_event(
    run: Run, error: RunError, outer: BaseException | None, cleanup_errors: list[BaseException]
) -> RunBoundary:
    """The one end event of an interrupted run: `RunCancelled` or `RunFailed`."""
    cause = error.cause
    problems = [f"{type(e).__name__}: {e}" for e in cleanup_errors]
    if isinstance(error, Cancelled):
        return RunCancelled(
            kind=cause.kind,
            reason=cause.reason,
            cause=str(cause),
            run_id=run.id,
            cleanup_errors=problems,
        )
    described = repr(outer) if outer is not None else str(error)
    return RunFailed(
        error=described, cause=str(cause), kind=cause.kind, run_id=run.id, cleanup_errors=problems
    )


def _is_keyboard_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)
