"""Sessions bound to workers: persistence at every commit, locks across processes, recovery."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from llm_worker import Cancelled, Pause, ToolContext, Worker, tool
from llm_worker.events import ItemCommitted
from llm_worker.history import CRASH_RESULT
from llm_worker.hooks import HookContext, Hooks
from llm_worker.items import AssistantMessage, Note, ToolCall, ToolResult, UserMessage
from llm_worker.models import Model
from llm_worker.models.offline import OfflineModel
from llm_worker.store import Session, SessionLocked, SQLiteStore
from llm_worker.testing import cancellation_sweep, history_violations
from llm_worker.testing._scripted import Script, ScriptedModel

# -- helpers -----------------------------------------------------------------------------------


@tool
async def count(to: int, ctx: ToolContext) -> str:
    """Count slowly, returning what was counted when cancelled."""
    done: list[str] = []
    for n in range(1, to + 1):
        with anyio.move_on_after(0.01):
            await ctx.token.wait()
        if ctx.cancelled:
            return " ".join(done)
        done.append(str(n))
    return " ".join(done)


@tool
async def tick(to: int, ctx: ToolContext) -> str:
    """Count without sleeping (one checkpoint per number): deterministic for the sweep."""
    done: list[str] = []
    for n in range(1, to + 1):
        await anyio.lowlevel.checkpoint()
        if ctx.cancelled:
            break
        done.append(str(n))
    return " ".join(done)


@tool
def hang() -> str:
    """Stands for a tool that was running when the process died."""
    return "ran again"


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 20) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=5)
            raise AssertionError(f"child ended before {expected!r}: {err}")
        if line.strip() == expected:
            return
    raise AssertionError(f"no {expected!r} within {timeout}s")


def attached(session: Session, model: Model, **kwargs: Any) -> Worker:
    """A worker on the session's history and system prompt, attached to it (as callers do)."""
    worker = Worker(model, history=session.history, system=session.system, **kwargs)
    session.attach(worker)
    return worker


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)


HOLDER = """
    import sys, time
    from llm_worker.store import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    session = store.open_session(sys.argv[2])
    print("ready", flush=True)
    time.sleep(float(sys.argv[3]))
    session.close()
    print("released", flush=True)
    time.sleep(30)
"""

CRASHER = """
    import sys, anyio
    from llm_worker import Worker, tool
    from llm_worker.store import SQLiteStore
    from llm_worker.testing._scripted import ScriptedModel
    from llm_worker.testing._scripted import Script

    @tool
    async def hang() -> str:
        "Never returns."
        await anyio.sleep_forever()

    scenario = sys.argv[3]
    if scenario == "stream":
        script = Script.text("half an answer that never ends", chunks=3, then_hang=True)
    else:
        script = Script.tool_calls(("hang", {}, "call_h"), text="Calling hang.")
    store = SQLiteStore(sys.argv[1])
    session = store.open_session(sys.argv[2], model="scripted")
    worker = Worker(ScriptedModel([script]), tools=[hang], history=session.history)
    session.attach(worker)
    worker.on_commit(lambda items: print("committed", *[i.type for i in items], flush=True))

    async def main():
        await worker.run("go")
    anyio.run(main)
"""


# -- locks -------------------------------------------------------------------------------------


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        first = store.open_session("s")
        with pytest.raises(SessionLocked, match="in use by this process"):
            store.open_session("s")
        with SQLiteStore(tmp_path / "s.db") as other, pytest.raises(SessionLocked):
            other.open_session("s")  # a second store (connection) in the same process too
        store.open_session("another").close()  # other sessions are free
        first.close()
        store.open_session("s").close()


def test_every_path_to_the_file_shares_the_locks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with SQLiteStore(tmp_path / "real" / "s.db") as store, store.open_session("s"):
        for other_path in (tmp_path / "link" / "s.db", tmp_path / "real" / ".." / "real" / "s.db"):
            with SQLiteStore(other_path) as other, pytest.raises(SessionLocked):
                other.open_session("s")


