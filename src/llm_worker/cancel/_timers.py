"""One daemon thread that fires token deadlines, whatever async framework (if any) is running.

Invariants:
* At most one timer thread per process, started lazily on the first deadline and idle (blocked on
  a condition, no polling) while there is nothing to fire.
* A scheduled callback runs at most once, in the timer thread, never while the lock is held; a
  cancelled entry never runs. Callbacks must be quick and thread-safe (``CancelToken.cancel`` is).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("llm_worker.cancel")


class _TimerThread:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, fn: Callable[[], object]) -> Callable[[], None]:
        """Run ``fn`` at ``time.monotonic() >= when``; return a function that cancels it."""
        with self._cond:
            entry_id = next(self._ids)
            heapq.heappush(self._heap, (when, entry_id, fn))
            self._live.add(entry_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="llm-worker-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

        def cancel() -> None:
            with self._cond:
                self._live.discard(entry_id)

        return cancel

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] not in self._live:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        _, entry_id, fn = heapq.heappop(self._heap)
                        self._live.discard(entry_id)
                        break
                    self._cond.wait(delay)
            try:
                fn()
            except Exception:
                logger.exception("a deadline callback raised")


_timers = _TimerThread()


def call_later(delay: float, fn: Callable[[], object]) -> Callable[[], None]:
    """Run ``fn`` in the deadline thread after ``delay`` seconds; return its canceller."""
    return _timers.call_at(time.monotonic() + delay, fn)
