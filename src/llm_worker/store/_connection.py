"""The database file and the one connection to it: opening, transactions, file identity.

Invariants:
* A file is opened only if it is ours or empty (`check_foreign` runs before anything writes to
  it), then put in WAL mode and migrated to the current schema; anything else is refused with a
  `StoreError` and the connection closed. A new file is created private (mode 0600).
* One connection, shared by every thread behind one re-entrant lock: a transaction is never
  interleaved with another one of this store.
* Before each transaction the path must still name the file the connection has open (device
  and inode). Gone (removed or moved away) is a `StoreError` until it is back, with the
  connection kept; another file there is opened (and checked) in place of the old one, after
  the old one's WAL was checkpointed into it (SQLite does not do that for a moved file).
* The WAL is checkpointed by a helper thread (`_checkpoints`), not by the commit that crosses
  SQLite's threshold; closing stops that thread before the connection closes.
* A write transaction is ``BEGIN IMMEDIATE … COMMIT``: all of it or none of it. A transaction a
  failed rollback left open is rolled back before the next one begins, so one failure never
  makes every later ``BEGIN`` fail.
* SQLite's errors, and text it cannot encode, leave this module as `StoreError`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from ._checkpoints import FALLBACK_PAGES, Checkpointer
from ._errors import StoreError
from ._schema import MIGRATIONS, check_foreign, migrate

logger = logging.getLogger("llm_worker.store")

Synchronous = Literal["NORMAL", "FULL"]


class DatabaseFile:
    """The SQLite file at ``path`` and the connection to it (see the module's invariants)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous,
        busy_timeout: float,
        create: bool,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self._read_only = read_only
        self.lock = threading.RLock()
        self._busy_timeout = busy_timeout
        self._synchronous: Synchronous = synchronous
        self.conn = open_database(
            path,
            create=create,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            read_only=read_only,
        )
        self._connected = True
        try:
            self._identity = file_identity(path)
        except OSError as exc:
            self.conn.close()
            raise StoreError(f"cannot open the database {path}: {exc.strerror}") from exc
        self._closed = False
        self._checkpoints = Checkpointer(path, self._open_identity, busy_timeout)

    def _open_identity(self) -> tuple[int, int] | None:
        return self._identity if self._connected and not self._closed else None

    def close(self) -> None:
        """Close the connection; every later transaction is a `StoreError`. Idempotent."""
        self._checkpoints.stop()
        with self.lock:
            self._closed = True
            self._disconnect()

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (``IMMEDIATE``): all of it or none of it."""
        with self.lock, sqlite_errors(self.path, "write to"):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._checkpoints.due()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query in it sees the same committed state."""
        with self.lock, sqlite_errors(self.path, "read"):
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        """The connection to the file at ``path``, checked before each transaction.

        A transaction a failed rollback left open is rolled back first, so one failure cannot
        make every later ``BEGIN`` fail. The file must still be the one the connection has open:
        gone is a `StoreError` (the connection is kept: the file may be moved back); another
        file is opened in place of the old one (and refused like any file not ours).
        Called with ``lock`` held, inside `sqlite_errors`.
        """
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self._connected and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        try:
            identity = file_identity(self.path)
        except OSError as exc:
            raise StoreError(
                f"the database {self.path} is gone (removed or moved away): {exc.strerror}"
            ) from exc
        if identity != self._identity or not self._connected:
            logger.warning("%s is not the file opened before; opening it again", self.path)
            self._disconnect(checkpoint=True)
            self.conn = open_database(
                self.path,
                create=False,
                busy_timeout=self._busy_timeout,
                synchronous=self._synchronous,
                read_only=self._read_only,
            )
            self._connected = True
            self._identity = identity
        return self.conn

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
                with self._checkpoints.exclusive():
                    busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                busy, problem = 1, exc
            if busy:
                logger.warning("the WAL of the old %s was not emptied: %s", self.path, problem)
        try:
            self.conn.close()
        except sqlite3.Error as exc:
            logger.warning("closing the connection to %s failed: %s", self.path, exc)


@contextmanager
def sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """SQLite's errors (and text it cannot encode) as `StoreError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"cannot {doing} {path}: {exc}") from exc
    except UnicodeError as exc:  # a str SQLite cannot encode: defence in depth, see stored_text
        raise StoreError(f"cannot {doing} {path}: text that is not valid Unicode ({exc})") from exc


def file_identity(path: Path) -> tuple[int, int]:
    """Which file ``path`` names now (device, inode); raises `OSError` if none."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def open_database(
    path: Path,
    *,
    create: bool,
    busy_timeout: float,
    synchronous: Synchronous,
    read_only: bool = False,
) -> sqlite3.Connection:
    """A connection to the database file at ``path``, checked as ours, in WAL mode, migrated
    (``read_only``: checked only)."""
    text = str(path)
    if not text or text == ":memory:" or text.startswith("file:"):
        raise ValueError("SQLiteStore needs the path of a database file")
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    if read_only:
        return _open_read_only(path, busy_timeout)
    _check_writable(path, create)
    if not path.exists():
        if not create:
            raise StoreError(f"there is no database at {path}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # private from the start
        except OSError as exc:
            raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc
    elif not os.access(path, os.R_OK):
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
        conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_PAGES:d}")  # `Checkpointer` does it
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, text, MIGRATIONS)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot use the database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _check_writable(path: Path, create: bool) -> None:
    """Say which of the file and its directory cannot be written (SQLite keeps its ``-wal`` and
    ``-shm`` files beside the database, so the directory must be writable too)."""
    directory = path.parent
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(f"cannot write to the database {path}: the file is not writable")
    wal = path.with_name(path.name + "-wal")
    no_journal = create or not wal.exists()
    if no_journal and directory.is_dir() and not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot write to the database {path}: its directory {directory} is not writable "
            "(SQLite keeps its journal beside the file)"
        )


def _open_read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection to an existing database (a file or directory we may not write).

    Without write access SQLite cannot create the WAL's shared-memory file, so the file is read
    as immutable when nothing else can be writing it (its directory is read-only too).
    """
    from urllib.parse import quote

    if not path.exists():
        raise StoreError(f"there is no database at {path}")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    if not os.access(path.parent, os.W_OK):
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        check_foreign(conn, str(path))
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the database {path}: {exc}") from exc
    return conn
