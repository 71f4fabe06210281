"""One daemon thread that fires token deadlines, whatever async framework (if any) is running.

Invariants:
* At most one timer thread per process, started lazily on the first deadline and idle (blocked on
  a condition, no polling) while there is nothing to fire.
* A scheduled callback runs at most once, in the timer thread, never while the lock is held; a
  cancelled entry never runs. Callbacks must be quick and thread-safe (``CancelToken.cancel`` is).
* Cancelling an entry drops its callback at once (so a disarmed deadline does not keep its token
  alive until the time it would have fired); the heap is compacted when most of it is dead.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("llm_worker.cancel")


class _Entry:
    __slots__ = ("fn", "id", "when")

    def __init__(self, when: float, entry_id: int, fn: Callable[[], object]) -> None:
        self.when = when
        self.id = entry_id
        self.fn: Callable[[], object] | None = fn  # None once cancelled or fired

    def __lt__(self, other: _Entry) -> bool:
        return (self.when, self.id) < (other.when, other.id)


class _TimerThread:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Entry] = []
        self._dead = 0  # cancelled entries still in the heap
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, fn: Callable[[], object]) -> Callable[[], None]:
        """Run ``fn`` at ``time.monotonic() >= when``; return a function that cancels it."""
        with self._cond:
            entry = _Entry(when, next(self._ids), fn)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llm-worker-deadlines", daemon=True
                )
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
        while True:
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
                        break
                    self._cond.wait(delay)
            try:
                fn()
            except Exception:
                logger.exception("a deadline callback raised")
            del fn  # do not keep the last callback (and its token) alive while idle


_timers = _TimerThread()


def call_later(delay: float, fn: Callable[[], object]) -> Callable[[], None]:
    """Run ``fn`` in the deadline thread after ``delay`` seconds; return its canceller."""
    return _timers.call_at(time.monotonic() + delay, fn)
