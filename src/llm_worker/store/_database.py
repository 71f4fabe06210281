"""`SQLiteStore`: sessions in one SQLite file, and the SQL that reads and writes them.

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
  run as ``crashed`` and, if the model may have lost something, appends the `Note` `_recovery`
  decides on, in the same transaction.
* Nothing secret is stored: the model spec (``"openai:gpt-4o-mini"``), the system prompt and
  the caller's metadata (string settings, e.g. the command line's toolset), never a key or a
  base URL.
* A `Session` writes only through its `SessionRows` (its own rows, nothing else), never through
  the store's private members; the store never builds, imports or drives a worker.
* The store writes only to the file it opened (see `_connection`); an append writes whatever the
  session's rows there lack, so a restored older copy is brought up to date, and refuses a file
  holding more of the session than it saved (another database at the path).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from .._text import valid_text
from ..items import Item, load_item
from ._blobs import delete_unnamed, named_by, restore
from ._connection import DatabaseFile, Synchronous
from ._errors import SessionLocked, SessionNotFound, StoreError
from ._lock import SessionLock, holder_pid, lock_path
from ._records import (
    INFO_COLUMNS,
    RUN_COLUMNS,
    AppendStats,
    RunRecord,
    SessionInfo,
    check_metadata,
    dump_metadata,
    load_metadata,
    merge_metadata,
    now,
    parse_time,
    run_record,
    session_info,
    stored_text,
)
from ._recovery import recover
from ._rows import SessionRows, count_items, insert_items
from ._session import Session

__all__ = ["SQLiteStore"]

logger = logging.getLogger("llm_worker.store")

DEFAULT_WAIT = 30.0
_POLL = 0.05
_MAX_NAME = 200


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
    shared behind a lock. Raises `StoreError` for a file that cannot be used as ours, or not
    written (the message names the file or directory that is not writable). ``read_only``
    opens an existing database for reading only (listing, showing): nothing is migrated or
    written, and a session cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        create: bool = True,
        read_only: bool = False,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path).expanduser()
        # Locks live beside the real file, so every path to it (symlinks, relative) shares them.
        self._real_path = self.path.resolve()
        self._file = DatabaseFile(
            self.path,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            create=create and not read_only,
            read_only=read_only,
        )
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
        self._file.close()
        if errors:
            raise errors[0]

    @property
    def schema_version(self) -> int:
        with self._file.reading() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def journal_mode(self) -> str:
        with self._file.reading() as conn:
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
        check_name(name)
        if model is not None and not isinstance(model, str):
            raise TypeError("model must be a spec string such as 'offline' or 'openai:gpt-4o'")
        check_metadata(metadata)
        lock = SessionLock(lock_path(self._real_path, name))
        acquire(lock, name, wait)
        try:
            session = self._load(name, lock, model, system, metadata)
        except BaseException:
            lock.release()
            raise
        self._open[name] = session
        return session

    def sessions(self) -> list[SessionInfo]:
        """Every session, most recently active first."""
        with self._file.reading() as conn:
            rows = conn.execute(
                f"""SELECT {INFO_COLUMNS} FROM sessions s
                LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE session = s.name)
                ORDER BY s.updated_at DESC, s.name"""
            ).fetchall()
        return [self._info(row) for row in rows]

    def session_info(self, name: str) -> SessionInfo:
        """One session's listing row; raises `SessionNotFound`."""
        with self._file.reading() as conn:
            row = conn.execute(
                f"""SELECT {INFO_COLUMNS} FROM sessions s
                LEFT JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE session = s.name)
                WHERE s.name = ?""",
                (name,),
            ).fetchone()
        if row is None:
            raise SessionNotFound(name, str(self.path))
        return self._info(row)

    def load_history(self, name: str) -> list[Item]:
        """A session's history as last committed, without opening (locking) it."""
        with self._file.reading() as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE name = ?", (name,)).fetchone() is None:
                raise SessionNotFound(name, str(self.path))
            return [item for item, _ in read_items(conn, name, self.path)]

    def runs(self, name: str) -> list[RunRecord]:
        """A session's run markers, oldest first."""
        with self._file.reading() as conn:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE session = ? ORDER BY id", (name,)
            ).fetchall()
        return [run_record(row) for row in rows]

    def delete_session(self, name: str) -> None:
        """Delete a session, its items and the attachments no other session names; raises
        `SessionLocked` if it is open anywhere."""
        lock = SessionLock(lock_path(self._real_path, name))
        acquire(lock, name, False)
        try:
            with self._file.writing() as conn:
                attachments = named_by(conn, name)
                deleted = conn.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount
                delete_unnamed(conn, attachments)
            if deleted:
                lock.remove()  # held: nobody can be using it (see `SessionLock.remove`)
        finally:
            lock.release()
        if not deleted:
            raise SessionNotFound(name, str(self.path))

    # -- internals --------------------------------------------------------------------------

    def _load(
        self,
        name: str,
        lock: SessionLock,
        model: str | None,
        system: str | None,
        metadata: Mapping[str, str | None] | None,
    ) -> Session:
        model, system = stored_text(model), stored_text(system)
        if metadata is not None:
            metadata = {valid_text(k): stored_text(v) for k, v in metadata.items()}
        with self._file.writing() as conn:
            at = now()
            row = conn.execute(
                "SELECT model, system, created_at, metadata FROM sessions WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                stored_metadata = merge_metadata({}, metadata)
                conn.execute(
                    "INSERT INTO sessions (name, model, system, created_at, updated_at, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, model, system, at, at, dump_metadata(stored_metadata)),
                )
                stored_model, stored_system, created = model, system, at
            else:
                stored_model, stored_system, created, stored_json = row
                if model is not None and model != stored_model:
                    conn.execute("UPDATE sessions SET model = ? WHERE name = ?", (model, name))
                    stored_model = model
                if system is not None and system != stored_system:
                    conn.execute("UPDATE sessions SET system = ? WHERE name = ?", (system, name))
                    stored_system = system
                old_metadata = load_metadata(stored_json, name)
                stored_metadata = merge_metadata(old_metadata, metadata)
                if stored_metadata != old_metadata:
                    conn.execute(
                        "UPDATE sessions SET metadata = ? WHERE name = ?",
                        (dump_metadata(stored_metadata), name),
                    )
            rows = read_items(conn, name, self.path)
            history = [item for item, _ in rows]
            run_row = conn.execute(
                f"SELECT {RUN_COLUMNS}, id FROM runs WHERE session = ? ORDER BY id DESC LIMIT 1",
                (name,),
            ).fetchone()
            last_run = run_record(run_row[:-1]) if run_row else None
            if last_run is not None and not last_run.ended:
                conn.execute(
                    "UPDATE runs SET ended_at = ?, outcome = 'crashed' WHERE id = ?",
                    (at, run_row[-1]),
                )
                last_run = RunRecord(
                    last_run.run_id, last_run.started_at, parse_time(at), "crashed"
                )
            ran = {run_id for _, run_id in rows if run_id is not None}
            recovery = recover(history, ran, last_run)
            if recovery is not None and recovery.note is not None:
                count_items(conn, name, len(history), len(history) + 1)
                insert_items(conn, name, len(history), [recovery.note], None)
                history.append(recovery.note)
        return Session(
            self,
            SessionRows(self, name),
            name,
            model=stored_model,
            system=stored_system,
            metadata=stored_metadata,
            created_at=parse_time(created) or datetime.now(UTC),
            history=history,
            last_run=last_run,
            recovery=recovery,
            lock=lock,
        )

    def _info(self, row: Sequence[object]) -> SessionInfo:
        name = str(row[0])
        return session_info(row, holder_pid(lock_path(self._real_path, name)))


# -- SQL shared by opening and appending ---------------------------------------------------------


def read_items(conn: sqlite3.Connection, name: str, path: Path) -> list[tuple[Item, str | None]]:
    """A session's items in order, each with the run that added it; a gap is a `StoreError`."""
    rows = conn.execute(
        "SELECT seq, data, run_id FROM items WHERE session = ? ORDER BY seq", (name,)
    ).fetchall()
    items: list[tuple[Item, str | None]] = []
    for position, (seq, data, run_id) in enumerate(rows):
        if seq != position:
            raise StoreError(f"session {name!r} in {path} is missing item {position}")
        try:
            item = load_item(data)
            if item.type == "user" and '"blob":"' in data:
                item = restore(conn, item, f"session {name!r} in {path}, item {seq}")
            items.append((item, run_id))
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid") if exc.errors() else str(exc)
            raise StoreError(
                f"session {name!r} in {path}: item {seq} cannot be read ({problem})"
            ) from exc
    return items


def check_name(name: str) -> None:
    """Refuse a session name that could not be stored or shown as it is."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a session name must be a non-empty string")
    if len(name) > _MAX_NAME:
        raise ValueError(f"a session name must be at most {_MAX_NAME} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise ValueError("a session name must not contain control characters")
    if valid_text(name) != name:
        raise ValueError("a session name must be valid Unicode (it holds a lone surrogate)")


def acquire(lock: SessionLock, name: str, wait: bool | float) -> None:
    """Take ``lock`` now, or within ``wait`` (True: `DEFAULT_WAIT` seconds), else `SessionLocked`.

    Polls, blocking this thread.
    """
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
