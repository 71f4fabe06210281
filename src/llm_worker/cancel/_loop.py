"""How to reach the running event loop from any thread: the one backend-specific seam.

Invariants:
* A `Waker` never blocks its caller and is safe to call from any thread and from a signal handler:
  it only queues ``fn`` on the loop it was made for (asyncio ``call_soon_threadsafe``, trio
  ``TrioToken.run_sync_soon``). ``fn`` then runs in that loop's thread, between tasks.
* Calling a waker whose loop has finished is a no-op: nobody can be waiting there any more.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    if isinstance(native, asyncio.AbstractEventLoop):
        loop = native

        def wake_asyncio(fn: Callable[[], object]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to wake
                loop.call_soon_threadsafe(fn)

        return wake_asyncio

    import trio  # only reached when running on trio, so it is installed

    assert isinstance(native, trio.lowlevel.TrioToken)
    run_sync_soon = native.run_sync_soon

    def wake_trio(fn: Callable[[], object]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            run_sync_soon(fn)

    return wake_trio
