"""`Session`: an open session's history, the queue of what is not saved yet, and its listeners.

Invariants:
* The history in memory is the truth while the session is open (its lock makes this the only
  writer): it is what was loaded plus every item committed since, saved or not.
* A write that fails never raises out of the worker's commit (that would cut a run half-way)
  and never poisons later writes: the items stay queued (``unsaved``, ``error``) and go out, in
  order, with the next commit, `flush` or `close` — the points where the caller learns of it,
  as a typed `PersistenceFailed`. Run markers that could not be written are queued behind the
  items and retried the same way (their failure is only logged).
* One transaction per commit of the worker: a run's start row rides in the transaction of its
  first commit (or of its end, if it committed nothing), never in one of its own. A process that
  dies in a run that committed nothing leaves no trace of it — and nothing of it to recover.
* The session only listens to a worker (`attach`): it never builds one, never awaits and never
  calls into a run. Its listeners are synchronous, so no cancellation lands in a write.
* The session reaches the database only through its `SessionStorage` (its own rows), never
  through the store's private members.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from ..events import RunBoundary, RunCancelled, RunFinished, RunStarted
from ..history import CRASH_RESULT, MOVED_ON, recovery_note
from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, unanswered_calls
from ._errors import PersistenceFailed, StoreError
from ._lock import SessionLock
from ._records import RunRecord, now
from ._recovery import Recovery

if TYPE_CHECKING:
    from ._database import SQLiteStore

__all__ = ["Attachable", "Session", "SessionStorage"]

logger = logging.getLogger("llm_worker.store")


class SessionStorage(Protocol):
    """What a `Session` may ask of its store: write its own rows, and say it is closed.

    Each write is one transaction and raises `StoreError` when it fails (nothing written).
    """

    def append(
        self,
        history: Sequence[Item],
        saved: int,
        run_id: str | None,
        starts: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write the items of ``history`` the database lacks (``saved`` were saved before), and
        the start rows ``starts`` (run id, started at) of runs that began since the last write."""

    def end_run(
        self, run_id: str, started_at: str, outcome: str, kind: str | None, reason: str | None
    ) -> None:
        """Record how a run ended (and that it started, if that write had failed)."""

    def release(self, session: Session) -> None:
        """``session`` is closed."""


class Attachable(Protocol):
    """What a session needs of a worker: its history, its listeners, the interruption note.

    `llm_worker.Worker` is one; the store never imports it.
    """

    @property
    def history(self) -> list[Item]: ...

    @property
    def running(self) -> bool: ...

    def on_commit(self, listener: Callable[[Sequence[Item]], None]) -> Callable[[], None]: ...

    def on_run(self, listener: Callable[[RunBoundary], None]) -> Callable[[], None]: ...

    def note_interruption(self, note: Note) -> None: ...


