"""Persistence: SQLite history appends per second with the settings `SQLiteStore` ships.

The database lives in a temporary directory under ``benchmarks/results`` (on disk, not a tmpfs
``/tmp``). Two paths, each one transaction per append (WAL, ``synchronous=NORMAL``, the default):

* *session appends*: ``session.extend([item])`` in a loop — the store's own cost, wall clock;
* *worker commit path*: a session-bound worker on a zero-pace offline model runs many short runs;
  each commit (the prompt, the answer) is written synchronously by the session's commit listener.
  Reported from the store's own ``append_stats`` (time inside the append transaction, so the
  model and worker are not counted), plus the end-to-end runs per second, which also include the
  two run-marker transactions per run.

``synchronous=FULL`` (an fsync per commit) is measured for information only.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from llm_worker import Worker
from llm_worker.items import AssistantMessage, TextPart
from llm_worker.models.offline import OfflineModel
from llm_worker.store import SQLiteStore

from ._common import US, Row, Target

SECTION = "persistence (SQLite appends, one transaction each)"
TARGET = Target("appends_per_s", ">=", 5000, "/s")
RESULTS = Path(__file__).resolve().parent / "results"
TEXT = "The quick brown fox stops at once when asked and keeps every word it said. " * 3


def session_appends(directory: Path, count: int, synchronous: Any = "NORMAL") -> dict[str, Any]:
    """``count`` single-item ``session.extend`` calls; appends per second, wall clock."""
    item = AssistantMessage(parts=(TextPart(text=TEXT),))
    with (
        SQLiteStore(directory / f"raw-{synchronous}.db", synchronous=synchronous) as store,
        store.open_session("bench") as session,
    ):
        for _ in range(20):  # warm-up
            session.extend([item])
        started = time.perf_counter()
        for _ in range(count):
            session.extend([item])
        elapsed = time.perf_counter() - started
        stats = store.append_stats
    return {
        "appends": count,
        "appends_per_s": round(count / elapsed),
        "mean_us": round(elapsed / count * 1e6, 1),
        "max_ms": round(stats.max * 1000, 3),
    }


async def _worker_runs(directory: Path, runs: int) -> dict[str, Any]:
    with (
        SQLiteStore(directory / "worker.db") as store,
        store.open_session("bench", model="offline") as session,
    ):
        worker = Worker(OfflineModel(pace=0), history=session.history)
        session.attach(worker)
        await worker.run("warm up")
        store.append_stats.count, store.append_stats.total = 0, 0.0
        started = time.perf_counter()
        for index in range(runs):
            await worker.run(f"Say something short, please ({index}).")
        elapsed = time.perf_counter() - started
        stats = store.append_stats
        return {
            "runs": runs,
            "appends": stats.count,
            "appends_per_s": round(stats.count / stats.total),
            "mean_us": round(stats.mean * 1e6, 1),
            "max_ms": round(stats.max * 1000, 3),
            "runs_per_s": round(runs / elapsed),
        }


def run(count: int = 5000, runs: int = 1000, full_count: int = 300) -> list[Row]:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS, prefix="persist-", suffix=".tmp") as tmp:
        directory = Path(tmp)
        raw = session_appends(directory, count)
        worker = anyio.run(_worker_runs, directory, runs)
        full = session_appends(directory, full_count, "FULL")
    return [
        Row(
            SECTION,
            f"{US} session.extend() [NORMAL, shipped]",
            raw,
            f"{raw['appends_per_s']:,} appends/s ({raw['mean_us']:.0f} µs each, max "
            f"{raw['max_ms']:.1f} ms)",
            (TARGET,),
        ),
        Row(
            SECTION,
            f"{US} worker commit path [NORMAL, shipped]",
            worker,
            f"{worker['appends_per_s']:,} appends/s ({worker['mean_us']:.0f} µs each, max "
            f"{worker['max_ms']:.1f} ms); {worker['runs_per_s']:,} runs/s end to end",
            (TARGET,),
        ),
        Row(
            SECTION,
            f"{US} session.extend() [FULL, opt-in]",
            full,
            f"{full['appends_per_s']:,} appends/s ({full['mean_us']:.0f} µs each)",
            notes="an fsync per commit: for information, no target",
        ),
    ]


if __name__ == "__main__":
    from ._common import print_table

    print_table(run())
