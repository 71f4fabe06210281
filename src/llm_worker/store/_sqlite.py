"""`SQLiteStore` and `Session`: conversation histories that survive a crash.

Invariants:
* One history append is one ``BEGIN IMMEDIATE … COMMIT`` transaction holding every item of the
  worker's commit (rows numbered ``seq`` 0, 1, 2, … per session) and the session's activity
  time. It runs synchronously inside the worker's commit listener, in the event-loop thread with
  no await, so no cancellation can land in it: the database never holds part of a commit. The
  listener runs before the worker emits `ItemCommitted`, so an item reported as committed is
  already in the database.
* A session is open in at most one `Session` at a time, across processes (see `_lock`); a second
  opener gets `SessionLocked`, or waits if it asked to. Reads (listing, showing) take no lock:
  WAL readers see the last committed state while a writer appends.
* Run markers: one row per run, written when it starts and completed when it ends, with its
  outcome. A row left without an end means the process died mid-run: the next open records the
  run as ``crashed`` and, if the model may have lost something, appends a `Note` telling it, in
  the same transaction.
* Nothing secret is stored: the model spec (``"openai:gpt-4o-mini"``), the system prompt and
  the caller's metadata (string settings, e.g. the command line's toolset), never a key or a
  base URL.
* A failed write never raises out of the worker's commit (that would cut a run half-way) and
  never poisons later writes: the items stay queued in the `Session` (``unsaved``, ``error``)
  and go out with the next commit, `Session.flush` or `Session.close` — the points where the
  caller learns of it, as a typed `PersistenceFailed`. Whatever fails (SQLite errors, a locked,
  read-only, removed, replaced or corrupt file, text that cannot be encoded) is a `StoreError`.
* Everything written is valid UTF-8: an item whose text holds lone surrogates (which neither
  JSON nor SQLite can encode) is stored with U+FFFD in their place, and logged, rather than
  blocking every later item.
* The store writes only to the file it opened: before each transaction it checks that the path
  still names that file. Gone (removed or moved away) is a `StoreError` until it is back;
  another file there is opened (and checked) in place of the old one, and an append writes
  whatever the session's rows there lack, so a restored older copy is brought up to date.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from pydantic import ValidationError

from ..events import RunBoundary, RunCancelled, RunFinished, RunStarted
from ..items import (
    AssistantMessage,
    Item,
    Note,
    ToolCall,
    ToolResult,
    dump_item,
    load_item,
    unanswered_calls,
)
from ._errors import PersistenceFailed, SessionLocked, SessionNotFound, StoreError
from ._lock import SessionLock, holder_pid, lock_path
from ._schema import MIGRATIONS, check_foreign, migrate

if TYPE_CHECKING:
    from ..models import Model
    from ..worker import Worker

__all__ = [
    "AppendStats",
    "Recovery",
    "RunRecord",
    "SQLiteStore",
    "Session",
    "SessionInfo",
]

logger = logging.getLogger("llm_worker.store")

Synchronous = Literal["NORMAL", "FULL"]
RunOutcome = Literal["finished", "paused", "limit_reached", "cancelled", "failed", "crashed"]
_NORMAL_ENDS = frozenset({"finished", "paused", "limit_reached"})
DEFAULT_WAIT = 30.0
_POLL = 0.05
_MAX_NAME = 200

CRASH_RESULT = (
    "Not executed: the process running the previous turn stopped (crash or kill) before this "
    "call finished; it may have run in part."
)
MOVED_ON_RESULT = "Not executed: the run was paused and the user moved on."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# -- value types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One run's marker: when it started and how it ended (``outcome`` None: never ended)."""

    run_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    kind: str | None = None
    reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@dataclass(frozen=True)
class SessionInfo:
    """A row of the session listing."""

    name: str
    model: str | None
    system: str | None
    items: int
    created_at: datetime
    updated_at: datetime
    last_run: RunRecord | None
    in_use_by: int | None  # the pid holding the session open, if any
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """For listings: in use, crashed, interrupted, failed, paused, turn limit, or ""."""
        if self.in_use_by is not None:
            return "in use"
        run = self.last_run
        if run is None or run.outcome == "finished":
            return ""
        if not run.ended or run.outcome == "crashed":
            return "crashed"
        return {
            "cancelled": "interrupted",
            "failed": "failed",
            "paused": "paused",
            "limit_reached": "turn limit",
        }.get(run.outcome or "", run.outcome or "")


