"""`CancelToken`: a thread-safe, level-triggered request to stop, with a cause.

Invariants:
* The state moves once, from "not cancelled" to "cancelled with a Cause", under ``_lock``; it never
  moves back. Every reader sees either no cause or the final one.
* ``_lock`` is re-entrant and guards only swaps and single dict operations: code that runs in the
  same thread in the middle of a token method (a signal handler, a finalizer or a weakref callback
  started by the garbage collector) may use the token again without deadlocking, and no dict is
  iterated while it could change. References that may be the last to another token are dropped
  after the lock is released.
* ``cancel()`` works in two phases, neither of which recurses per token: first it cancels the
  whole tree of tokens that follow this one (children, linked tokens), breadth first, with an
  explicit list; then it runs the user callbacks of every token it cancelled. So the tree's state
  is complete before any callback runs, however deep the tree and however little stack is left,
  and nothing a callback raises can leave the tree half-cancelled.
* Callbacks run exactly once: at ``cancel()`` (in the cancelling thread; per token in registration
  order; a token's before those of the tokens that follow it) or, if the token is already
  cancelled, at registration. They never run under ``_lock``, so a callback may cancel or
  register on any token, this one included. A ``cancel()`` made while this thread is already
  running callbacks (from a callback, a signal handler, a finalizer) cancels its tree at once and
  queues its callbacks to the outermost ``cancel()`` of the thread, which runs them before it
  returns: callbacks that cancel tokens never nest. A raising callback is logged and the others
  still run.
* A child or linked token holds its sources strongly; a source holds only a weak registration for
  it (a `_Link`), removed when the child is detached or garbage-collected and dropped when the
  source fires.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TypeAlias

import anyio
import anyio.lowlevel

from .._error_base import LLMWorkerError
from ._cause import Cause, InterruptKind
from ._duration import checked_duration
from ._loop import current_waker
from ._timers import call_later

logger = logging.getLogger("llm_worker.cancel")

_ids = itertools.count(1)


class Interrupted(LLMWorkerError):
    """Raised where cancellation has to surface as an exception; carries the `Cause`."""

    def __init__(self, cause: Cause) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Link:
    """A following token's registration on one source: weak, so it never keeps the follower."""

    __slots__ = ("make_cause", "target")

    def __init__(
        self, target: weakref.ref[CancelToken], make_cause: Callable[[CancelToken], Cause]
    ) -> None:
        self.target = target
        self.make_cause = make_cause


_Registration: TypeAlias = "Callable[[], object] | _Link"
_Batch: TypeAlias = "dict[int, _Registration]"  # the registrations a token had when it fired


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
        self._callbacks: _Batch = {}
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
        cancels a group). Every token that follows this one (children, links, at any depth) is
        cancelled before this returns. The callbacks run in the calling thread, before this
        returns; when ``cancel()`` is called from inside a callback, they run right after that
        callback, in the outermost ``cancel()`` of the thread.
        """
        if cause is None:
            cause = Cause.interrupt(kind, reason, origin=_origin())
        batch = self._fire(cause)
        if batch is None:
            return False
        _run_batches(_cancel_followers(self, batch))
        return True

    def _fire(self, cause: Cause) -> _Batch | None:
        """Move to "cancelled"; return the registrations to honour, or None if already cancelled."""
        with self._lock:
            if self._cause is not None:
                return None
            self._cause = cause
            # Swap, never iterate, under the lock: a re-entrant `_unregister` (from the garbage
            # collector) may change the live dict at any moment.
            batch, self._callbacks = self._callbacks, {}
            detach, self._detach = self._detach, []
        for unregister in detach:  # a fired token no longer needs its sources
            unregister()
        return batch

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
        unregister, run_now = self._register(callback)
        if run_now:
            error = _run_callback(callback)
            if error is not None:
                raise error
        return unregister

    def _register(self, entry: _Registration) -> tuple[Callable[[], None], bool]:
        """Add ``entry``; return its unregister function and whether the caller must honour it
        now (the token is already cancelled, and no cancel has taken ``entry`` on)."""
        key = next(_ids)
        with self._lock:
            callbacks = self._callbacks
            registered = self._cause is None
            if registered:
                callbacks[key] = entry
        if registered:
            if self._cause is None:
                return functools.partial(self._unregister, key), False
            # A cancel ran in this thread half-way through (a signal handler): it may have taken
            # the dict before the entry was in it. Honour it here unless that cancel popped it.
            if callbacks.pop(key, None) is None:
                return _noop, False
        return _noop, True

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

    def cancel_after(self, delay: float | None, reason: str | None = None) -> Callable[[], None]:
        """Cancel this token with cause kind ``"deadline"`` after ``delay`` seconds.

        ``delay`` is checked at once (`checked_duration`): None or ``inf`` sets no deadline, 0
        fires at once (from the timer thread), a negative, NaN or non-number raises here.
        Returns a function that disarms the deadline; disarm it when the work ends early so the
        timer does not outlive it. The deadline fires from a shared timer thread, so it reaches
        tools running in threads as well as tasks.
        """
        seconds = checked_duration(delay, "a token deadline")
        if seconds is None or self._cause is not None:
            return _noop
        text = reason or f"deadline of {seconds:g}s passed"

        def fire() -> None:
            self.cancel(cause=Cause.interrupt("deadline", text, origin=f"{self.name} deadline"))

        disarm_timer = call_later(seconds, fire)
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
            link = _Link(me, make_cause)
            unregister, source_already_cancelled = source._register(link)
            unregisters.append(unregister)
            if source_already_cancelled:
                self.cancel(cause=_follower_cause(link, source))
        with self._lock:
            if self._cause is None:
                self._detach.append(release)
        if self._cause is not None:  # already cancelled, maybe by a source: follow no longer
            release()


def _cancel_followers(root: CancelToken, batch: _Batch) -> list[tuple[CancelToken, _Batch]]:
    """Cancel every token that follows ``root`` (which just fired with ``batch``), breadth first.

    A loop over an explicit list, never a call per level: a chain of any depth is cancelled in
    the same few frames. Returns each fired token with its remaining (callback) registrations,
    in the order the callbacks must run.
    """
    fired = [(root, batch)]
    index = 0
    while index < len(fired):
        source, registrations = fired[index]
        index += 1
        for key in list(registrations):
            entry = registrations.get(key)
            if not isinstance(entry, _Link):
                continue
            # Whoever pops a link honours it: here, or `_register` when this cancel interrupted
            # it half-way in the same thread. So each link is followed exactly once.
            if registrations.pop(key, None) is None:
                continue
            target = entry.target()
            if target is None:
                continue
            target_batch = target._fire(_follower_cause(entry, source))
            if target_batch is not None:
                fired.append((target, target_batch))
    return fired


def _follower_cause(link: _Link, source: CancelToken) -> Cause:
    try:
        return link.make_cause(source)
    except Exception:  # e.g. too little stack left: the source's own cause still says why
        assert source._cause is not None
        return source._cause


class _ThreadQueue(threading.local):
    """Batches of callbacks waiting to run in this thread, while its outermost cancel runs them."""

    batches: collections.deque[tuple[CancelToken, _Batch]] | None = None


_queued = _ThreadQueue()


def _run_batches(fired: list[tuple[CancelToken, _Batch]]) -> None:
    """Run the callbacks of ``fired`` tokens, or queue them to this thread's running drain.

    Raises the first non-`Exception` a callback raised (KeyboardInterrupt, SystemExit), after
    every other callback ran; an `Exception` is logged.
    """
    queue = _queued.batches
    if queue is not None:  # an outer cancel() in this thread is running callbacks: it runs these
        queue.extend(fired)
        return
    queue = collections.deque(fired)
    _queued.batches = queue
    escaping: BaseException | None = None
    try:
        while True:
            while queue:
                source, registrations = queue.popleft()
                for key in list(registrations):
                    # Whoever pops a callback runs it: here, or `_register` when this cancel
                    # interrupted it half-way in the same thread. So it runs exactly once.
                    entry = registrations.pop(key, None)
                    if isinstance(entry, _Link):  # slipped in after the tree was cancelled
                        target = entry.target()
                        if target is not None:
                            target.cancel(cause=_follower_cause(entry, source))
                    elif entry is not None:
                        error = _run_callback(entry)
                        if escaping is None:
                            escaping = error
            _queued.batches = None
            if not queue:
                break
            _queued.batches = queue  # a signal handler queued more just before: run it too
    finally:
        if _queued.batches is queue:
            _queued.batches = None
    if escaping is not None:
        raise escaping


def _run_callback(callback: Callable[[], object]) -> BaseException | None:
    """Run one callback: log an `Exception`; return any other exception for the caller to raise."""
    try:
        callback()
    except Exception as exc:
        _log_callback_error(callback, exc)
    except BaseException as exc:
        return exc
    return None


def _log_callback_error(callback: Callable[[], object], error: Exception) -> None:
    try:
        logger.error(
            "cancel callback %r raised; the other callbacks still run", callback, exc_info=error
        )
    except Exception:  # e.g. a RecursionError: too little stack left to format a traceback
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"llm_worker.cancel: a cancel callback raised {type(error).__name__}; "
                "the other callbacks still run\n"
            )


def _noop() -> None:
    return None


def _origin() -> str:
    """Where a cancel came from: the thread, and the task when called from inside one.

    Asks the running library directly (anyio's task info costs ~50 µs a call, and cancelling
    a thousand runs calls this a thousand times).
    """
    origin = f"thread {threading.current_thread().name}"
    task = _task_name()
    return origin if task is None else f"{origin}, task {task}"


def _task_name() -> str | None:
    """The current task's name, or None outside a task (a GUI thread, a signal handler)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop runs in this thread
        task = None
    if task is not None:
        return task.get_name()
    trio = sys.modules.get("trio")  # only ever running if it was imported
    if trio is None:
        return None
    try:
        name: str = trio.lowlevel.current_task().name
    except RuntimeError:  # not inside trio
        return None
    return name
