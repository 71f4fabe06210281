"""Errors of the session store: each says what is wrong in one line a person can act on.

Invariants:
* Whatever goes wrong with the database (SQLite errors, a locked, read-only, removed, replaced
  or corrupt file, text that cannot be encoded) reaches callers as a `StoreError`; only
  arguments that can never work are a `ValueError` or `TypeError`.
* `SessionNotFound` is also a `KeyError`, and prints as its message, not its repr.
"""

from __future__ import annotations

from .._error_base import LLMWorkerError


class StoreError(LLMWorkerError):
    """The database cannot be used: not SQLite, another program's, corrupt, or unwritable."""


class SchemaTooNew(StoreError):
    """The database was written by a newer llm-worker; this version will not touch it."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class SessionLocked(StoreError):
    """Another process (or another `Session` in this one) has the session open.

    ``pid`` is the holder's process id when it could be read, else None.
    """

    def __init__(self, message: str, *, name: str, pid: int | None) -> None:
        super().__init__(message)
        self.name = name
        self.pid = pid


class SessionNotFound(StoreError, KeyError):
    """No session of that name exists (raised by read-only look-ups, never by `open_session`)."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(f"no session named {name!r} in {path}")
        self.name = name

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class PersistenceFailed(StoreError):
    """Items an open session holds could not be written to the database (yet).

    Raised by `Session.flush` and `Session.close`, never from inside a worker's commit: a
    failed write keeps the items in memory and retries them at the next commit, flush or close.
    ``session`` is the session's name, ``unsaved`` how many items are still only in memory;
    ``__cause__`` is the write's own error (also a `StoreError`).
    """

    def __init__(self, message: str, *, session: str, unsaved: int) -> None:
        super().__init__(message)
        self.session = session
        self.unsaved = unsaved