@dataclass(frozen=True)
class Recovery:
    """How a session's last run ended abnormally, found when the session was opened.

    ``outcome`` is ``crashed`` (the process died mid-run), ``cancelled`` or ``failed``.
    ``pending_calls`` are calls left without a result: ``resume()`` runs them again (so a tool
    killed mid-call runs at least once more), `Session.settle_pending` answers them instead.
    ``note`` is the `Note` appended to tell the model its previous turn was interrupted (None
    when the run had added nothing, or when calls are pending: a note may not precede results,
    so an attached worker adds it after them).
    """

    outcome: str
    kind: str | None
    reason: str | None
    pending_calls: tuple[ToolCall, ...] = ()
    note: Note | None = None

    def describe(self) -> str:
        """One line for people: what happened to the last run."""
        if self.outcome == "crashed":
            text = "the last run did not finish: its process stopped (crash or kill)"
        elif self.outcome == "cancelled":
            text = f"the last run was interrupted ({self.reason or self.kind})"
        else:
            text = f"the last run failed ({self.reason or self.kind})"
        if self.pending_calls:
            names = ", ".join(call.name for call in self.pending_calls)
            text += f"; {len(self.pending_calls)} tool call(s) never finished ({names})"
        return text


@dataclass
class AppendStats:
    """How long history appends took (seconds), for latency checks."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def record(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)


# -- the store ----------------------------------------------------------------------------------


class SQLiteStore:
    """Sessions in one SQLite file: WAL mode, one transaction per history append.

    ``synchronous="NORMAL"`` (the default) is what WAL mode is designed for: a commit is durable
    against the *process* dying (kill -9, a crash) as soon as it returns, because the WAL is
    written before COMMIT returns; only an OS crash or power loss may roll back the last few
    commits, never corrupt the file. That makes an append tens of microseconds instead of an
    fsync per item (milliseconds), which matters because appends run in the event-loop thread.
    Use ``"FULL"`` to fsync every commit when power loss must not lose a single item.

    ``busy_timeout`` bounds how long a write waits for another process writing the same file
    (other sessions): appends are short, so this is rarely felt. Thread-safe; the connection is
    shared behind a lock. Raises `StoreError` for a file that cannot be used as ours.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path).expanduser()
        # Locks live beside the real file, so every path to it (symlinks, relative) shares them.
        self._real_path = self.path.resolve()
        self._lock = threading.RLock()
        self._busy_timeout = busy_timeout
        self._synchronous: Synchronous = synchronous
        self._conn = _open_database(
            self.path, create=create, busy_timeout=busy_timeout, synchronous=synchronous
        )
        self._connected = True
        try:
            self._identity = _file_identity(self.path)
        except OSError as exc:
            self._conn.close()
            raise StoreError(f"cannot open the database {self.path}: {exc.strerror}") from exc
        self._closed = False
        self._open: dict[str, Session] = {}
        self.append_stats = AppendStats()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every open session (saving what is unsaved) and the database connection."""
        errors: list[StoreError] = []
        for session in list(self._open.values()):
            try:
                session.close()
            except StoreError as exc:
                errors.append(exc)
        with self._lock:
            self._closed = True
            self._disconnect()
        if errors:
            raise errors[0]

    @property
    def schema_version(self) -> int:
        with self._reading() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        with self._reading() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

    # -- sessions ---------------------------------------------------------------------------

    def open_session(
        self,
        name: str,
        *,
        model: str | None = None,
        system: str | None = None,
        metadata: Mapping[str, str | None] | None = None,
        wait: bool | float = False,
    ) -> Session:
        """Open (creating if needed) the session ``name``, holding its lock until `close`.

        ``model`` and ``system``, when given, are stored as the session's (the spec string, never
        a key). ``metadata``, when given, is merged into the session's string settings: each key
        replaces the stored one, a None value removes it, other keys are kept.
        ``wait``: False raises `SessionLocked` at once if another holder has it; True
        waits up to 30 s, a number up to that many seconds (polling; blocks this thread).
        A session whose last run never ended is recovered here (see `Recovery`).
        """
        _check_name(name)
        if model is not None and not isinstance(model, str):
            raise TypeError("model must be a spec string such as 'offline' or 'openai:gpt-4o'")
        _check_metadata(metadata)
        lock = SessionLock(lock_path(self._real_path, name))
        self._acquire(lock, name, wait)
        try:
            session = self._load(name, lock, model, system, metadata)
        except BaseException:
            lock.release()
            raise
        self._open[name] = session
        return session

    def sessions(self) -> list[SessionInfo]:
        """Every session, most recently active first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"""SELECT {_INFO_COLUMNS} FROM sessions s
                LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE session = s.name)
                ORDER BY s.updated_at DESC, s.name"""
            ).fetchall()
        return [self._info(row) for row in rows]

    def session_info(self, name: str) -> SessionInfo:
        """One session's listing row; raises `SessionNotFound`."""
        with self._reading() as conn:
            row = conn.execute(
                f"""SELECT {_INFO_COLUMNS} FROM sessions s
                LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE session = s.name)
                WHERE s.name = ?""",
                (name,),
            ).fetchone()
        if row is None:
            raise SessionNotFound(name, str(self.path))
        return self._info(row)

    def load_history(self, name: str) -> list[Item]:
        """A session's history as last committed, without opening (locking) it."""
        with self._reading() as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE name = ?", (name,)).fetchone() is None:
                raise SessionNotFound(name, str(self.path))
            return [item for item, _ in self._items(conn, name)]

    def runs(self, name: str) -> list[RunRecord]:
        """A session's run markers, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE session = ? ORDER BY id", (name,)
            ).fetchall()
        return [_run_record(row) for row in rows]

    def delete_session(self, name: str) -> None:
        """Delete a session and its items; raises `SessionLocked` if it is open anywhere."""
        lock = SessionLock(lock_path(self._real_path, name))
        self._acquire(lock, name, False)
        try:
            with self._writing() as conn:
                deleted = conn.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount
        finally:
            lock.release()
        if not deleted:
            raise SessionNotFound(name, str(self.path))

    # -- internals --------------------------------------------------------------------------

    def _acquire(self, lock: SessionLock, name: str, wait: bool | float) -> None:
        if wait is False:
            limit = 0.0
        elif wait is True:
            limit = DEFAULT_WAIT
        else:
            limit = float(wait)
        deadline = time.monotonic() + limit
        while True:
            try:
                if lock.try_acquire():
                    return
            except OSError as exc:
                raise StoreError(f"cannot lock session {name!r} ({lock.path}): {exc}") from exc
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        pid = holder_pid(lock.path)
        if pid == os.getpid():
            who = "this process"
        elif pid is not None:
            who = f"another process (pid {pid})"
        else:
            who = "another process"
        waited = f" (waited {limit:g}s)" if limit else ""
        raise SessionLocked(
            f"session {name!r} is in use by {who}{waited}; "
            "wait for it to finish or choose another session",
            name=name,
            pid=pid,
        )

    def _load(
        self,
        name: str,
        lock: SessionLock,
        model: str | None,
        system: str | None,
        metadata: Mapping[str, str | None] | None,
    ) -> Session:
        model, system = _valid_text(model), _valid_text(system)
        if metadata is not None:
            metadata = {_valid_text(k): _valid_text(v) for k, v in metadata.items()}
        with self._writing() as conn:
            now = _now()
            row = conn.execute(
                "SELECT model, system, created_at, metadata FROM sessions WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                stored_metadata = _merge_metadata({}, metadata)
                conn.execute(
                    "INSERT INTO sessions (name, model, system, created_at, updated_at, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, model, system, now, now, _dump_metadata(stored_metadata)),
                )
                stored_model, stored_system, created = model, system, now
            else:
                stored_model, stored_system, created, stored_text = row
                if model is not None and model != stored_model:
                    conn.execute("UPDATE sessions SET model = ? WHERE name = ?", (model, name))
                    stored_model = model
                if system is not None and system != stored_system:
                    conn.execute("UPDATE sessions SET system = ? WHERE name = ?", (system, name))
                    stored_system = system
                old_metadata = _load_metadata(stored_text, name)
                stored_metadata = _merge_metadata(old_metadata, metadata)
                if stored_metadata != old_metadata:
                    conn.execute(
                        "UPDATE sessions SET metadata = ? WHERE name = ?",
                        (_dump_metadata(stored_metadata), name),
                    )
            rows = self._items(conn, name)
            history = [item for item, _ in rows]
            run_row = conn.execute(
                f"SELECT {_RUN_COLUMNS}, id FROM runs WHERE session = ? ORDER BY id DESC LIMIT 1",
                (name,),
            ).fetchone()
            last_run = _run_record(run_row[:-1]) if run_row else None
            if last_run is not None and not last_run.ended:
                conn.execute(
                    "UPDATE runs SET ended_at = ?, outcome = 'crashed' WHERE id = ?",
                    (now, run_row[-1]),
                )
                last_run = RunRecord(last_run.run_id, last_run.started_at, _time(now), "crashed")
            ran = {run_id for _, run_id in rows if run_id is not None}
            recovery = _recover(history, ran, last_run)
            if recovery is not None and recovery.note is not None:
                self._insert(conn, name, len(history), [recovery.note], None)
                history.append(recovery.note)
        return Session(
            self,
            name,
            model=stored_model,
            system=stored_system,
            metadata=stored_metadata,
            created_at=_time(created) or datetime.now(UTC),
            history=history,
            last_run=last_run,
            recovery=recovery,
            lock=lock,
        )

    def _items(self, conn: sqlite3.Connection, name: str) -> list[tuple[Item, str | None]]:
        rows = conn.execute(
            "SELECT seq, data, run_id FROM items WHERE session = ? ORDER BY seq", (name,)
        ).fetchall()
        items: list[tuple[Item, str | None]] = []
        for position, (seq, data, run_id) in enumerate(rows):
            if seq != position:
                raise StoreError(f"session {name!r} in {self.path} is missing item {position}")
            try:
                items.append((load_item(data), run_id))
            except ValidationError as exc:
                problem = exc.errors()[0].get("msg", "invalid") if exc.errors() else str(exc)
                raise StoreError(
                    f"session {name!r} in {self.path}: item {seq} cannot be read ({problem})"
                ) from exc
        return items

    def _append(self, name: str, history: Sequence[Item], saved: int, run_id: str | None) -> None:
        """Write ``history[stored:]`` in one transaction (the critical section).

        ``stored`` is how many items the database holds for the session: ``saved`` normally,
        fewer if an older copy of the file was put back (the session's lock makes it the only
        writer, so its history is the truth). More than ``saved``, or no session row at all,
        means another database is at the path: refused, nothing written.
        """
        started = time.perf_counter()
        with self._writing() as conn:
            row = conn.execute("SELECT item_count FROM sessions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(
                    f"session {name!r} is not in {self.path} any more (was the file replaced?)"
                )
            stored = int(row[0])
            if stored > saved:
                raise StoreError(
                    f"{self.path} holds {stored} items of session {name!r} but this session "
                    f"saved only {saved} (was the file replaced?)"
                )
            if stored < saved:
                logger.warning(
                    "session %r: %s holds %d of its %d saved items (an older copy?); "
                    "writing the rest again",
                    name,
                    self.path,
                    stored,
                    saved,
                )
            self._insert(conn, name, stored, history[stored:], run_id)
        self.append_stats.record(time.perf_counter() - started)

    def _insert(
        self,
        conn: sqlite3.Connection,
        name: str,
        first_seq: int,
        items: Sequence[Item],
        run_id: str | None,
    ) -> None:
        rows = [
            (name, first_seq + offset, item.type, item.id, run_id, _item_data(item, name))
            for offset, item in enumerate(items)
        ]
        conn.executemany(
            "INSERT INTO items (session, seq, type, item_id, run_id, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "UPDATE sessions SET updated_at = ?, item_count = ? WHERE name = ?",
            (_now(), first_seq + len(rows), name),
        )

    def _mark_run(self, name: str, run_id: str, started_at: str) -> None:
        with self._writing() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (session, run_id, started_at) VALUES (?, ?, ?)",
                (name, _valid_text(run_id), started_at),
            )

    def _end_run(
        self,
        name: str,
        run_id: str,
        started_at: str,
        outcome: str,
        kind: str | None,
        reason: str | None,
    ) -> None:
        """Record how a run ended (its start row too, if writing that one had failed)."""
        run_id = _valid_text(run_id)
        with self._writing() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (session, run_id, started_at) VALUES (?, ?, ?)",
                (name, run_id, started_at),
            )
            conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, kind = ?, reason = ? "
                "WHERE session = ? AND run_id = ?",
                (_now(), outcome, _valid_text(kind), _valid_text(reason), name, run_id),
            )

    def _info(self, row: Sequence[Any]) -> SessionInfo:
        name, model, system, created, updated, count, metadata = row[:7]
        last_run = _run_record(row[7:]) if row[7] is not None else None
        return SessionInfo(
            name=name,
            model=model,
            system=system,
            items=count,
            created_at=_time(created) or datetime.now(UTC),
            updated_at=_time(updated) or datetime.now(UTC),
            last_run=last_run,
            in_use_by=holder_pid(lock_path(self._real_path, name)),
            metadata=_load_metadata(metadata, name),
        )

    def _connection(self) -> sqlite3.Connection:
        """The connection to the file at ``path``, checked before each transaction.

        A transaction a failed rollback left open is rolled back first, so one failure cannot
        make every later ``BEGIN`` fail. The file must still be the one the connection has open:
        gone is a `StoreError` (the connection is kept: the file may be moved back); another
        file is opened in place of the old one (and refused like any file not ours).
        Called with ``_lock`` held, inside `_sqlite_errors`.
        """
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self._connected and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        try:
            identity = _file_identity(self.path)
        except OSError as exc:
            raise StoreError(
                f"the database {self.path} is gone (removed or moved away): {exc.strerror}"
            ) from exc
        if identity != self._identity or not self._connected:
            logger.warning("%s is not the file opened before; opening it again", self.path)
            self._disconnect(checkpoint=True)
            self._conn = _open_database(
                self.path,
                create=False,
                busy_timeout=self._busy_timeout,
                synchronous=self._synchronous,
            )
            self._connected = True
            self._identity = identity
        return self._conn

    def _disconnect(self, *, checkpoint: bool = False) -> None:
        """Close the connection. ``checkpoint``: its file was moved or replaced.

        SQLite does not checkpoint a moved file on close, so its WAL (still at ``<path>-wal``)
        would be read by the next connection as the WAL of whatever file is at the path now:
        it is checkpointed into its own file and emptied first.
        """
        if not self._connected:
            return
        self._connected = False
        if checkpoint:
            problem: sqlite3.Error | None = None
            try:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                busy, problem = 1, exc
            if busy:
                logger.warning("the WAL of the old %s was not emptied: %s", self.path, problem)
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            logger.warning("closing the connection to %s failed: %s", self.path, exc)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (``IMMEDIATE``): all of it or none of it."""
        with self._lock, _sqlite_errors(self.path, "write to"):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query in it sees the same committed state."""
        with self._lock, _sqlite_errors(self.path, "read"):
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")


_RUN_COLUMNS = "run_id, started_at, ended_at, outcome, kind, reason"
_INFO_COLUMNS = (
    "s.name, s.model, s.system, s.created_at, s.updated_at, s.item_count, s.metadata, "
    "r.run_id, r.started_at, r.ended_at, r.outcome, r.kind, r.reason"
)


def _run_record(row: Sequence[Any]) -> RunRecord:
    run_id, started, ended, outcome, kind, reason = row
    return RunRecord(
        run_id=run_id,
        started_at=_time(started) or datetime.now(UTC),
        ended_at=_time(ended),
        outcome=outcome,
        kind=kind,
        reason=reason,
    )


# -- a session ----------------------------------------------------------------------------------


class Session:
    """An open session: its history, and the lock that makes this the only writer.

    Bind a worker with `worker` (or `attach` one built with ``Worker(history=session.history)``):
    from then on every item the worker commits is persisted before the worker goes on. Close
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
        self._history = history
        self._saved = len(history)
        self._unsaved: list[Item] = []
        self._lock = lock
        self._worker: Worker | None = None
        self._detach: Callable[[], None] | None = None
        self._open_runs: list[tuple[str, str]] = []  # (run_id, started_at), oldest first
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

    # -- binding a worker -------------------------------------------------------------------

    def worker(self, model: Model | str | None = None, **kwargs: Any) -> Worker:
        """A `Worker` seeded with this session's history and system prompt, attached to it.

        ``model`` defaults to the session's model spec (``"offline"`` if it has none); other
        keyword arguments go to `Worker`.
        """
        from ..worker import Worker

        if "history" in kwargs:
            raise TypeError("the history of a session worker comes from the session")
        kwargs.setdefault("system", self.system)
        chosen: Model | str = model if model is not None else (self.model or "offline")
        worker = Worker(chosen, history=self._history, **kwargs)
        self.attach(worker)
        return worker

    def attach(self, worker: Worker) -> Callable[[], None]:
        """Persist every item ``worker`` commits from now on; return a function that detaches.

        The worker's history must be this session's (build it with `worker`, or pass
        ``history=session.history``); one worker per session at a time.
        """
        self._check_open()
        if self._worker is not None:
            raise RuntimeError(f"session {self.name!r} already has a worker attached")
        if worker.history != self._history:
            raise ValueError(
                "the worker's history is not this session's; build it with session.worker() "
                "or Worker(history=session.history)"
            )
        unlisten = worker.on_commit(self._on_commit)
        unwatch = _watch_runs(worker, self._run_started, self._run_ended)
        self._worker = worker
        recovery = self.recovery
        if recovery is not None and recovery.note is None and unanswered_calls(self._history):
            # A note may not come between calls and their results: the worker adds it after
            # them, when ``resume()`` has run them again (or before the next input).
            text = _note_text(recovery.outcome, recovery.kind, recovery.reason)
            worker.note_interruption(Note(kind="interrupted", text=text))

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
        text = CRASH_RESULT if crashed else MOVED_ON_RESULT
        added: list[Item] = [
            ToolResult(call_id=call.call_id, name=call.name, content=text, status="cancelled")
            for call in pending
        ]
        if crashed:
            added.append(Note(kind="interrupted", text=_note_text("crashed", None, None)))
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
            if self.store._open.get(self.name) is self:
                del self.store._open[self.name]
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
            if not self._attempt(
                lambda: self.store._append(self.name, self._history, self._saved, run_id),
                f"{len(self._unsaved)} item(s) not saved yet",
            ):
                return
            self._saved = len(self._history)
            self._unsaved.clear()
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
        started_at = _now()
        self._open_runs.append((run_id, started_at))
        self._marker(lambda: self.store._mark_run(self.name, run_id, started_at))

    def _run_ended(self, run_id: str, outcome: str, kind: str | None, reason: str | None) -> None:
        self._save()
        started_at = _now()
        for entry in self._open_runs:
            if entry[0] == run_id:
                started_at = entry[1]
                self._open_runs.remove(entry)
                break
        self._marker(
            lambda: self.store._end_run(self.name, run_id, started_at, outcome, kind, reason)
        )

    def _marker(self, write: Callable[[], None]) -> None:
        """Write a run marker now, or after the writes queued before it (never raises).

        A start marker not written only costs the crash note if the process dies in the run;
        an end marker not written makes the next open report a crash: both are retried.
        """
        if self.closed:
            return
        if self._unsaved or self._markers or not self._attempt(write, "run marker not written"):
            self._markers.append(write)


