"""Persistence: SQLite history appends per second with the settings `SQLiteStore` ships.

The database lives in a temporary directory under ``benchmarks/results`` (on disk, not a tmpfs
``/tmp``). Two paths, each one transaction per append (WAL, ``synchronous=NORMAL``, the default):

* *session appends*: ``session.extend([item])`` in a loop — the store's own cost, wall clock;
* *commits through the worker*: conversations of 20 runs (each: the prompt, a tool call, its
  result, the answer — four commits) on a zero-pace scripted model, run with a session attached
  and without one, alternated in the same process. The cost of a commit is the wall-clock
  difference divided by the commits: everything persistence adds (the listener, the JSON, the
  run markers, SQLite) and nothing it does not.

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
from llm_worker.store import SQLiteStore
from llm_worker.testing import Script, ScriptedModel

from ._common import US, Row, Target

SECTION = "persistence (SQLite appends, one transaction each)"
TARGET = Target("appends_per_s", ">=", 5000, "/s")
COMMIT_TARGET = Target("commits_per_s", ">=", 5000, "/s")
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


CONVERSATION = 20  # runs per session: a conversation, so the history (and request) stays bounded
DURABILITY = (
    "WAL, synchronous=NORMAL: every commit survives a crash or kill -9; "
    "a power loss may drop the last few"
)


def _script(runs: int) -> list[Script]:
    """Per run: a tool call, then a short answer (with the prompt and the result: 4 commits)."""
    turn = [Script.tool_calls(("lookup", {"key": "fox"})), Script.text("Found it.", chunks=2)]
    return turn * runs


async def lookup(key: str) -> str:
    """A tool that answers at once."""
    return f"{key}: found"


async def _conversations(directory: Path | None, runs: int) -> tuple[float, int, int]:
    """``runs`` runs in conversations of `CONVERSATION`, persisted to ``directory`` (None: not
    persisted); returns (seconds, worker commits, store transactions)."""
    commits = transactions = 0
    elapsed = 0.0
    store = SQLiteStore(directory / "worker.db") if directory else None
    try:
        for number in range(0, runs, CONVERSATION):
            model = ScriptedModel(_script(CONVERSATION))
            session = store.open_session(f"c{number}", model="scripted") if store else None
            worker = Worker(model, history=session.history if session else [], tools=[lookup])
            if session:
                session.attach(worker)
            count = 0

            def counted(items: object) -> None:
                nonlocal count
                count += 1

            worker.on_commit(counted)
            started = time.perf_counter()
            for index in range(CONVERSATION):
                await worker.run(f"Look up the fox, please ({index}).")
            elapsed += time.perf_counter() - started
            commits += count
            if session:
                session.close()
        if store:
            transactions = store.append_stats.count
    finally:
        if store:
            store.close()
    return elapsed, commits, transactions


async def _worker_commits(directory: Path, runs: int, rounds: int = 5) -> dict[str, Any]:
    """Persisted cost per worker commit: runs with a session minus the same runs without one,
    alternated in the same process (wall clock, everything the session adds included: the
    listener, the JSON, the run markers, SQLite)."""
    await _conversations(None, CONVERSATION)  # warm-up
    with_store = without = 0.0
    commits = transactions = 0
    for round_number in range(rounds):
        bare, _, _ = await _conversations(None, runs)
        folder = directory / f"round{round_number}"
        folder.mkdir()
        persisted, commits, transactions = await _conversations(folder, runs)
        without += bare
        with_store += persisted
    per_commit = max(with_store - without, 1e-9) / (commits * rounds)
    return {
        "runs": runs * rounds,
        "commits": commits * rounds,
        "commits_per_run": round(commits / runs, 2),
        "item_transactions_per_commit": round(transactions / commits, 2),
        "commit_cost_us": round(per_commit * 1e6, 1),
        "commits_per_s": round(1 / per_commit),
        "runs_per_s_persisted": round(runs * rounds / with_store),
        "runs_per_s_in_memory": round(runs * rounds / without),
        "durability": DURABILITY,
    }


def run(count: int = 5000, runs: int = 200, full_count: int = 300) -> list[Row]:
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS, prefix="persist-", suffix=".tmp") as tmp:
        directory = Path(tmp)
        raw = session_appends(directory, count)
        worker = anyio.run(_worker_commits, directory, runs)
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
            f"{US} commits through the worker [NORMAL, shipped]",
            worker,
            f"{worker['commits_per_s']:,} commits/s ({worker['commit_cost_us']:.0f} µs each, "
            f"wall clock, persisted minus in-memory); {worker['runs_per_s_persisted']:,} runs/s "
            f"persisted vs {worker['runs_per_s_in_memory']:,} in memory",
            (COMMIT_TARGET,),
            notes=DURABILITY,
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