def test_another_process_holding_the_session(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    SQLiteStore(db).close()
    holder = spawn(HOLDER, db, "shared", "0.6")
    try:
        wait_for_line(holder, "ready")
        with SQLiteStore(db) as store:
            with pytest.raises(SessionLocked) as caught:
                store.open_session("shared")
            assert caught.value.pid == holder.pid
            assert f"pid {holder.pid}" in str(caught.value)
            assert store.session_info("shared").in_use_by == holder.pid
            started = time.monotonic()
            with store.open_session("shared", wait=True) as session:  # released after 0.6 s
                assert time.monotonic() - started < 10
                assert session.history == []
    finally:
        kill9(holder)


def test_waiting_is_bounded(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    SQLiteStore(db).close()
    holder = spawn(HOLDER, db, "shared", "30")
    try:
        wait_for_line(holder, "ready")
        with SQLiteStore(db) as store:
            started = time.monotonic()
            with pytest.raises(SessionLocked, match=r"waited 0\.3s"):
                store.open_session("shared", wait=0.3)
            assert 0.3 <= time.monotonic() - started < 3
    finally:
        kill9(holder)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    SQLiteStore(db).close()
    holder = spawn(HOLDER, db, "shared", "30")
    wait_for_line(holder, "ready")
    kill9(holder)
    with SQLiteStore(db) as store:
        assert store.session_info("shared").in_use_by is None  # the recorded pid is dead
        store.open_session("shared").close()  # no waiting, no manual clean-up


# -- crash recovery ----------------------------------------------------------------------------


def crash(db: str, name: str, scenario: str, commits: int) -> None:
    """Run a worker in a child process and kill -9 it after ``commits`` commits."""
    child = spawn(CRASHER, db, name, scenario)
    try:
        assert child.stdout is not None
        for _ in range(commits):
            line = child.stdout.readline()
            assert line.startswith("committed"), (line, child.stderr and child.stderr.read())
        time.sleep(0.05)
    finally:
        kill9(child)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Databases left by a process killed mid-stream and mid-tools (made once per module)."""
    made = {}
    for scenario, commits in (("stream", 1), ("tools", 2)):
        db = tmp_path_factory.mktemp(scenario) / "s.db"
        crash(str(db), "s", scenario, commits)
        made[scenario] = db
    return made


def copy_of(crashed: dict[str, Path], scenario: str, tmp_path: Path) -> str:
    """A private copy of a crashed database (with its WAL: that is where the commits are)."""
    source = crashed[scenario]
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", tmp_path / f"s.db{suffix}")
    return str(tmp_path / "s.db")


async def test_crash_mid_stream_is_recovered_with_a_note(
    tmp_path: Path, crashed: dict[str, Path]
) -> None:
    db = copy_of(crashed, "stream", tmp_path)  # killed after committing the user message
    with SQLiteStore(db) as store:
        assert store.runs("s")[-1].outcome is None  # the run never ended
        with store.open_session("s") as session:
            assert session.recovery is not None
            assert session.recovery.outcome == "crashed"
            assert "crash" in session.recovery.describe()
            note = session.recovery.note
            assert isinstance(note, Note)
            assert "crash" in note.text
            assert [i.type for i in session.history] == ["user", "note"]
            assert session.resumable
            model = ScriptedModel(["Here is the whole answer."])
            worker = attached(session, model)
            result = await worker.resume()
            assert result.output == "Here is the whole answer."
            assert model.requests[0].history[-1] == note  # the model was told
        assert store.runs("s")[0].outcome == "crashed"
        assert history_violations(store.load_history("s")) == []
        with store.open_session("s") as again:  # recovered once, not again
            assert again.recovery is None
            assert len(again.history) == 3


async def test_crash_during_tools_resume_runs_the_calls_again(
    tmp_path: Path, crashed: dict[str, Path]
) -> None:
    db = copy_of(crashed, "tools", tmp_path)  # killed while the tool ran
    with SQLiteStore(db) as store, store.open_session("s") as session:
        assert session.recovery is not None
        assert [c.call_id for c in session.recovery.pending_calls] == ["call_h"]
        assert session.recovery.note is None  # a note may not come before the results
        assert history_violations(session.history) != []  # as left by the crash
        worker = attached(session, ScriptedModel(["done"]), tools=[hang])
        result = await worker.resume()
        assert result.status == "finished"
        results = [i for i in session.history if isinstance(i, ToolResult)]
        assert [(r.call_id, r.content) for r in results] == [("call_h", "ran again")]
        stored = store.load_history("s")
        assert history_violations(stored) == []
        # The model is told about the crash, right after the results of the calls it cut off.
        assert [i.type for i in stored][-3:] == ["tool_result", "note", "assistant"]
        assert "crash" in stored[-2].text  # type: ignore[union-attr]


async def test_crash_during_tools_then_new_input_settles_the_calls(
    tmp_path: Path, crashed: dict[str, Path]
) -> None:
    db = copy_of(crashed, "tools", tmp_path)
    with SQLiteStore(db) as store, store.open_session("s") as session:
        added = session.settle_pending()
        assert [i.type for i in added] == ["tool_result", "note"]
        assert isinstance(added[0], ToolResult)
        assert added[0].content == CRASH_RESULT
        worker = attached(session, ScriptedModel(["new answer"]), tools=[hang])
        await worker.run("something else")
        history = store.load_history("s")
        assert history_violations(history) == []
        assert [i.type for i in history][-3:] == ["note", "user", "assistant"]


# -- runs in process ----------------------------------------------------------------------------


async def test_every_commit_is_on_disk_before_it_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store, SQLiteStore(db) as reader:
        session = store.open_session("s")
        worker = attached(session, OfflineModel(pace=0), tools=[count])
        checked = 0
        async with worker.stream("count to 3") as run:
            async for event in run:
                if isinstance(event, ItemCommitted):
                    assert event.item in reader.load_history("s")
                    checked += 1
        assert checked == len(session.history) == 5
        assert reader.load_history("s") == worker.history
        session.close()


async def test_interrupted_run_is_restored_and_the_model_told(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        with store.open_session("s", model="offline") as session:
            worker = attached(session, OfflineModel(pace=0.01))
            async with anyio.create_task_group() as group:

                async def stop_soon() -> None:
                    await anyio.sleep(0.1)
                    worker.cancel("interrupted by Ctrl-C", kind="keyboard_interrupt")

                group.start_soon(stop_soon)
                with pytest.raises(Cancelled):
                    await worker.run("tell me a long story")
            before = worker.history
        run = store.runs("s")[-1]
        assert (run.outcome, run.kind, run.reason) == (
            "cancelled",
            "keyboard_interrupt",
            "interrupted by Ctrl-C",
        )
        with store.open_session("s") as session:
            assert session.history[: len(before)] == before
            message = session.history[1]
            assert isinstance(message, AssistantMessage)
            assert message.interrupted
            assert message.text
            assert session.recovery is not None
            assert session.recovery.outcome == "cancelled"
            assert isinstance(session.history[-1], Note)
            assert "keyboard_interrupt: interrupted by Ctrl-C" in session.history[-1].text
            result = await attached(session, OfflineModel(pace=0)).run("go on")
            assert result.output.startswith("(My previous answer was interrupted.)")
            notes = [i for i in session.history if isinstance(i, Note)]
            assert len(notes) == 1  # the fresh worker did not add a second one


class PauseBeforeTools(Hooks):
    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Pause:
        return Pause("needs approval")


async def test_a_paused_run_is_resumed_after_reopening(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        with store.open_session("s") as session:
            worker = attached(
                session, OfflineModel(pace=0), tools=[count], hooks=[PauseBeforeTools()]
            )
            assert (await worker.run("count to 2")).status == "paused"
        assert store.session_info("s").status == "paused"
        with store.open_session("s") as session:
            assert session.recovery is None  # a pause is a normal end
            assert [c.name for c in session.pending_calls] == ["count"]
            result = await attached(session, OfflineModel(pace=0), tools=[count]).resume()
            assert result.status == "finished"
            assert "1 2" in result.output
        history = store.load_history("s")
        assert history_violations(history) == []
        assert store.runs("s")[-1].outcome == "finished"


async def test_external_cancellation_is_recorded(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store, store.open_session("s") as session:
        worker = attached(session, OfflineModel(pace=0.01))
        with anyio.move_on_after(0.05):
            await worker.run("a long answer")
        run = store.runs("s")[-1]
        assert (run.outcome, run.kind) == ("cancelled", "external")
        assert store.load_history("s") == worker.history


async def test_attach_checks(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store, store.open_session("s") as session:
        session.extend([UserMessage(text="earlier")])
        with pytest.raises(ValueError, match="history"):
            session.attach(Worker(OfflineModel(pace=0)))
        worker = Worker(OfflineModel(pace=0), history=session.history)
        detach = session.attach(worker)
        with pytest.raises(RuntimeError, match="already has a worker"):
            session.attach(Worker(OfflineModel(pace=0), history=session.history))
        with pytest.raises(RuntimeError, match="before attaching"):
            session.extend([UserMessage(text="no")])
        detach()
        assert "_drive" not in worker.__dict__  # the run watcher is gone
        await worker.run("not persisted")
        assert len(store.load_history("s")) == 1


async def test_store_matches_memory_at_every_cancellation_point(tmp_path: Path) -> None:
    """The cancellation sweep with a store attached: after every cancel, disk == memory."""
    store = SQLiteStore(tmp_path / "s.db")
    names = itertools.count()
    open_sessions: list[Any] = []

    def make_worker() -> Worker:
        session = store.open_session(f"sweep-{next(names)}")
        open_sessions.append(session)
        model = ScriptedModel(
            [Script.tool_calls(("tick", {"to": 3}), text="Counting."), "Counted."]
        )
        return attached(session, model, tools=[tick])

    def check(worker: Worker, outcome: object) -> None:
        session = open_sessions[-1]
        assert store.load_history(session.name) == worker.history
        assert session.unsaved == 0

    try:
        report = await cancellation_sweep(make_worker, "count please", follow_up=None, check=check)
    finally:
        for session in open_sessions:
            session.close()
        store.close()
    print(f"\nsweep with a store: {report.checkpoints} checkpoints, {report.cancelled} cancelled")
    report.raise_for_violations()
    assert report.cancelled > 0
    assert report.checkpoints > 5


def test_lock_files_are_kept_beside_the_database(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.open_session("x").close()
    locks = list((tmp_path / "s.db-locks").iterdir())
    assert len(locks) == 1
    assert locks[0].suffix == ".lock"
    assert locks[0].read_text() == ""  # released: no pid left behind
    assert os.stat(tmp_path / "s.db-locks").st_mode & 0o077 == 0


async def test_a_failed_runs_error_text_is_never_in_the_note_after_reopening(
    tmp_path: Path,
) -> None:
    from llm_worker import ModelError

    db = tmp_path / "leak.db"
    leak = ModelError("401: invalid key sk-live-SECRET for this org", status_code=401)
    with SQLiteStore(db) as store, store.open_session("s") as session:
        worker = attached(session, ScriptedModel([Script.error(leak, after=1)]))
        with pytest.raises(ModelError):
            await worker.run("go")
    with SQLiteStore(db) as store, store.open_session("s") as session:
        assert session.recovery is not None
        assert session.recovery.note is not None
        told = session.recovery.note.text
    assert "sk-live-SECRET" not in told
    assert "invalid key" not in told
