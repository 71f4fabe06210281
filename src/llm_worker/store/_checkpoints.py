"""`Checkpointer`: the WAL copied into the database by a helper thread, off the commit path.

In WAL mode a commit appends to the ``-wal`` file; now and then a *checkpoint* copies those pages
into the database, with two fsyncs at ``synchronous=NORMAL``. Left to SQLite, the commit that
crosses the threshold does it, and that commit stalls the event loop for milliseconds (on this
project's test machine checkpoints were half the cost of every commit, amortised).

Invariants:
* The writer's connection checkpoints on its own only past `FALLBACK_PAGES` (its SQLite
  auto-checkpoint threshold): if this thread falls behind or fails, the WAL stays bounded.
* The writer asks for a checkpoint every `COMMITS_PER_CHECKPOINT` commits (`due`, which never
  blocks); the thread runs one ``PASSIVE`` checkpoint per request, on a connection of its own,
  which never waits for a writer or a reader. Durability is SQLite's own: a checkpoint only
  copies frames that were committed.
* It checkpoints only the file the writer has open (same device and inode): never a file that
  replaced it at the path. `exclusive` keeps it out of the writer's own checkpoint of a moved
  file, which must empty that file's WAL.
* `stop` ends the thread and joins it, bounded; the thread is a daemon, so it never holds up
  the process's exit. Errors are logged, never raised into a commit.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger("llm_worker.store")

#: A request every this many commits (a commit of the worker writes 3–4 pages): about the
#: thousand pages at which SQLite would checkpoint by itself.
COMMITS_PER_CHECKPOINT = 256
#: The writer's own auto-checkpoint threshold, in pages (16 MiB of 4 KiB pages).
FALLBACK_PAGES = 4096
#: How long `stop` waits for a checkpoint in progress.
STOP_TIMEOUT = 5.0


class Checkpointer:
    """Checkpoints the WAL of the database at ``path`` in a helper thread, when asked."""

    def __init__(
        self,
        path: Path,
        identity: Callable[[], tuple[int, int] | None],
        busy_timeout: float,
    ) -> None:
        """``identity`` says which file the writer has open now (None: none)."""
        self._path = path
        self._identity = identity
        self._busy_timeout = busy_timeout
        self._commits = 0
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._running = threading.Lock()  # held while a checkpoint runs

    def due(self) -> None:
        """A commit was made: ask for a checkpoint if enough were (never blocks)."""
        self._commits += 1
        if self._commits % COMMITS_PER_CHECKPOINT or self._stopping:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"llm-worker checkpoints {self._path.name}", daemon=True
            )
            self._thread.start()
        self._wanted.set()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No checkpoint of this thread runs during the block (it waits for one running)."""
        with self._running:
            yield

    def stop(self) -> None:
        """End the thread, waiting up to `STOP_TIMEOUT` for a checkpoint in progress."""
        self._stopping = True
        self._wanted.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                logger.warning("a checkpoint of %s did not end in %gs", self._path, STOP_TIMEOUT)

    def _serve(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            with self._running:
                self._checkpoint()

    def _checkpoint(self) -> None:
        if not self._writers_file():
            return  # another file at the path (the writer checks it before it writes), or none
        try:
            conn = sqlite3.connect(str(self._path), timeout=self._busy_timeout)
        except sqlite3.Error as exc:
            logger.debug("no checkpoint of %s: %s", self._path, exc)
            return
        try:
            if self._writers_file():
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            logger.debug("checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()

    def _writers_file(self) -> bool:
        try:
            info = os.stat(self._path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity()
