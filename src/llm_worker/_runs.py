"""Which run holds a worker: admission, the wait of a superseding run, and release.

Invariants:
* At most one run is *active* and at most one is *next* (the newest superseding run, waiting for
  the active one's clean-up). A ``next`` run always has an active one ahead of it. Both slots
  change only under ``_lock``, so runs requested from several threads at once are admitted one at
  a time: one proceeds, the others get `WorkerBusy` at once.
* Superseding only works within one thread (one event loop): a run cannot wait for a run that
  another loop drives. Asking is a clear `WorkerBusy`.
* A run is released exactly once, however it ends: returning, raising, cancelled before its first
  step (a task cancelled at creation), or never awaited at all (its coroutine or stream handle
  dropped). Releasing the active run hands the slot to ``next`` and wakes it.
* A waiting run whose token is cancelled (superseded in turn, a deadline, ``cancel()``) stops
  waiting at once and never becomes active: it started nothing and commits nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._observe import NO_OBSERVER, RunObserver
from .cancel import CancelToken, move_on_cancel
from .errors import RunError, WorkerBusy
from .events import Event
from .hooks import Decision, HookContext, Pause
from .items import Item, Usage, UserMessage, UserPart
from .output import RunOutput
from .result import RunResult, RunStatus
from .timeline import Timeline


def _ignore(event: Event) -> None:
    return None


@dataclass(eq=False)
class Run:
    """The state of one run, from ``run()`` being called until it is released."""

    id: str
    token: CancelToken
    input: str | None
    ctx: HookContext
    thread: int = field(default_factory=threading.get_ident)
    items: list[Item] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    turn: int = 0
    timeline: Timeline | None = None
    emit: Callable[[Event], None] = _ignore
    disarm_deadline: Callable[[], None] = lambda: None
    admitted: anyio.Event = field(default_factory=anyio.Event)  # became the active run
    done: anyio.Event = field(default_factory=anyio.Event)  # released
    started: bool = False  # its coroutine took a first step
    queued: bool = False  # it had to wait for a run it superseded
    released: bool = False
    cleaned_up: bool = False
    reason: str | None = None  # why it paused or stopped at the turn limit
    unsent_input: UserMessage | None = None  # the user message, until it is committed
    error: RunError | None = None  # how it ended, when it did not return a result
    observer: RunObserver = NO_OBSERVER  # tracing (`_observe`)
    output: RunOutput | None = None  # the structured-output policy, with an output_type
    attachments: tuple[UserPart, ...] = ()  # sent with the input, in its user message

    @property
    def observed(self) -> bool:
        """True when someone consumes this run's events (``stream()``): build them only then."""
        return self.emit is not _ignore

    def pauses(self, decision: Decision) -> bool:
        """True if a hook's ``decision`` pauses the run; its reason goes into the result."""
        if not isinstance(decision, Pause):
            return False
        self.reason = self.reason or decision.reason
        return True

    def result(self, status: RunStatus) -> RunResult:
        return RunResult(
            status=status,
            items=tuple(self.items),
            usage=self.usage,
            turns=self.turn,
            run_id=self.id,
            reason=self.reason if status in ("paused", "limit_reached") else None,
            output_value=self.output.value if self.output is not None else None,
        )


class RunSlots:
    """The active run and the next one; the only owner of which run holds the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active: Run | None = None
        self.next: Run | None = None

    @property
    def busy(self) -> bool:
        return self.active is not None

    def admit(self, run: Run, *, supersede: bool) -> list[Run]:
        """Admit ``run``; return the runs it supersedes, for the caller to cancel.

        Raises `WorkerBusy` if a run holds the worker and ``supersede`` is False, or if that run
        belongs to another thread.
        """
        with self._lock:
            active, waiting = self.active, self.next
            if active is not None:
                if not supersede:
                    raise WorkerBusy(
                        "the worker is already running; pass supersede=True to replace it"
                    )
                if active.thread != run.thread:
                    raise WorkerBusy(
                        "the worker is running in another thread; a worker serves one event loop "
                        "at a time, so it cannot be superseded from here"
                    )
                run.queued = True
                self.next = run
            else:
                self.active = run
                run.admitted.set()
        return [r for r in (active, waiting) if r is not None]

    async def wait_for_turn(self, run: Run) -> bool:
        """Wait until ``run`` is active; False if its token was cancelled first (it never starts).

        A run admitted straight away is active already (a cancel before its first step then takes
        effect inside it, like any other). A run that had to wait and whose token is cancelled by
        the time its turn comes was stopped before it began: it ends at once, starting nothing.

        Cancellation: the run's token ends the wait (False); an outer cancellation propagates, and
        the caller releases the run.
        """
        if not run.queued:
            return True
        if not run.admitted.is_set():
            with move_on_cancel(run.token):
                await run.admitted.wait()
        return run.admitted.is_set() and not run.token.cancelled

    def release(self, run: Run) -> None:
        """Free the slots ``run`` holds and wake the next run; idempotent."""
        with self._lock:
            if run.released:
                return
            run.released = True
            promoted = None
            if self.next is run:
                self.next = None
            if self.active is run:
                self.active, self.next = self.next, None
                promoted = self.active
        run.disarm_deadline()
        run.token.detach()
        run.done.set()
        if promoted is not None:
            promoted.admitted.set()


class RunCoroutine(Coroutine[Any, Any, RunResult]):
    """The awaitable ``run()`` returns: the run's coroutine, plus release if it never starts.

    A plain coroutine cancelled before its first step (``create_task(...)`` then ``cancel()``) or
    dropped without being awaited never executes a line of its body, so no ``finally`` in it can
    release the worker. This wrapper does it instead, from ``throw``, ``close`` or finalisation.
    """

    __slots__ = ("_coro", "_on_unstarted", "_started")

    def __init__(
        self, coro: Coroutine[Any, Any, RunResult], on_unstarted: Callable[[], None]
    ) -> None:
        self._coro = coro
        self._on_unstarted = on_unstarted
        self._started = False

    def send(self, value: Any) -> Any:
        self._started = True
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if not self._started:
            self._started = True
            self._on_unstarted()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - the deprecated signature

    def close(self) -> None:
        if not self._started:
            self._started = True
            self._on_unstarted()
        self._coro.close()

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self

    def __iter__(self) -> RunCoroutine:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def __del__(self) -> None:
        if not self._started:
            self._on_unstarted()
