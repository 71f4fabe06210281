"""How to reach the running event loop from any thread: the one backend-specific seam.

Invariants:
* A `Waker` never blocks its caller and is safe to call from any thread and from a signal handler:
  it queues ``fn`` on the loop it was made for (asyncio ``call_soon_threadsafe``, trio
  ``TrioToken.run_sync_soon``), so ``fn`` runs in that loop's thread, between tasks.
* Fast path: called from a task of that very loop (a task cancelling a token, the usual case in
  one process), it runs ``fn`` at once instead — a task is allowed to cancel scopes directly, and
  this saves a trip through the loop. A signal handler that interrupts code outside any task still
  takes the queued path.
* Calling a waker whose loop has finished is a no-op: nobody can be waiting there any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from anyio.lowlevel import RunVar, current_token

Waker = Callable[[Callable[[], object]], None]

_waker: RunVar[Waker] = RunVar("llm_worker_waker")


def current_waker() -> Waker:
    """Return a thread-safe, non-blocking way to run a callable in the current event loop."""
    try:
        return _waker.get()
    except LookupError:
        waker = _make_waker(current_token().native_token)
        _waker.set(waker)
        return waker


def _make_waker(native: object) -> Waker:
    loop_thread = threading.get_ident()
    if isinstance(native, asyncio.AbstractEventLoop):
        loop = native
        current_task = asyncio.current_task

        def wake_asyncio(fn: Callable[[], object]) -> None:
            if threading.get_ident() == loop_thread and current_task(loop) is not None:
                fn()
                return
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to wake
                loop.call_soon_threadsafe(fn)

        return wake_asyncio

    import trio  # only reached when running on trio, so it is installed

    assert isinstance(native, trio.lowlevel.TrioToken)
    run_sync_soon = native.run_sync_soon
    trio_current_task = trio.lowlevel.current_task

    def in_trio_task() -> bool:
        try:
            trio_current_task()
        except RuntimeError:
            return False
        return True

    def wake_trio(fn: Callable[[], object]) -> None:
        if threading.get_ident() == loop_thread and in_trio_task():
            fn()
            return
        with contextlib.suppress(trio.RunFinishedError):
            run_sync_soon(fn)

    return wake_trio