def _watch_runs(
    worker: Worker,
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


def _recover(history: list[Item], ran: set[str], last_run: RunRecord | None) -> Recovery | None:
    """What to tell about (and append for) a last run that did not end normally."""
    if last_run is None or last_run.outcome in _NORMAL_ENDS:
        return None
    outcome = last_run.outcome or "crashed"
    pending = tuple(unanswered_calls(history))
    note: Note | None = None
    already = bool(history) and isinstance(history[-1], Note) and history[-1].kind == "interrupted"
    if last_run.run_id in ran and not pending and not already:
        note = Note(kind="interrupted", text=_note_text(outcome, last_run.kind, last_run.reason))
    return Recovery(outcome, last_run.kind, last_run.reason, pending, note)


def _note_text(outcome: str, kind: str | None, reason: str | None) -> str:
    # A failure's reason is an error message, which may quote a server's response: never told.
    if outcome == "crashed":
        why = "crash: the process running it stopped before the turn ended"
    elif outcome == "failed":
        why = "it failed"
    else:
        why = f"{kind}: {reason}" if kind and reason else (kind or reason or outcome)
    return (
        f"[The previous turn was interrupted ({why}). The last assistant message and tool "
        "results above may be incomplete.]"
    )


def _check_metadata(metadata: Mapping[str, str | None] | None) -> None:
    if metadata is None:
        return
    for key, value in metadata.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str)):
            raise TypeError("metadata maps strings to strings (or to None, to remove a key)")


