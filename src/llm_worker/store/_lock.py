"""One lock per session: an OS lock on a small side file, released by the OS when its holder dies.

Invariants:
* The lock is ``flock(LOCK_EX)`` on ``<db>-locks/<hash of the name>.lock`` (``msvcrt.locking`` on
  Windows). The kernel drops it when the holding file descriptor is closed — by `release`, by
  process exit, or by ``kill -9`` — so a crashed holder never locks a session forever and no
  staleness heuristic (pid liveness, timestamps) is needed for correctness.
* ``flock`` locks belong to an open file description, so a second `SessionLock` on the same file
  conflicts even inside one process; descriptors are not inherited by child processes.
* A lock file is deleted only by its holder (`remove`, when the session is deleted). A process
  that opened the old file before it was removed may lock that removed file: so after locking,
  `try_acquire` checks that the path still names the file it locked, and starts again if not.
  The files are empty apart from the holder's pid, which is only used in messages and listings.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _LOCK_OFFSET = 1 << 20  # lock a byte past the pid, so others can still read the pid

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock_path(db_path: Path, name: str) -> Path:
    """Where the lock file of session ``name`` of the database at ``db_path`` lives."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:40]
    return db_path.with_name(db_path.name + "-locks") / f"{digest}.lock"


class SessionLock:
    """An exclusive, non-blocking, crash-safe lock on one session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks. Records this process's pid in the file."""
        if self._fd is not None:
            raise RuntimeError("this SessionLock is already held")
        while True:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _try_lock(fd):
                os.close(fd)
                return False
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder removed meanwhile: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def remove(self) -> None:
        """Delete the lock file while holding it (the session is gone); `release` still ends
        the hold. Others locking it meanwhile notice and lock a new file (`try_acquire`)."""
        if self._fd is None:
            raise RuntimeError("only the holder removes a lock file")
        with contextlib.suppress(OSError):
            self.path.unlink()

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def holder_pid(path: Path) -> int | None:
    """The pid recorded by the last holder, if it is still alive (for messages only)."""
    try:
        text = path.read_text().strip()
        pid = int(text) if text else None
    except (OSError, ValueError):
        return None
    if pid is None or pid <= 0:
        return None
    if pid == os.getpid() or sys.platform == "win32":  # kill(pid, 0) would end it there
        return pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # alive but not ours to signal (PermissionError), or no kill(2) support
        return pid
    return pid
