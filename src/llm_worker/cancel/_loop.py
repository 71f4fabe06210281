"""How to reach the running event loop from any thread: the one backend-specific seam.

Invariants:
* A `Waker` never blocks its caller and is safe to call from any thread and from a signal handler:
  it queues ``fn`` on the loop it was made for (asyncio ``call_soon_threadsafe``, trio
  ``TrioToken.run_sync_soon``), so ``fn`` runs in that loop's thread, between tasks.
* Fast path: called from a task of that very loop (a task cancelling a token, the usual case in
  one process), it runs ``fn`` at once instead — a task is allowed to cancel scopes directly, and
  this saves a trip through the loop. A signal handler that interrupts code outside any task still
  takes the queued path.
* ``waker.soon(fn)`` never runs ``fn`` inside the calling task. On asyncio it is how cancel scopes
  are cancelled: anyio formats the calling task's repr into every cancel message (tens of µs,
  more than the loop pass it costs to run outside any task). On trio it is the fast path.
* Calling a waker whose loop has finished is a no-op: nobody can be waiting there any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Protocol

from anyio.lowlevel import RunVar, current_token


class Waker(Protocol):
    """Runs a callable in one event loop's thread; callable from any thread, never blocks."""

    def __call__(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the loop: at once when called from one of its tasks, else queued."""

    def soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the loop, not inside the calling task (asyncio queues it)."""


_waker: RunVar[Waker] = RunVar("llm_worker_waker")


def current_waker() -> Waker:
    """Return a thread-safe, non-blocking way to run a callable in the current event loop."""
    try:
        return _waker.get()
    except LookupError:
        waker = _make_waker(current_token().native_token)
        _waker.set(waker)
        return waker


class _AsyncioWaker:
    __slots__ = ("_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()

    def _in_task(self) -> bool:
        in_thread = threading.get_ident() == self._thread
        return in_thread and asyncio.current_task(self._loop) is not None

    def __call__(self, fn: Callable[[], object]) -> None:
        if self._in_task():
            fn()
        else:
            self._queue(fn)

    def soon(self, fn: Callable[[], object]) -> None:
        if self._in_task():
            self._loop.call_soon(fn)  # this thread: no self-pipe write needed
        else:
            self._queue(fn)

    def _queue(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to wake
            self._loop.call_soon_threadsafe(fn)


def _make_waker(native: object) -> Waker:
    if isinstance(native, asyncio.AbstractEventLoop):
        return _AsyncioWaker(native)
    return _TrioWaker(native)


class _TrioWaker:
    __slots__ = ("_current_task", "_finished", "_run_sync_soon", "_thread")

    def __init__(self, native: object) -> None:
        import trio  # only reached when running on trio, so it is installed

        assert isinstance(native, trio.lowlevel.TrioToken)
        self._run_sync_soon = native.run_sync_soon
        self._finished = trio.RunFinishedError
        self._current_task = trio.lowlevel.current_task
        self._thread = threading.get_ident()

    def _in_task(self) -> bool:
        if threading.get_ident() != self._thread:
            return False
        try:
            self._current_task()
        except RuntimeError:
            return False
        return True

    def __call__(self, fn: Callable[[], object]) -> None:
        if self._in_task():
            fn()
            return
        with contextlib.suppress(self._finished):
            self._run_sync_soon(fn)

    soon = __call__  # trio's scope cancel is cheap: the fast path is right for both
