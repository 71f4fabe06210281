"""The database schema and its migrations.

Invariants:
* ``PRAGMA application_id`` marks a file as ours; ``PRAGMA user_version`` is the number of
  migrations applied. Both live in the database header, so they change in the same transaction
  as the migrations: a database is always at exactly one version, never half-migrated.
* Migrations are applied in order, each exactly once, inside one ``BEGIN IMMEDIATE`` transaction
  (the version is re-read under the write lock, so two processes opening a new file at once
  cannot both migrate it). A version newer than this code knows is refused, never downgraded.
* A file that is not SQLite, or a SQLite file of another program (another application id, or
  tables without ours), is refused before anything is written to it.
* Migrations never use ``executescript`` (it commits on its own): statements run one by one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._errors import SchemaTooNew, StoreError

APPLICATION_ID = 0x4C4C4D57  # "LLMW"


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``apply`` runs inside the migration transaction."""

    description: str
    apply: Callable[[sqlite3.Connection], None]


def sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step that executes ``statements`` one at a time."""

    def apply(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return apply


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "sessions, their items, and run markers",
        sql(
            """CREATE TABLE sessions (
                name TEXT PRIMARY KEY,
                model TEXT,
                system TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                item_count INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE items (
                session TEXT NOT NULL REFERENCES sessions(name) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                type TEXT NOT NULL,
                item_id TEXT NOT NULL,
                run_id TEXT,
                data TEXT NOT NULL,
                PRIMARY KEY (session, seq)
            )""",
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                session TEXT NOT NULL REFERENCES sessions(name) ON DELETE CASCADE,
                run_id TEXT NOT NULL,
                started_at TEXT NOT NULL,
                ended_at TEXT,
                outcome TEXT,
                kind TEXT,
                reason TEXT,
                UNIQUE (session, run_id)
            )""",
            "CREATE INDEX sessions_by_activity ON sessions(updated_at)",
        ),
    ),
    Migration(
        "session metadata: a JSON object of string settings (NULL: none)",
        sql("ALTER TABLE sessions ADD COLUMN metadata TEXT"),
    ),
    Migration(
        "no index on session activity: every commit rewrote it, and listing sorts a few rows",
        sql("DROP INDEX IF EXISTS sessions_by_activity"),
    ),
    Migration(
        "attachment bytes, once each, by content hash (items name them: _blobs)",
        sql(
            """CREATE TABLE blobs (
                sha256 TEXT PRIMARY KEY,
                media_type TEXT,
                data BLOB NOT NULL
            )"""
        ),
    ),
)


def check_foreign(conn: sqlite3.Connection, path: str) -> tuple[int, int]:
    """Return ``(application_id, user_version)``; raise `StoreError` for a file not ours.

    Only reads, so a foreign file is left exactly as it was.
    """
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = int(
            conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not an llm-worker database ({exc})") from exc
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version or tables)):
        raise StoreError(
            f"{path} is a SQLite database of another program, not an llm-worker database"
        )
    return app_id, version


def migrate(
    conn: sqlite3.Connection, path: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the schema up to ``len(migrations)``; return the version found before.

    Raises `SchemaTooNew` for a newer database and `StoreError` if a migration fails (the
    transaction is rolled back: the file stays at its old version).
    """
    latest = len(migrations)
    _, found = check_foreign(conn, path)
    _refuse_newer(found, latest, path)
    if found == latest:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        _, version = check_foreign(conn, path)  # another process may have migrated meanwhile
        _refuse_newer(version, latest, path)
        for migration in migrations[version:]:
            migration.apply(conn)
        conn.execute(f"PRAGMA user_version = {latest:d}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _refuse_newer(version: int, latest: int, path: str) -> None:
    if version > latest:
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this llm-worker supports "
            f"({latest}); upgrade llm-worker to use it",
            found=version,
            supported=latest,
        )
