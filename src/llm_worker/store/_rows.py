"""`SessionRows`: the one writer of a session's rows — its items, its count, its run markers.

Invariants:
* Each method is one ``BEGIN IMMEDIATE … COMMIT`` transaction: all of it or none of it. An
  append holds every item of one commit of the worker, the start rows of runs that began since
  the last one, and the session's new count and activity time.
* The session's row is checked and updated by one statement (its count must be what this
  session saved); only when it is not is the count read to decide: fewer is written again (an
  older copy of the file), more or no session at all is refused (another database).
* Methods run synchronously in the caller's thread (the worker's commit listener): no await, so
  no cancellation lands in a write.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._text import valid_text
from ..items import Item
from ._blobs import stow
from ._errors import StoreError
from ._records import item_data, now, stored_text

if TYPE_CHECKING:
    from ._database import SQLiteStore
    from ._session import Session

__all__ = ["SessionRows", "count_items", "insert_items", "write_starts"]

logger = logging.getLogger("llm_worker.store")


class SessionRows:
    """What an open `Session` may do to its store: write its own rows, and say it closed.

    The `Session`'s whole interface to the database. Each method is one transaction; a failure
    is a `StoreError` (the session keeps what it could not write and tries again).
    """

    def __init__(self, store: SQLiteStore, name: str) -> None:
        self._store = store
        self._file = store._file
        self._name = name

    def append(
        self,
        history: Sequence[Item],
        saved: int,
        run_id: str | None,
        starts: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write ``history[stored:]`` and the start rows ``starts`` in one transaction.

        ``stored`` is how many items the database holds for the session: ``saved`` normally,
        fewer if an older copy of the file was put back (the session's lock makes it the only
        writer, so its history is the truth). More than ``saved``, or no session row at all,
        means another database is at the path: refused, nothing written.
        """
        name = self._name
        started = time.perf_counter()
        with self._file.writing() as conn:
            stored = saved
            if not count_items(conn, name, saved, len(history)):  # not the usual ``saved``
                stored = self._stored(conn, saved)
                count_items(conn, name, stored, len(history))
            insert_items(conn, name, stored, history[stored:], run_id)
            write_starts(conn, name, starts)
        self._store.append_stats.record(time.perf_counter() - started)

    def _stored(self, conn: sqlite3.Connection, saved: int) -> int:
        """How many items the database holds, when it is not ``saved``: fewer is written again
        (an older copy), more or no session at all is refused (another database)."""
        name, path = self._name, self._file.path
        row = conn.execute("SELECT item_count FROM sessions WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"session {name!r} is not in {path} any more (was the file replaced?)")
        stored = int(row[0])
        if stored > saved:
            raise StoreError(
                f"{path} holds {stored} items of session {name!r} but this session "
                f"saved only {saved} (was the file replaced?)"
            )
        if stored < saved:
            logger.warning(
                "session %r: %s holds %d of its %d saved items (an older copy?); "
                "writing the rest again",
                name,
                path,
                stored,
                saved,
            )
        return stored

    def end_run(
        self,
        run_id: str,
        started_at: str,
        outcome: str,
        kind: str | None,
        reason: str | None,
    ) -> None:
        """Record how a run ended (its start row too, if writing that one had failed)."""
        run_id = valid_text(run_id)
        with self._file.writing() as conn:
            conn.execute(
                "INSERT INTO runs (session, run_id, started_at, ended_at, outcome, kind, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session, run_id) DO UPDATE SET "
                "ended_at = excluded.ended_at, outcome = excluded.outcome, "
                "kind = excluded.kind, reason = excluded.reason",
                (
                    self._name,
                    run_id,
                    started_at,
                    now(),
                    outcome,
                    stored_text(kind),
                    stored_text(reason),
                ),
            )

    def release(self, session: Session) -> None:
        """``session`` is closed: the store no longer closes it with itself."""
        if self._store._open.get(self._name) is session:
            del self._store._open[self._name]


def insert_items(
    conn: sqlite3.Connection,
    name: str,
    first_seq: int,
    items: Sequence[Item],
    run_id: str | None,
) -> None:
    """Insert ``items`` as rows ``first_seq``, ``first_seq + 1``, … of the session."""
    rows = [
        (name, first_seq + offset, item.type, item.id, run_id, item_data(stow(conn, item), name))
        for offset, item in enumerate(items)
    ]
    conn.executemany(
        "INSERT INTO items (session, seq, type, item_id, run_id, data) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def count_items(conn: sqlite3.Connection, name: str, stored: int, count: int) -> bool:
    """Set the session's item count to ``count`` (and its activity time) if it is ``stored``.

    Returns whether it was: the one statement that both checks and updates the session's row.
    """
    cursor = conn.execute(
        "UPDATE sessions SET updated_at = ?, item_count = ? WHERE name = ? AND item_count = ?",
        (now(), count, name, stored),
    )
    return cursor.rowcount == 1


def write_starts(conn: sqlite3.Connection, name: str, starts: Sequence[tuple[str, str]]) -> None:
    """Start rows of runs (without an end: a crash if the process dies in the run)."""
    if starts:
        conn.executemany(
            "INSERT OR IGNORE INTO runs (session, run_id, started_at) VALUES (?, ?, ?)",
            [(name, valid_text(run_id), started_at) for run_id, started_at in starts],
        )