def _merge_metadata(
    stored: Mapping[str, str], given: Mapping[str, str | None] | None
) -> dict[str, str]:
    merged = dict(stored)
    for key, value in (given or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _dump_metadata(metadata: Mapping[str, str]) -> str | None:
    return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False) if metadata else None


def _load_metadata(text: str | None, name: str) -> dict[str, str]:
    """The stored settings; a value this code cannot read is logged and treated as none."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        logger.warning("session %r: unreadable metadata ignored: %.80r", name, text)
        return {}
    return value


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a session name must be a non-empty string")
    if len(name) > _MAX_NAME:
        raise ValueError(f"a session name must be at most {_MAX_NAME} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise ValueError("a session name must not contain control characters")
    if _SURROGATE.search(name):
        raise ValueError("a session name must be valid Unicode (it holds a lone surrogate)")


@contextmanager
def _sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """SQLite's errors (and text it cannot encode) as `StoreError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"cannot {doing} {path}: {exc}") from exc
    except UnicodeError as exc:  # a str SQLite cannot encode: defence in depth, see _valid_text
        raise StoreError(f"cannot {doing} {path}: text that is not valid Unicode ({exc})") from exc


def _file_identity(path: Path) -> tuple[int, int]:
    """Which file ``path`` names now (device, inode); raises `OSError` if none."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


@overload
def _valid_text(text: str) -> str: ...
@overload
def _valid_text(text: None) -> None: ...
@overload
def _valid_text(text: str | None) -> str | None: ...
def _valid_text(text: str | None) -> str | None:
    """``text`` with lone surrogates (which UTF-8 cannot encode) replaced by U+FFFD.

    A surrogate pair split into two code points is joined back into its character.
    """
    if text is None or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _item_data(item: Item, session: str) -> str:
    """An item's stored JSON text; always valid UTF-8, always readable by `load_item`.

    An item holding lone surrogates cannot be dumped as it is: it is stored with U+FFFD in
    their place (and logged), so one bad string never blocks every later item. Anything else
    that cannot be dumped is a `StoreError` (the item stays queued).
    """
    try:
        return dump_item(item)
    except ValueError as exc:
        problem = exc
    try:
        text = json.dumps(item.model_dump(mode="json"), ensure_ascii=False)
        repaired = dump_item(load_item(_valid_text(text)))
    except ValueError as exc:
        raise StoreError(
            f"session {session!r}: {item.type} item {item.id} cannot be stored: {problem}"
        ) from exc
    logger.warning(
        "session %r: %s item %s held text that is not valid Unicode (%s); stored with U+FFFD "
        "in its place",
        session,
        item.type,
        item.id,
        problem,
    )
    return repaired


def _open_database(
    path: Path, *, create: bool, busy_timeout: float, synchronous: Synchronous
) -> sqlite3.Connection:
    text = str(path)
    if not text or text == ":memory:" or text.startswith("file:"):
        raise ValueError("SQLiteStore needs the path of a database file")
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    if not path.exists():
        if not create:
            raise StoreError(f"there is no database at {path}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # private from the start
        except OSError as exc:
            raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc
    elif not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"cannot open the database {path}: permission denied")
    try:
        conn = sqlite3.connect(
            text, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    try:
        check_foreign(conn, text)  # before anything writes to the file
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, text, MIGRATIONS)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot use the database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn
