"""The crash test: ``kill -9`` the CLI at random moments and check that nothing is lost.

Several sessions in one database file are driven at once (so appends from different processes
interleave), each by a chain of ``llm-worker run --json`` processes that are killed at random
moments: during start-up (imports, opening the store, taking the lock, recovering the previous
crash), while the model streams, while tools run, or after the run. After every kill:

* the database opens and passes ``PRAGMA integrity_check``;
* no completed item is lost: every item the process reported as committed (an ``item`` JSON
  event, printed only after the item was written) is in the database, in the same order;
* the history is valid for every provider once the unanswered calls are answered the way
  ``resume()`` answers them (it re-runs them): ``history_violations`` finds nothing;
* the next process in the chain opens the same session at once (no stale lock) and continues.

At the end every session completes one more run normally and is valid as it stands.
``LLM_WORKER_SOAK_KILLS=N`` runs the slow soak variant with N kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llm_worker.items import Item, ToolResult, unanswered_calls
from llm_worker.store import SessionNotFound, SQLiteStore
from llm_worker.testing import history_violations

from ._helpers import MODULE, cli_env, run_cli

PROMPTS = (
    "get_weather for Paris and slow_count to 4 step 0.05",
    "tell me how cancellation works",
    "slow_count to 3 step 0.08 and current_time",
    "get_weather for Lima",
)
PHASES = {
    "run_started": "starting the run",
    "item": "committing",
    "turn_started": "streaming",
    "text_delta": "streaming",
    "tool_call_start": "streaming",
    "tool_call_delta": "streaming",
    "tool_call_end": "streaming",
    "tool_started": "running tools",
    "tool_finished": "running tools",
    "turn_ended": "between turns",
    "run_finished": "after the run",
}


@dataclass
class Tally:
    """What the crash test did and found (shared by the driver threads)."""

    kills: int = 0
    completed_runs: int = 0
    items_checked: int = 0  # stored items validated, summed over every check
    reported_verified: int = 0  # items a killed process reported committed, found stored
    losses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self) -> str:
        phases = ", ".join(f"{name} {count}" for name, count in self.phases.most_common())
        return (
            f"kills {self.kills} (completed runs {self.completed_runs}); items checked "
            f"{self.items_checked}; reported-committed items verified {self.reported_verified}; "
            f"losses {len(self.losses)}; problems {len(self.problems)}; killed while: {phases}"
        )


def live_and_die(db: Path, session: str, prompt: str, rng: random.Random) -> tuple[list[str], str]:
    """Run one CLI process and kill -9 it at a random moment; return reported ids and phase."""
    proc = subprocess.Popen(
        [*MODULE, "run", "--json", "--tools", "demo", "--session", session, prompt],
        env=cli_env(db, pace=0.003),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reported: list[str] = []
    last = ["startup"]
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill: it was never fully reported
            if not line.endswith("\n"):
                continue
            last[0] = event["type"]
            if event["type"] == "item":
                reported.append(event["item"]["id"])
            if event["type"] != "session":  # the first line names the session: not started yet
                started.set()

    reader = threading.Thread(target=read)
    reader.start()
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0, 0.8))  # somewhere in start-up, recovery, or the run
    else:
        started.wait(timeout=20)
        time.sleep(rng.uniform(0, 0.35))  # a run streams and runs tools for ~0.2-0.4 s
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=20)
    reader.join(timeout=20)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    if not alive and proc.returncode != 0:
        raise AssertionError(f"the CLI failed on its own ({proc.returncode}): {err}")
    return reported, (PHASES.get(last[0], last[0]) if alive else "")


def check(db: Path, session: str, reported: list[str], tally: Tally) -> None:
    items: list[Item] = []
    integrity = "ok"
    if db.exists():  # a process killed during start-up may not have created it
        with SQLiteStore(db, create=False) as store:
            integrity = store._file.conn.execute("PRAGMA integrity_check").fetchone()[0]
            with contextlib.suppress(SessionNotFound):
                items = store.load_history(session)
    stored = [item.id for item in items]
    positions = {item_id: index for index, item_id in enumerate(stored)}
    lost = [item_id for item_id in reported if item_id not in positions]
    found = [positions[item_id] for item_id in reported if item_id in positions]
    answered = items + [
        ToolResult(call_id=call.call_id, name=call.name, content="(re-run)", status="ok")
        for call in unanswered_calls(items)
    ]
    problems = history_violations(answered)
    with tally.lock:
        tally.items_checked += len(items)
        tally.reported_verified += len(found)
        tally.losses.extend(f"{session}: {item_id}" for item_id in lost)
        if integrity != "ok":
            tally.problems.append(f"{session}: integrity_check says {integrity}")
        if found != sorted(found):
            tally.problems.append(f"{session}: reported items stored out of order")
        tally.problems.extend(f"{session}: {problem}" for problem in problems)


def drive(db: Path, session: str, kills: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    done = 0
    while done < kills:
        reported, phase = live_and_die(db, session, rng.choice(PROMPTS), rng)
        check(db, session, reported, tally)
        with tally.lock:
            if phase:
                tally.kills += 1
                tally.phases[phase] += 1
                done += 1
            else:
                tally.completed_runs += 1


def crash_test(tmp_path: Path, kills: int, sessions: int = 4) -> Tally:
    db = tmp_path / "crash.db"
    tally = Tally()
    seed = int(os.environ.get("LLM_WORKER_CRASH_SEED", random.randrange(1 << 30)))
    print(f"\ncrash test seed {seed} (LLM_WORKER_CRASH_SEED={seed} repeats it)")
    errors: list[BaseException] = []

    def guarded(run: Callable[[], None]) -> Callable[[], None]:
        def wrapper() -> None:
            try:
                run()
            except BaseException as exc:
                errors.append(exc)

        return wrapper

    share = -(-kills // sessions)
    threads = [
        threading.Thread(
            target=guarded(lambda n=n: drive(db, f"crash-{n}", share, seed + n, tally))
        )
        for n in range(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    env = cli_env(db, pace=0.0)
    for n in range(sessions):  # every session goes on normally after all that
        done = run_cli(
            "run", "--tools", "demo", "--session", f"crash-{n}", "get_weather for Oslo", env=env
        )
        assert done.returncode == 0, done.stderr
        with SQLiteStore(db, create=False) as store:
            assert history_violations(store.load_history(f"crash-{n}")) == []
    print(tally.report())
    return tally


@pytest.mark.timeout(300)  # ~20 s on an idle 2-core machine; kills and restarts scale with load
def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    tally = crash_test(tmp_path, kills=52)
    assert tally.kills >= 50
    assert tally.losses == []
    assert tally.problems == []
    assert tally.items_checked > 0
    assert len(tally.phases) >= 3  # the kills landed in different places


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    not os.environ.get("LLM_WORKER_SOAK_KILLS"), reason="set LLM_WORKER_SOAK_KILLS=N to soak"
)
def test_soak(tmp_path: Path) -> None:
    tally = crash_test(tmp_path, kills=int(os.environ["LLM_WORKER_SOAK_KILLS"]), sessions=6)
    assert tally.losses == []
    assert tally.problems == []
