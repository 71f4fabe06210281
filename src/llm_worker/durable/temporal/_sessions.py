"""Histories by reference: a session's history lives in the store; Temporal carries its name.

A history can outgrow Temporal's payload limit, so it never travels through Temporal: the agent
activity opens the session in the store shared by the agent workers, builds the worker on its
history and attaches the session, so every committed item is written as it is committed — the
checkpoint a resumed attempt starts from. A run's own items travel in its outcome, inline or
(when too large) as positions in the session (`ItemsRef`).

Invariants:
* Each run marks the session with its run key and where its items begin (``temporal.run``,
  ``temporal.base``, written when the session is opened, before the run commits anything). A
  later attempt of the same run finds its own mark: it resumes (the input is not sent twice,
  completed tool calls are not run again) if its input was committed, else it sends the input.
* The items of a run are ``history[base:]``, across every attempt (a crashed attempt's items
  and the recovery note included), so the caller gets everything the run kept.
* A run whose last attempt died and that was then cancelled (so not retried) is settled: its
  items are read back for the caller and its unanswered calls answered (`settle`).
* Opening waits for the session's lock (a superseded or given-up attempt may still be cleaning
  up) in a thread, bounded by ``wait``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import anyio.to_thread

from ...items import Item, UserMessage
from ...store import Session, SessionNotFound, SQLiteStore
from ._payloads import ItemsRef, RunRequest

__all__ = ["OpenedSession", "SessionHistories"]

RUN_MARK = "temporal.run"
BASE_MARK = "temporal.base"


@dataclass
class OpenedSession:
    """A session opened for one run: ``base`` is where the run's items begin."""

    session: Session
    base: int
    resume: bool  # a previous attempt of this run committed its input: resume, send nothing

    def run_items(self) -> list[Item]:
        return self.session.history[self.base :]


class SessionHistories:
    """The agent workers' session store, as seen by the Temporal integration."""

    def __init__(self, store: SQLiteStore | str | os.PathLike[str], *, wait: float = 30.0) -> None:
        self._owned = not isinstance(store, SQLiteStore)
        self.store = store if isinstance(store, SQLiteStore) else SQLiteStore(store)
        self.wait = wait

    def close(self) -> None:
        if self._owned:
            self.store.close()

    async def open(self, request: RunRequest) -> OpenedSession:
        """Open ``request``'s session for its run. Cancellation: the thread finishes the open."""
        return await anyio.to_thread.run_sync(self._open, request)

    def _open(self, request: RunRequest) -> OpenedSession:
        try:
            info = self.store.session_info(request.session)
            mark, count = info.metadata, info.items
        except SessionNotFound:
            mark, count = {}, 0
        again = mark.get(RUN_MARK) == request.run_key and BASE_MARK in mark
        base = int(mark[BASE_MARK]) if again else count
        session = self.store.open_session(
            request.session,
            metadata={RUN_MARK: request.run_key, BASE_MARK: str(base)},
            wait=self.wait,
        )
        history = session.history
        resume = again and any(isinstance(item, UserMessage) for item in history[base:])
        return OpenedSession(session, base, resume)

    async def settle(self, request: RunRequest) -> tuple[list[Item], int]:
        """What ``request``'s run kept, when its last attempt died without an outcome.

        Calls it left without a result are answered (and the model will be told of the crash);
        returns the run's items and where they begin. Nothing if the run never opened the
        session. Cancellation: the thread finishes.
        """
        return await anyio.to_thread.run_sync(self._settle, request)

    def _settle(self, request: RunRequest) -> tuple[list[Item], int]:
        try:
            mark = self.store.session_info(request.session).metadata
        except SessionNotFound:
            return [], 0
        if mark.get(RUN_MARK) != request.run_key or BASE_MARK not in mark:
            return [], 0
        base = int(mark[BASE_MARK])
        with self.store.open_session(request.session, wait=self.wait) as session:
            session.settle_pending()
            return session.history[base:], base

    def load_items(self, ref: ItemsRef) -> list[Item]:
        """The items ``ref`` points at (a run's items kept by reference)."""
        return self.store.load_history(ref.session)[ref.start : ref.stop]