class Session:
    """An open session: its history, and the lock that makes this the only writer.

    Attach a worker built on the session's history::

        worker = Worker(model, history=session.history, system=session.system, tools=...)
        session.attach(worker)

    From then on every item the worker commits is persisted before the worker goes on. Close
    the session (or use it as a context manager) to release it for other processes.

    If a write fails (disk full, a locked, read-only, removed or replaced file), the items stay
    in memory (``unsaved``), ``error`` says why, and the next commit, `flush` or `close` writes
    them (with whatever came since, in order): nothing is lost and one bad moment does not
    poison later commits. The worker is never interrupted by it — its commit listener never
    raises (a run cut half-way by the store would lose more than it saves); `flush` and `close`
    raise `PersistenceFailed` if items are still unsaved. Run markers that could not be written
    are retried the same way (their failure is only logged).
    """

    def __init__(
        self,
        store: SQLiteStore,
        rows: SessionStorage,
        name: str,
        *,
        model: str | None,
        system: str | None,
        created_at: datetime,
        history: list[Item],
        last_run: RunRecord | None,
        recovery: Recovery | None,
        lock: SessionLock,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.model = model
        self.system = system
        self._metadata = dict(metadata or {})
        self.created_at = created_at
        self.last_run = last_run
        self.recovery = recovery
        self.error: StoreError | None = None
        self._rows = rows
        self._history = history
        self._saved = len(history)
        self._unsaved: list[Item] = []
        self._lock = lock
        self._worker: Attachable | None = None
        self._detach: Callable[[], None] | None = None
        self._open_runs: list[tuple[str, str]] = []  # (run_id, started_at), oldest first
        self._starts_owed: list[tuple[str, str]] = []  # open runs whose start row is unwritten
        self._markers: list[Callable[[], None]] = []  # run-marker writes that failed

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._history)} items"
        return f"<Session {self.name!r} {state}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not self._lock.held

    @property
    def metadata(self) -> dict[str, str]:
        """A copy of the session's string settings, as stored when it was opened."""
        return dict(self._metadata)

    @property
    def history(self) -> list[Item]:
        """A copy of the history: as loaded, plus everything the attached worker committed."""
        return list(self._history)

    @property
    def unsaved(self) -> int:
        """Items committed by the worker but not yet in the database (0 unless writes failed)."""
        return len(self._unsaved)

    @property
    def pending_calls(self) -> list[ToolCall]:
        """Tool calls without a result: ``resume()`` runs them."""
        return unanswered_calls(self._history)

    @property
    def resumable(self) -> bool:
        """True if ``resume()`` has something to continue: pending calls, or no final answer."""
        if not self._history:
            return False
        last = self._history[-1]
        if self.pending_calls:
            return True
        return not (isinstance(last, AssistantMessage) and not last.interrupted)

    # -- listening to a worker ----------------------------------------------------------------

    def attach(self, worker: Attachable) -> Callable[[], None]:
        """Persist every item ``worker`` commits from now on; return a function that detaches.

        The worker's history must be this session's (``Worker(history=session.history)``); one
        worker per session at a time. If the last run left calls without a result, the worker
        is told (`note_interruption`) to add the interruption note after their results.
        """
        self._check_open()
        if self._worker is not None:
            raise RuntimeError(f"session {self.name!r} already has a worker attached")
        if worker.history != self._history:
            raise ValueError(
                "the worker's history is not this session's; build it with "
                "Worker(history=session.history)"
            )
        unlisten = worker.on_commit(self._on_commit)
        unwatch = _watch_runs(worker, self._run_started, self._run_ended)
        self._worker = worker
        recovery = self.recovery
        if recovery is not None and recovery.note is None and unanswered_calls(self._history):
            # A note may not come between calls and their results: the worker adds it after
            # them, when ``resume()`` has run them again (or before the next input).
            worker.note_interruption(
                recovery_note(recovery.outcome, recovery.kind, recovery.reason)
            )

        def detach() -> None:
            if self._worker is worker:
                unlisten()
                unwatch()
                self._worker = None
                self._detach = None

        self._detach = detach
        return detach

    def settle_pending(self) -> list[Item]:
        """Answer the calls left without a result, before sending new input; return what it added.

        After a crash the results say the process stopped (and a `Note` follows); after a pause
        they say the user moved on. Call it before a worker is attached.
        """
        self._check_open()
        if self._worker is not None:
            raise RuntimeError("settle pending calls before attaching a worker")
        pending = unanswered_calls(self._history)
        if not pending:
            return []
        crashed = self.recovery is not None and self.recovery.outcome == "crashed"
        text = CRASH_RESULT if crashed else MOVED_ON
        added: list[Item] = [
            ToolResult(call_id=call.call_id, name=call.name, content=text, status="cancelled")
            for call in pending
        ]
        if crashed:
            added.append(recovery_note("crashed", None, None))
        self._on_commit(added)
        return added

    def extend(self, items: Sequence[Item]) -> None:
        """Append ``items`` (e.g. a conversation imported from elsewhere) in one transaction.

        Only while no worker is attached: an attached worker's history would no longer match.
        """
        self._check_open()
        if self._worker is not None:
            raise RuntimeError("extend a session's history before attaching a worker")
        self._on_commit(list(items))

    # -- persistence --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write items a failed write left in memory.

        Raises `PersistenceFailed` if they cannot be written yet (they stay queued).
        """
        self._save()
        if self._unsaved:
            raise self._failure("are not saved yet")

    def close(self) -> None:
        """Save what is unsaved, detach the worker and release the session for others.

        Idempotent. Raises `PersistenceFailed` (after releasing) if some items could not be
        saved: they are lost once the process ends, and the error says how many and why.
        """
        if self.closed:
            return
        try:
            if self._worker is not None and self._worker.running:
                logger.warning("session %r closed while its worker is still running", self.name)
            self._save()
        finally:
            if self._detach is not None:
                self._detach()
            self._lock.release()
            self._rows.release(self)
        if self._markers:
            logger.warning(
                "session %r: %d run marker(s) could not be written: %s",
                self.name,
                len(self._markers),
                self.error,
            )
        if self._unsaved:
            raise self._failure("could not be saved")

    def _failure(self, what: str) -> PersistenceFailed:
        error = PersistenceFailed(
            f"{len(self._unsaved)} item(s) of session {self.name!r} {what}: {self.error}",
            session=self.name,
            unsaved=len(self._unsaved),
        )
        error.__cause__ = self.error
        return error

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"session {self.name!r} is closed")

    def _on_commit(self, items: Sequence[Item]) -> None:
        """The worker's commit listener: persist ``items`` now, synchronously, or keep them."""
        self._history.extend(items)
        self._unsaved.extend(items)
        self._save()

    def _save(self) -> None:
        """Write the unsaved items, then any run marker a failed write left; never raises.

        Runs inside the worker's commit (no await, so no cancellation lands in it). A failure
        is kept in ``error`` and logged; the items stay queued for the next try.
        """
        if self.closed:
            return
        if self._unsaved:
            run_id = self._open_runs[0][0] if self._open_runs else None
            starts = tuple(self._starts_owed)
            if not self._attempt(
                lambda: self._rows.append(self._history, self._saved, run_id, starts),
                f"{len(self._unsaved)} item(s) not saved yet",
            ):
                return
            self._saved = len(self._history)
            self._unsaved.clear()
            del self._starts_owed[: len(starts)]
        while self._markers:
            if not self._attempt(self._markers[0], "run marker not written yet"):
                return
            del self._markers[0]
        self.error = None

    def _attempt(self, write: Callable[[], None], what: str) -> bool:
        """Run one write; on failure record it in ``error``, log it and return False.

        The first failure of a streak is logged as an error, the retries that fail again only
        at debug level (a run keeps committing while a database is locked).
        """
        first = self.error is None
        try:
            write()
        except StoreError as exc:
            self.error = exc
            logger.log(
                logging.ERROR if first else logging.DEBUG,
                "session %r: %s: %s",
                self.name,
                what,
                exc,
            )
            return False
        except Exception as exc:  # not the store's kind of error: a bug, still never raised here
            self.error = StoreError(f"cannot write session {self.name!r}: {exc!r}")
            self.error.__cause__ = exc
            logger.log(
                logging.ERROR if first else logging.DEBUG,
                "session %r: %s",
                self.name,
                what,
                exc_info=True,
            )
            return False
        if not first:
            logger.info("session %r: written again after failed writes", self.name)
        return True

    def _run_started(self, run_id: str) -> None:
        entry = (run_id, now())
        self._open_runs.append(entry)
        if not self.closed:
            self._starts_owed.append(entry)  # written with the run's first commit

    def _run_ended(self, run_id: str, outcome: str, kind: str | None, reason: str | None) -> None:
        self._save()
        started_at = now()
        for entry in self._open_runs:
            if entry[0] == run_id:
                started_at = entry[1]
                self._open_runs.remove(entry)
                if entry in self._starts_owed:  # it committed nothing: its end row says both
                    self._starts_owed.remove(entry)
                break
        self._marker(lambda: self._rows.end_run(run_id, started_at, outcome, kind, reason))

    def _marker(self, write: Callable[[], None]) -> None:
        """Write a run's end marker now, or after the writes queued before it (never raises).

        An end marker not written makes the next open report a crash: it is retried.
        """
        if self.closed:
            return
        if self._unsaved or self._markers or not self._attempt(write, "run marker not written"):
            self._markers.append(write)


def _watch_runs(
    worker: Attachable,
    started: Callable[[str], None],
    ended: Callable[[str, str, str | None, str | None], None],
) -> Callable[[], None]:
    """Call ``started(run_id)`` and ``ended(run_id, outcome, kind, reason)`` around every run.

    Both are synchronous (the worker's ``on_run`` hook): the end marker is written after the
    run's clean-up, even when the run is being cancelled.
    """

    def listener(event: RunBoundary) -> None:
        if isinstance(event, RunStarted):
            started(event.run_id)
        elif isinstance(event, RunFinished):
            ended(event.run_id, event.status, None, None)
        elif isinstance(event, RunCancelled):
            ended(event.run_id, "cancelled", event.kind, event.reason)
        else:
            ended(event.run_id, "failed", event.kind, event.error)

    return worker.on_run(listener)
