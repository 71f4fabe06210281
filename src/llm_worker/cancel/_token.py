"""`CancelToken`: a thread-safe, level-triggered request to stop, with a cause.

Invariants:
* The state moves once, from "not cancelled" to "cancelled with a Cause", under ``_lock``; it never
  moves back. Every reader sees either no cause or the final one.
* ``_lock`` is re-entrant and guards only swaps and single dict operations: code that runs in the
  same thread in the middle of a token method (a signal handler, a finalizer or a weakref callback
  started by the garbage collector) may use the token again without deadlocking, and no dict is
  iterated while it could change. References that may be the last to another token are dropped
  after the lock is released.
* Callbacks run exactly once: at ``cancel()`` (in the cancelling thread, in registration order) or,
  if the token is already cancelled, at registration. They never run under ``_lock``, so a callback
  may cancel or register on any token, this one included. A raising callback is logged and the
  others still run.
* A child or linked token holds its sources strongly; a source holds only a weak registration for
  it, removed when the child is detached or garbage-collected and dropped when the source fires.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import weakref
from collections.abc import Callable

import anyio
import anyio.lowlevel

from ._cause import Cause, InterruptKind
from ._loop import current_waker
from ._timers import call_later

logger = logging.getLogger("llm_worker.cancel")

_ids = itertools.count(1)


class Interrupted(Exception):
    """Raised where cancellation has to surface as an exception; carries the `Cause`."""

    def __init__(self, cause: Cause) -> None:
        super().__init__(str(cause))
        self.cause = cause


class CancelToken:
    """A request to stop that any thread or task can make, and any code can observe.

    ``cancel()`` is thread-safe and safe from a signal handler: it never blocks on an event loop,
    it wakes waiters through their loop's thread-safe call. Once cancelled a token stays cancelled
    (level-triggered); use a fresh token for the next piece of work.
    """

    __slots__ = ("__weakref__", "_callbacks", "_cause", "_detach", "_lock", "name")

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"token-{next(_ids)}"
        self._lock = threading.RLock()
        self._cause: Cause | None = None
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._detach: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        state = f"cancelled: {self._cause}" if self._cause else "active"
        return f"<CancelToken {self.name} {state}>"

    # -- state ------------------------------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called on this token or one of its sources."""
        return self._cause is not None

    @property
    def cause(self) -> Cause | None:
        """Why the token was cancelled, or None while it is not."""
        return self._cause

    @property
    def reason(self) -> str | None:
        """The human-readable reason given to ``cancel()``, if any."""
        return self._cause.reason if self._cause else None

    def cancel(
        self,
        reason: str | None = None,
        *,
        kind: InterruptKind = "explicit",
        cause: Cause | None = None,
    ) -> bool:
        """Request cancellation; True if this call cancelled the token, False if it already was.

        ``cause`` overrides the interrupt built from ``reason`` and ``kind`` (e.g. a failure that
        cancels a group). Runs the registered callbacks in the calling thread before returning.
        """
        if cause is None:
            cause = Cause.interrupt(kind, reason, origin=_origin())
        with self._lock:
            if self._cause is not None:
                return False
            self._cause = cause
            # Swap, never iterate, under the lock: a re-entrant `_unregister` (from the garbage
            # collector) may change the live dict at any moment.
            callbacks, self._callbacks = self._callbacks, {}
            detach, self._detach = self._detach, []
        for unregister in detach:  # a fired token no longer needs its sources
            unregister()
        for key in list(callbacks):
            # Whoever pops a callback runs it: here, or `on_cancel` when this cancel interrupted
            # it half-way in the same thread. So each callback runs exactly once.
            callback = callbacks.pop(key, None)
            if callback is not None:
                _run_callback(callback)
        return True

    def raise_if_cancelled(self) -> None:
        """Raise `Interrupted` if the token is cancelled; for code that polls (sync tools)."""
        if self._cause is not None:
            raise Interrupted(self._cause)

    # -- observing --------------------------------------------------------------------------

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` once when the token is cancelled; return an unregister function.

        If the token is already cancelled, the callback runs now, in this thread. Otherwise it
        runs in whichever thread calls ``cancel()``: keep it short and thread-safe. Unregistering
        twice, or after the callback ran, is harmless.
        """
        key = next(_ids)
        with self._lock:
            callbacks = self._callbacks
            registered = self._cause is None
            if registered:
                callbacks[key] = callback
        if registered:
            if self._cause is None:
                return functools.partial(self._unregister, key)
            # A cancel ran in this thread half-way through (a signal handler): it may have run
            # the dict before the callback was in it. Run it here unless that cancel popped it.
            if callbacks.pop(key, None) is None:
                return _noop
        _run_callback(callback)
        return _noop

    def _unregister(self, key: int) -> None:
        with self._lock:
            callback = self._callbacks.pop(key, None)
        # Dropped here, outside the lock: it may hold the last reference to a child token, whose
        # release then unregisters from this token again.
        del callback

    async def wait(self) -> Cause:
        """Wait until the token is cancelled and return its cause.

        Cancellation: if the awaiting task is cancelled, the wait stops, its registration is
        removed and the framework's cancellation propagates; the token is not affected.
        """
        if self._cause is not None:
            await anyio.lowlevel.checkpoint()
            return self._cause
        event = anyio.Event()
        wake = current_waker()
        unregister = self.on_cancel(lambda: wake(event.set))
        try:
            await event.wait()
        finally:
            unregister()
        assert self._cause is not None
        return self._cause

    # -- deriving ---------------------------------------------------------------------------

    def child(self, name: str | None = None) -> CancelToken:
        """A token cancelled with this one (cause kind ``"parent"``), never the reverse.

        The child can be cancelled alone; dropping it, or calling ``detach()``, removes its
        registration on this token.
        """
        child = CancelToken(name)
        parent_name = self.name

        def from_parent(parent: CancelToken) -> Cause:
            return Cause.interrupt("parent", parent.reason, origin=f"parent {parent_name}")

        child._follow((self,), from_parent)
        return child

    @classmethod
    def linked(cls, *tokens: CancelToken, name: str | None = None) -> CancelToken:
        """A token cancelled as soon as any of ``tokens`` is, with that token's cause unchanged."""
        linked = cls(name)
        linked._follow(tokens, lambda source: source.cause or Cause.interrupt("parent"))
        return linked

    def detach(self) -> None:
        """Stop following the sources of a child or linked token (idempotent)."""
        with self._lock:
            detach, self._detach = self._detach, []
        for unregister in detach:
            unregister()

    def cancel_after(self, delay: float, reason: str | None = None) -> Callable[[], None]:
        """Cancel this token with cause kind ``"deadline"`` after ``delay`` seconds.

        Returns a function that disarms the deadline; disarm it when the work ends early so the
        timer does not outlive it. The deadline fires from a shared timer thread, so it reaches
        tools running in threads as well as tasks.
        """
        if self._cause is not None:
            return _noop
        text = reason or f"deadline of {delay:g}s passed"

        def fire() -> None:
            self.cancel(cause=Cause.interrupt("deadline", text, origin=f"{self.name} deadline"))

        disarm_timer = call_later(delay, fire)
        # A token cancelled otherwise no longer needs its timer (which holds it until it fires).
        unregister = self.on_cancel(disarm_timer)

        def disarm() -> None:
            disarm_timer()
            unregister()

        return disarm

    def _follow(
        self, sources: tuple[CancelToken, ...], make_cause: Callable[[CancelToken], Cause]
    ) -> None:
        unregisters: list[Callable[[], None]] = []

        def release(_: object = None) -> None:
            for unregister in unregisters:
                unregister()

        me = weakref.ref(self, release)
        for source in sources:

            def propagate(source: CancelToken = source) -> None:
                target = me()
                if target is not None:
                    target.cancel(cause=make_cause(source))

            unregisters.append(source.on_cancel(propagate))
        with self._lock:
            if self._cause is None:
                self._detach.append(release)
        if self._cause is not None:  # already cancelled, maybe by a source: follow no longer
            release()


def _run_callback(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("cancel callback %r raised; the other callbacks still run", callback)


def _noop() -> None:
    return None


def _origin() -> str:
    """Where a cancel came from: the thread, and the task when called from inside one."""
    origin = f"thread {threading.current_thread().name}"
    try:
        task = anyio.get_current_task()
    except Exception:  # not inside an event loop (a GUI thread, a signal handler, plain code)
        return origin
    return f"{origin}, task {task.name}"
