"""A worker bound to a SQLite session: interrupted, the session reopened, the run resumed.

Every item the worker commits is written to the database before the worker goes on, so a stop (or
a crash) keeps what was said, and any process can pick the conversation up later. Offline.
"""

import tempfile
from pathlib import Path

import anyio

from llm_worker import Cancelled, Worker
from llm_worker.models import OfflineModel
from llm_worker.store import SessionLocked, SQLiteStore


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, SQLiteStore(Path(tmp) / "sessions.db") as store:
        # 1. Open (create) a session and bind a worker to it; the run is stopped by its deadline.
        with store.open_session("trip-planning", model="offline", system="Be brief.") as session:
            worker = Worker(OfflineModel(pace=0.02), history=session.history, system=session.system)
            session.attach(worker)  # from now on every commit is written before the worker goes on
            try:
                await worker.run("Tell me about lighthouses.", timeout=0.5)
            except Cancelled as stopped:
                print(f"stopped: {stopped.reason}")

            # While it is open, nobody else (another process, or this one) can open it.
            try:
                store.open_session("trip-planning")
            except SessionLocked as locked:
                print(f"second open refused: {locked}")

        # 2. What is in the file: the listing reads without taking the lock.
        for info in store.sessions():
            print(f"session {info.name}: {info.items} items, status {info.status!r}")

        # 3. Reopen it (as a restarted program would) and continue where it stopped.
        with store.open_session("trip-planning") as session:
            assert session.recovery is not None
            print(f"on reopening: {session.recovery.describe()}")
            for item in session.history:
                interrupted = " (interrupted)" if getattr(item, "interrupted", False) else ""
                print(f"   {item.type}{interrupted}")
            worker = Worker(OfflineModel(pace=0), history=session.history, system=session.system)
            session.attach(worker)
            result = await worker.resume()  # no new input: the model goes on from its last turn
            print(f"resumed: {result.status}: {result.output[:60]}...")

        print("runs recorded:")
        for record in store.runs("trip-planning"):
            print(f"   {record.run_id}: {record.outcome} {record.kind or ''}".rstrip())


if __name__ == "__main__":
    anyio.run(main)
