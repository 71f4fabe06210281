"""Cancellation primitives on anyio (asyncio and trio alike), with no LLM knowledge.

anyio is the framework: any module may open its scopes and task groups. This package adds what
anyio does not have, and only that:

* `CancelToken` — a thread-safe, level-triggered request to stop, with a `Cause`, callbacks,
  ``wait()``, child and linked tokens, and deadlines (``cancel_after``).
* `Cause` — why something ended: an interrupt (kind, reason, origin), a failure, or a sequential /
  parallel composition of those.
* `move_on_cancel` / `fail_on_cancel` — run a block until a token is cancelled, and learn why.
* `shielded` — a clean-up region that outer cancellation cannot cut, bounded in time;
  `run_cleanup` — the same for one async step, which even a native asyncio ``Task.cancel()`` of
  the caller cannot cut.
* `ConcurrentMap` / `concurrent_map` — run calls concurrently; stop them token-first, with grace,
  then hard; abandon (and report) a thread that ignores its token.
* `checked_duration` — the one check for every timeout, deadline and grace period the package
  accepts: None or ``inf`` is no limit, a bad value raises at the call that accepted it.
"""

from ._cause import INTERRUPT_KINDS, Cause, InterruptKind
from ._cleanup import CleanupOutcome, run_cleanup
from ._duration import checked_duration
from ._map import CancelledItself, ConcurrentMap, Outcome, OutcomeStatus, concurrent_map
from ._scope import (
    Shielded,
    TokenScope,
    fail_on_cancel,
    move_on_cancel,
    shielded,
)
from ._token import CancelToken, Interrupted

__all__ = [
    "INTERRUPT_KINDS",
    "CancelToken",
    "CancelledItself",
    "Cause",
    "CleanupOutcome",
    "ConcurrentMap",
    "InterruptKind",
    "Interrupted",
    "Outcome",
    "OutcomeStatus",
    "Shielded",
    "TokenScope",
    "checked_duration",
    "concurrent_map",
    "fail_on_cancel",
    "move_on_cancel",
    "run_cleanup",
    "shielded",
]
