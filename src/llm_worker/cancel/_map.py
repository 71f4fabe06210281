"""Run many callables concurrently, and stop them gracefully: token first, grace, then hard.

Invariants:
* Every callable gets its own child token of the map's group token. A call is cancelled hard
  only by the map itself, and only a grace period after its token was cancelled: for all calls
  when the group token is (a stop, an outer cancellation, a failure with ``cancel_on_failure``),
  for one call when its own token is (its deadline). Outer cancellation reaches the calls
  through their tokens, never directly.
* An outcome is written once, by the task that ran the call, before that task ends; a result that
  arrived is never thrown away, even when the map itself is interrupted.
* When `ConcurrentMap.run` returns or raises, every task it started has ended. A sync call runs in
  a worker thread; if it ignores its token past the grace period it is *abandoned* (left running,
  reported in ``abandoned`` and in the log), never awaited forever.
* An outer cancellation of the awaiting task is re-raised unchanged after the calls were stopped.
* A call never takes the map down with it: an exception, a framework cancellation the call raised
  on its own (a future cancelled elsewhere), even a `BaseException` such as ``SystemExit``, becomes
  its outcome. Only the last kind is raised again, as itself, once every call has ended.
* A call still running a grace period after it was cancelled hard swallows cancellation: it is
  reported (``on_overrun``, ``overran``) but still awaited, since a task cannot be abandoned.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._error_base import LLMWorkerError
from ._cause import Cause
from ._duration import checked_duration
from ._loop import current_waker
from ._scope import move_on_cancel
from ._timers import call_later
from ._token import CancelToken, Interrupted

logger = logging.getLogger("llm_worker.cancel")

T = TypeVar("T")

OutcomeStatus = Literal["pending", "ok", "interrupted", "error", "cancelled", "abandoned"]
_FINAL = frozenset({"ok", "interrupted", "error", "cancelled", "abandoned"})
Call = Callable[[CancelToken], "Awaitable[T] | T"]


@dataclass(eq=False)
class Outcome(Generic[T]):
    """What became of one call.

    ``status``: ``ok`` (returned before any cancellation), ``interrupted`` (returned after its
    token was cancelled: ``value`` is partial output), ``error`` (raised ``error``), ``cancelled``
    (stopped without a value, or never started), ``abandoned`` (a thread that ignored its token).
    """

    index: int
    status: OutcomeStatus = "pending"
    value: T | None = None
    error: BaseException | None = None
    started: bool = False
    thread: str | None = None
    overran: bool = False
    token: CancelToken | None = field(default=None, repr=False)


class CancelledItself(LLMWorkerError, RuntimeError):
    """A call raised the framework's cancellation although nothing cancelled it.

    On asyncio this is how a call reports awaiting a future that was cancelled elsewhere; it is an
    error of that call, not a cancellation of the map or of the task awaiting it.
    """


class ConcurrentMap(Generic[T]):
    """Run ``calls`` (each ``call(token)``, async or sync) with at most ``limit`` at a time.

    A coroutine function (or an object with an ``async def __call__``) runs in the event loop;
    any other callable runs in a worker thread, and if it returns an awaitable (``lambda token:
    fetch(url, token)``) that awaitable is then awaited in the loop.

    When the map's token is cancelled — or the awaiting task is cancelled from outside, or (with
    ``cancel_on_failure``) a call raises — every call's token is cancelled, calls get ``grace``
    seconds to return partial output, and whatever is still running is then cancelled hard.
    ``grace`` is checked here (`checked_duration`): None or ``inf`` waits for the calls however
    long they take; a negative, NaN or non-number raises. Calls whose index is in ``no_grace``
    cannot see their token (nothing to return early with), so they get none: they are cancelled
    hard — a thread abandoned — as soon as they are asked to stop.
    ``outcomes`` and ``cause`` are filled in as calls finish, so they are valid even if ``run()``
    is interrupted by an outer cancellation. ``on_start(outcome)`` and ``on_outcome(outcome)`` are
    called synchronously, in the loop's thread, when a call really starts (it got its slot) and as
    soon as its outcome is final (a raising ``on_outcome`` is logged); ``on_overrun(outcome)``
    when a call is still running a grace period after it was cancelled hard.
    """

    def __init__(
        self,
        calls: Sequence[Callable[[CancelToken], Any]],
        *,
        token: CancelToken | None = None,
        limit: int | None = None,
        grace: float | None = 1.0,
        no_grace: Collection[int] = (),
        cancel_on_failure: bool = False,
        on_outcome: Callable[[Outcome[T]], None] | None = None,
        on_start: Callable[[Outcome[T]], None] | None = None,
        on_overrun: Callable[[Outcome[T]], None] | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        self._calls = list(calls)
        self.outcomes: list[Outcome[T]] = [Outcome(i) for i in range(len(self._calls))]
        self.group_token = CancelToken.linked(token, name="map") if token else CancelToken("map")
        self._source = token
        self.grace = checked_duration(grace, "the grace period of a ConcurrentMap")
        self._no_grace = frozenset(no_grace)
        self.cancel_on_failure = cancel_on_failure
        self._on_outcome = on_outcome
        self._on_start = on_start
        self._on_overrun = on_overrun
        self._fatal: BaseException | None = None  # a BaseException a call raised: re-raised
        self._limit = limit
        self._limiter: anyio.CapacityLimiter | None = None
        self._unfinished = len(self._calls)
        self._hard_scopes: dict[int, anyio.CancelScope] = {}
        self._threads_done: set[int] = set()
        self._enforcer: anyio.CancelScope | None = None
        self._grace_scope: anyio.CancelScope | None = None

    @property
    def cause(self) -> Cause | None:
        """Why the map did not simply finish: failures and/or the interruption; None if it did."""
        failures = [
            Cause.failure(o.error, origin=f"call {o.index}")
            for o in self.outcomes
            if o.status == "error" and o.error is not None
        ]
        group = self.group_token.cause
        if group is not None and group.tag == "failure":
            # A call failed and its siblings were stopped because of it: say which, beside it.
            stopped = [
                Cause.interrupt("parent", group.reason, origin=f"call {o.index}")
                for o in self.outcomes
                if o.status in ("interrupted", "cancelled", "abandoned")
            ]
            return Cause.parallel(*failures, *stopped)
        if not failures and group is None:
            return None
        return Cause.parallel(*failures, group)

    @property
    def abandoned(self) -> list[Outcome[T]]:
        """Calls whose thread ignored cancellation and was left running."""
        return [o for o in self.outcomes if o.status == "abandoned"]

    async def run(self) -> list[Outcome[T]]:
        """Run every call and return their outcomes, in call order.

        Cancellation: an outer cancellation cancels the calls' tokens, waits (shielded) up to the
        grace period, cancels hard what is left, then re-raises; ``outcomes`` keeps every result.
        The map's own token cancellation does not raise: see ``cause``.
        """
        if self._enforcer is not None:
            raise RuntimeError("a ConcurrentMap runs once")
        self._enforcer = anyio.CancelScope()
        self._limiter = anyio.CapacityLimiter(self._limit) if self._limit else None
        try:
            if self._calls:
                async with anyio.create_task_group() as group:
                    for outcome, call in zip(self.outcomes, self._calls, strict=True):
                        group.start_soon(self._run_one, outcome, call)
                    group.start_soon(self._enforce_grace)
        finally:
            self.group_token.detach()
        if self._fatal is not None:
            raise self._fatal
        # An outer cancellation that arrived while the calls were stopping (during the grace) is
        # level-triggered on trio: the task group does not raise it, so surface it here.
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.outcomes

    async def _run_one(self, outcome: Outcome[T], call: Callable[[CancelToken], Any]) -> None:
        token = outcome.token = self.group_token.child(f"call-{outcome.index}")
        disarm = [_noop]
        wake = current_waker()

        def on_own_cancel() -> None:
            # The call's own token was cancelled (e.g. a tool's timeout) while the group goes on:
            # it gets the same grace as in a group stop, then it alone is cancelled hard (a
            # thread: abandoned). The only hard stop a timed-out tool gets: Tool.bind arms none.
            index = outcome.index
            if self.group_token.cancelled:
                return
            if index in self._no_grace:
                wake(lambda: self._hard_cancel(index, "it cannot see its token: no grace"))
            elif self.grace is not None:
                disarm[0] = call_later(self.grace, lambda: wake(lambda: self._hard_cancel(index)))

        unregister = token.on_cancel(on_own_cancel)
        try:
            # Outside the shield: an outer cancellation that arrived before the call started
            # (while it waited to be scheduled, or for a slot) means it never starts.
            await anyio.lowlevel.checkpoint_if_cancelled()
            acquired = await self._acquire_slot(token)
            with anyio.CancelScope(shield=True), anyio.CancelScope() as hard:
                self._hard_scopes[outcome.index] = hard
                if acquired:
                    try:
                        outcome.started = True
                        if self._on_start is not None:
                            self._on_start(outcome)
                        try:
                            value = await self._invoke(call, outcome, token)
                        except anyio.get_cancelled_exc_class() as exc:
                            if hard.cancel_called:
                                raise
                            raise CancelledItself(
                                "the call raised a cancellation although nothing cancelled it"
                                " (it awaited something that was cancelled elsewhere)"
                            ) from exc
                    finally:
                        if self._limiter is not None:
                            self._limiter.release()
                    outcome.value = value
                    outcome.status = "interrupted" if token.cancelled else "ok"
            if outcome.status == "pending":  # hard-cancelled, or never got a slot
                thread_alive = (
                    outcome.thread is not None and outcome.index not in self._threads_done
                )
                outcome.status = "abandoned" if thread_alive else "cancelled"
                if thread_alive:
                    grace = 0.0 if outcome.index in self._no_grace else self.grace or 0.0
                    logger.warning(
                        "abandoned thread %s: call %d still running after its %gs grace",
                        outcome.thread,
                        outcome.index,
                        grace,
                    )
        except Interrupted:
            outcome.status = "cancelled"
        except Exception as exc:
            outcome.status, outcome.error = "error", exc
            if self.cancel_on_failure:
                cause = Cause.failure(exc, origin=f"call {outcome.index}")
                self.group_token.cancel(cause=cause)
        except anyio.get_cancelled_exc_class():
            if not outcome.started:
                outcome.status = "cancelled"
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt (trio), a custom one
            outcome.status, outcome.error = "error", exc
            if self._fatal is None:
                self._fatal = exc
            self.group_token.cancel(cause=Cause.failure(exc, origin=f"call {outcome.index}"))
        finally:
            unregister()
            disarm[0]()
            token.detach()
            self._hard_scopes.pop(outcome.index, None)
            if self._on_outcome is not None and outcome.status in _FINAL:
                try:
                    self._on_outcome(outcome)
                except Exception:
                    logger.exception("on_outcome callback raised for call %d", outcome.index)
            self._unfinished -= 1
            if self._unfinished == 0:
                assert self._enforcer is not None
                self._enforcer.cancel()
                if self._grace_scope is not None:
                    self._grace_scope.cancel()

    def _hard_cancel(self, index: int, reason: str = "grace period over") -> None:
        scope = self._hard_scopes.get(index)
        if scope is not None:
            scope.cancel(reason)

    async def _acquire_slot(self, token: CancelToken) -> bool:
        """Wait for a concurrency slot; give up (False) if the call's token is cancelled first."""
        if token.cancelled:
            return False
        if self._limiter is None:
            return True
        acquired = False
        with move_on_cancel(token):
            await self._limiter.acquire()
            acquired = True
        if not acquired:
            return False
        if token.cancelled:
            self._limiter.release()
            return False
        try:
            # The limiter hands the slot over in a shielded checkpoint: an outer cancellation
            # that came while it yielded is still pending here, and the call must not start.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._limiter.release()
            raise
        return True

    async def _invoke(
        self, call: Callable[[CancelToken], Any], outcome: Outcome[T], token: CancelToken
    ) -> T:
        if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
            getattr(call, "__call__", None)  # noqa: B004 -- async callable objects count too
        ):
            return cast("T", await call(token))

        # A thread that only gets to run after the map gave up on it (cancelled hard before the
        # worker thread picked it up) must not start the call: nobody would wait for it.
        gate = threading.Lock()
        given_up = False

        def in_thread() -> tuple[object]:
            with gate:
                if given_up:
                    return (None,)
                outcome.thread = f"{threading.current_thread().name} #{threading.get_ident()}"
            try:
                return (call(token),)  # boxed: trio refuses a thread function returning a coroutine
            finally:
                self._threads_done.add(outcome.index)

        try:
            (value,) = await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        except BaseException:
            with gate:
                given_up = True  # a thread that has not started yet never will
            raise
        if inspect.isawaitable(value):  # e.g. ``lambda token: fetch(url, token)``
            value = await value
        return cast("T", value)

    async def _enforce_grace(self) -> None:
        """Wait for the group token; then give the calls their grace, then cancel them hard."""
        assert self._enforcer is not None
        with self._enforcer:
            try:
                await self.group_token.wait()
            except anyio.get_cancelled_exc_class():
                if self._unfinished == 0:
                    raise
                # The awaiting task was cancelled from outside: stop the calls gracefully first.
                # A token cancelled in another thread can reach the task (through a scope bound
                # to it) before its callback reaches the group token: then it is the cause.
                source = self._source
                cause = source.cause if source is not None else None
                self.group_token.cancel(
                    cause=cause or Cause.interrupt("external", "the awaiting task was cancelled")
                )
                await self._grace_then_hard_cancel()
                raise
            await self._grace_then_hard_cancel()

    async def _grace_then_hard_cancel(self) -> None:
        for index in self._no_grace & self._hard_scopes.keys():
            self._hard_cancel(index, "it cannot see its token: no grace")
        with anyio.CancelScope(shield=True) as grace_scope:
            self._grace_scope = grace_scope
            if self._unfinished:
                if self.grace is None:
                    await anyio.sleep_forever()  # cut by the last call to finish
                else:
                    await anyio.sleep(self.grace)
        for scope in list(self._hard_scopes.values()):
            scope.cancel("grace period over")
        if not self._unfinished or self.grace is None:
            return
        # Calls that swallow even the hard cancellation: they cannot be abandoned (a task is not
        # a thread), so the map still waits for them, but says so after one more grace period.
        with anyio.CancelScope(shield=True) as watch:
            self._grace_scope = watch
            await anyio.sleep(self.grace)
        for index in list(self._hard_scopes):
            outcome = self.outcomes[index]
            if outcome.thread is not None:
                continue  # a thread: abandoned, not awaited
            outcome.overran = True
            logger.warning("call %d ignores cancellation; still waiting for it", index)
            if self._on_overrun is not None:
                try:
                    self._on_overrun(outcome)
                except Exception:
                    logger.exception("on_overrun callback raised for call %d", index)


async def concurrent_map(
    calls: Sequence[Callable[[CancelToken], Any]],
    *,
    token: CancelToken | None = None,
    limit: int | None = None,
    grace: float | None = 1.0,
    cancel_on_failure: bool = False,
) -> ConcurrentMap[Any]:
    """Run ``calls`` with `ConcurrentMap` and return the finished map (``outcomes``, ``cause``).

    Cancellation: as `ConcurrentMap.run`; if the awaiting task is cancelled, the completed
    outcomes are lost to the caller, so use `ConcurrentMap` directly when they must be kept.
    """
    runner: ConcurrentMap[Any] = ConcurrentMap(
        calls, token=token, limit=limit, grace=grace, cancel_on_failure=cancel_on_failure
    )
    await runner.run()
    return runner


def _noop() -> None:
    return None
