"""Durable sessions: a worker's history persisted in SQLite as it is committed.

::

    from llm_worker import Worker
    from llm_worker.store import SQLiteStore

    with SQLiteStore("chat.db") as store, store.open_session("support-42") as session:
        worker = Worker("offline", history=session.history, system=session.system)
        session.attach(worker)               # from now on every commit is written at once
        await worker.run("hello")            # every committed item is in the file already
        ...
        if session.recovery:                 # the last run was interrupted or crashed
            await worker.resume()

Layout: `_database` (`SQLiteStore`: the SQL, what a session may write), `_connection` (the file,
its one connection, transactions, file identity), `_session` (`Session`: the unsaved queue,
retries, the worker's listeners), `_records` (the values handed out, rows → records),
`_recovery` (what a crashed or interrupted last run left, and the texts the model is told),
`_schema`, `_lock`, `_errors`. The store never builds or imports a worker: callers build one on
``session.history`` and `Session.attach` it.

Invariants (details in the modules):

* Each history append is one SQLite transaction, written synchronously in the worker's commit
  listener (no await: a cancellation cannot split it). A killed process loses at most the block
  that was still streaming; everything the worker reported as committed is in the file.
* A session has one writer at a time across processes (`SessionLocked`, or ``wait=``); the lock
  is the OS's, so a killed holder never leaves it locked.
* Reopening restores the history exactly (interrupted messages, synthetic results included). A
  last run that never ended is recorded as crashed; the model gets a `Note` about it, and calls
  left without a result are run again by ``resume()`` (or answered by ``settle_pending()``).
* A file that is not ours — not SQLite, another program's, a newer schema — is refused with a
  `StoreError` before anything is written to it.
* A write that fails (a locked, removed or replaced file, a disk error, text UTF-8 cannot
  encode) never raises out of the worker's commit: the items stay queued in the `Session` and
  go out with the next commit; `Session.flush` and `Session.close` raise `PersistenceFailed`
  while some are still unsaved. Every error the store raises is a `StoreError`.
"""

from ._database import SQLiteStore
from ._errors import (
    PersistenceFailed,
    SchemaTooNew,
    SessionLocked,
    SessionNotFound,
    StoreError,
)
from ._records import AppendStats, RunRecord, SessionInfo
from ._recovery import Recovery
from ._schema import MIGRATIONS, Migration
from ._session import Session

__all__ = [
    "MIGRATIONS",
    "AppendStats",
    "Migration",
    "PersistenceFailed",
    "Recovery",
    "RunRecord",
    "SQLiteStore",
    "SchemaTooNew",
    "Session",
    "SessionInfo",
    "SessionLocked",
    "SessionNotFound",
    "StoreError",
    "default_db_path",
]


def default_db_path() -> str:
    """``$LLM_WORKER_DB`` if set, else ``sessions.db`` in the user data directory."""
    import os

    env = os.environ.get("LLM_WORKER_DB")
    if env:
        return env
    from platformdirs import user_data_path

    return str(user_data_path("llm-worker", appauthor=False) / "sessions.db")
