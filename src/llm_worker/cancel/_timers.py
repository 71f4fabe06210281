"""One daemon thread that fires token deadlines, whatever async framework (if any) is running.

Invariants:
* At most one live timer thread per process, started lazily on the first deadline and idle
  (blocked on a condition, no polling) while there is nothing to fire. If it ever died, the next
  ``call_at`` starts a new one, which fires whatever is still due in the heap.
* Only finite instants enter the heap (``call_at`` refuses the rest, in the caller's thread), and
  a wait is clamped to `_LONGEST_WAIT`: no value can make the thread raise, so one bad deadline
  can never stop the others from firing.
* A scheduled callback runs at most once, in the timer thread, never while the lock is held; a
  cancelled entry never runs. Callbacks must be quick and thread-safe (``CancelToken.cancel`` is);
  whatever one raises is logged and the thread goes on.
* Cancelling an entry drops its callback at once (so a disarmed deadline does not keep its token
  alive until the time it would have fired); the heap is compacted when most of it is dead.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("llm_worker.cancel")

# ``Condition.wait`` raises OverflowError above ``threading.TIMEOUT_MAX``; a far deadline is
# reached by waking up (rarely) and waiting again.
_LONGEST_WAIT = min(threading.TIMEOUT_MAX, 3600.0)


class _Entry:
    __slots__ = ("fn", "id", "when")

    def __init__(self, when: float, entry_id: int, fn: Callable[[], object]) -> None:
        self.when = when
        self.id = entry_id
        self.fn: Callable[[], object] | None = fn  # None once cancelled or fired

    def __lt__(self, other: _Entry) -> bool:
        return (self.when, self.id) < (other.when, other.id)


class _TimerThread:
    def __init__(self, name: str = "llm-worker-deadlines") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[_Entry] = []
        self._dead = 0  # cancelled entries still in the heap
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, fn: Callable[[], object]) -> Callable[[], None]:
        """Run ``fn`` at ``time.monotonic() >= when``; return a function that cancels it.

        ``when`` must be a finite number (ValueError otherwise, before anything is scheduled).
        """
        if not math.isfinite(when):
            raise ValueError(f"a deadline must be a finite time, got {when!r}")
        with self._cond:
            entry = _Entry(when, next(self._ids), fn)
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None:
                    logger.error("the deadline thread had died; starting a new one")
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

        def cancel() -> None:
            with self._cond:
                if entry.fn is None:
                    return
                entry.fn = None
                self._dead += 1
                if self._dead > 32 and self._dead * 2 > len(self._heap):
                    self._heap = [e for e in self._heap if e.fn is not None]
                    heapq.heapify(self._heap)
                    self._dead = 0

        return cancel

    def _run(self) -> None:
        try:
            while True:
                fn = self._next_due()
                try:
                    fn()
                except BaseException:  # nothing a callback does may stop the other deadlines
                    logger.exception("a deadline callback raised")
                del fn  # do not keep the last callback (and its token) alive while idle
        except BaseException:
            # Normally unreachable; if the thread dies anyway, say so: ``call_at`` restarts it.
            logger.critical(
                "the deadline thread died; the next deadline starts a new one", exc_info=True
            )

    def _next_due(self) -> Callable[[], object]:
        """Block until the earliest live entry is due; pop it and return its callback."""
        with self._cond:
            while True:
                while self._heap and self._heap[0].fn is None:
                    heapq.heappop(self._heap)
                    self._dead -= 1
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0].when - time.monotonic()
                if delay <= 0:
                    entry = heapq.heappop(self._heap)
                    fn, entry.fn = entry.fn, None
                    assert fn is not None
                    return fn
                self._cond.wait(min(delay, _LONGEST_WAIT))


_timers = _TimerThread()


def call_later(delay: float, fn: Callable[[], object]) -> Callable[[], None]:
    """Run ``fn`` in the deadline thread after ``delay`` seconds; return its canceller.

    ``delay`` is a checked duration (see `checked_duration`): finite and not negative, else
    ValueError here, in the caller's thread. Use no timer at all for "no limit".
    """
    if not (math.isfinite(delay) and delay >= 0):
        raise ValueError(f"a delay must be a finite number of seconds >= 0, got {delay!r}")
    return _timers.call_at(time.monotonic() + delay, fn)
