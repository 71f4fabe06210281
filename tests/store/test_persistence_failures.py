"""Writes that fail: typed errors, nothing lost, and no failure poisoning later commits.

Every test uses real SQLite files: another connection that holds the write lock, a file
removed or replaced under an open session, text that UTF-8 cannot encode.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llm_worker import ToolContext, Worker, tool
from llm_worker.items import AssistantMessage, Item, ToolResult, UserMessage, load_item
from llm_worker.models import Model
from llm_worker.store import PersistenceFailed, Session, SQLiteStore, StoreError
from llm_worker.testing._scripted import Script, ScriptedModel


def with_lone_surrogate(text: str) -> UserMessage:
    """A user message holding a lone surrogate, however items validate their text."""
    message = UserMessage(text="placeholder")
    object.__setattr__(message, "text", text)  # past validation, as a corrupted item would be
    return message


def texts(items: list[Item]) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, UserMessage | AssistantMessage):
            out.append(item.text)
        elif isinstance(item, ToolResult):
            out.append(item.content)
    return out


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock for the duration of the block."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def backup(path: Path, to: Path) -> None:
    """A consistent copy of the database (what a person restores later): a new file."""
    source, target = sqlite3.connect(path), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


# -- text that cannot be encoded ----------------------------------------------------------------


def test_an_item_with_a_lone_surrogate_is_stored_replaced_and_does_not_block_later_items(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        with caplog.at_level(logging.WARNING, logger="llm_worker.store"):
            session.extend([with_lone_surrogate("file-\udcff.txt")])  # never raises
        assert session.unsaved == 0
        assert session.error is None
        assert "not valid Unicode" in caplog.text
        session.extend([UserMessage(text="after")])
        assert session.unsaved == 0
        session.close()
    with SQLiteStore(path) as store:
        assert texts(store.load_history("t")) == ["file-\ufffd.txt", "after"]
    assert b"\xed\xb3\xbf" not in path.read_bytes()  # no CESU-style surrogate bytes on disk


def test_a_split_surrogate_pair_is_joined_back_when_stored(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store, store.open_session("t") as session:
        session.extend([with_lone_surrogate("smile \ud83d\ude00")])
        assert session.unsaved == 0
    with SQLiteStore(path) as store:
        assert texts(store.load_history("t")) == ["smile \U0001f600"]


def attached(session: Session, model: Model, **kwargs: Any) -> Worker:
    """A worker on the session's history and system prompt, attached to it (as callers do)."""
    worker = Worker(model, history=session.history, system=session.system, **kwargs)
    session.attach(worker)
    return worker


@tool
def list_files(ctx: ToolContext) -> str:
    """Stands for ``os.listdir`` of a directory holding a name that is not UTF-8."""
    return os.fsdecode(b"report-\xff.txt")


async def test_a_session_survives_a_tool_result_with_a_lone_surrogate(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    model = ScriptedModel([Script.tool_calls(("list_files", {})), "There is one report."])
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        worker = attached(session, model, tools=[list_files])
        result = await worker.run("what files are there?")  # the commit listener never raises
        assert result.output == "There is one report."
        assert session.unsaved == 0
        session.close()  # nothing left to report
    with SQLiteStore(path) as store:
        stored = store.load_history("t")
        assert texts(stored)[-1] == "There is one report."
        assert all("\udcff" not in text for text in texts(stored))
        assert [run.outcome for run in store.runs("t")] == ["finished"]


def test_run_reason_with_a_lone_surrogate_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store, store.open_session("t") as session:
        session._run_started("r1")
        session._run_ended("r1", "failed", "model_error", "bad name \udcff")
        assert session.error is None
    with SQLiteStore(path) as store:
        (run,) = store.runs("t")
        assert (run.outcome, run.reason) == ("failed", "bad name \ufffd")


def test_an_item_that_can_never_be_written_is_a_typed_error_from_close(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path, busy_timeout=0.05) as store:
        session = store.open_session("t")
        with write_locked(path):
            session.extend([with_lone_surrogate("a\ud800"), UserMessage(text="b")])
            assert session.unsaved == 2
            with pytest.raises(PersistenceFailed) as caught:
                session.close()
        assert caught.value.unsaved == 2
        assert caught.value.session == "t"
        assert "2 item(s) of session 't' could not be saved" in str(caught.value)
        assert "database is locked" in str(caught.value)
        assert isinstance(caught.value.__cause__, StoreError)
        assert session.closed


# -- a locked, removed or replaced database -----------------------------------------------------


def test_a_locked_database_keeps_items_queued_and_the_next_commit_saves_them_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path, busy_timeout=0.05) as store:
        session = store.open_session("t")
        session.extend([UserMessage(text="one")])
        with write_locked(path):
            session.extend([UserMessage(text="two")])
            assert session.unsaved == 1
            assert isinstance(session.error, StoreError)
            with pytest.raises(PersistenceFailed, match="not saved yet"):
                session.flush()
            session.extend([UserMessage(text="three")])  # still locked: queued behind "two"
            assert session.unsaved == 2
        session.extend([UserMessage(text="four")])
        assert session.unsaved == 0
        assert session.error is None
        session.close()
        assert texts(store.load_history("t")) == ["one", "two", "three", "four"]


async def test_a_run_while_the_database_is_locked_finishes_and_loses_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path, busy_timeout=0.05) as store:
        session = store.open_session("t")
        worker = attached(session, ScriptedModel(["first answer", "second answer"]))
        with write_locked(path):
            result = await worker.run("first")  # neither the run nor its markers raise
            assert result.output == "first answer"
            assert session.unsaved == 2
        await worker.run("second")
        assert session.unsaved == 0
        session.close()
    with SQLiteStore(path) as store, store.open_session("t") as reopened:
        assert texts(reopened.history) == ["first", "first answer", "second", "second answer"]
        # The markers that failed were written later: no run is reported as a crash.
        assert reopened.recovery is None
        assert [run.outcome for run in store.runs("t")] == ["finished", "finished"]


def test_a_database_removed_then_restored_from_a_copy_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        session.extend([UserMessage(text="one")])
        backup(path, tmp_path / "backup.db")
        remove_database(path)
        session.extend([UserMessage(text="two")])  # the file is gone: queued, not lost
        assert session.unsaved == 1
        assert "is gone" in str(session.error)
        assert not path.exists()  # nothing was written into a file nobody can see
        os.replace(tmp_path / "backup.db", path)
        session.extend([UserMessage(text="three")])
        assert session.unsaved == 0
        session.close()
    with SQLiteStore(path) as store:
        assert texts(store.load_history("t")) == ["one", "two", "three"]


def test_an_older_copy_put_back_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        session.extend([UserMessage(text="one")])
        backup(path, tmp_path / "backup.db")
        session.extend([UserMessage(text="two")])  # saved in the file that is then replaced
        os.replace(tmp_path / "backup.db", path)
        session.extend([UserMessage(text="three")])
        assert session.unsaved == 0
        session.close()
    with SQLiteStore(path) as store:
        assert texts(store.load_history("t")) == ["one", "two", "three"]


def test_a_foreign_file_put_in_place_is_refused_untouched_and_the_original_taken_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    moved = tmp_path / "moved.db"
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        session.extend([UserMessage(text="one")])
        os.replace(path, moved)
        path.write_bytes(b"not a database at all")
        session.extend([UserMessage(text="two")])
        assert session.unsaved == 1
        assert "not an llm-worker database" in str(session.error)
        with pytest.raises(PersistenceFailed):
            session.flush()
        assert path.read_bytes() == b"not a database at all"
        os.replace(moved, path)
        session.extend([UserMessage(text="three")])
        assert session.unsaved == 0
        session.close()
    with SQLiteStore(path) as store:
        assert texts(store.load_history("t")) == ["one", "two", "three"]


def test_another_session_database_put_in_place_is_not_written_to(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    other = tmp_path / "other.db"
    with SQLiteStore(other) as other_store, other_store.open_session("x") as x:
        x.extend([UserMessage(text="theirs")])
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        session.extend([UserMessage(text="one")])
        os.replace(path, tmp_path / "ours.db")
        os.replace(other, path)
        session.extend([UserMessage(text="two")])
        assert session.unsaved == 1
        assert "not in" in str(session.error)
        with pytest.raises(PersistenceFailed, match="1 item"):
            session.close()
    with SQLiteStore(path) as store:
        assert [s.name for s in store.sessions()] == ["x"]


def test_stored_rows_are_plain_json_readable_by_load_item(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store, store.open_session("t") as session:
        session.extend([with_lone_surrogate("x\udc80y")])
    conn = sqlite3.connect(path)
    try:
        (data,) = conn.execute("SELECT data FROM items").fetchone()
    finally:
        conn.close()
    assert texts([load_item(data)]) == ["x\ufffdy"]


def test_a_session_name_that_is_not_valid_unicode_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        with pytest.raises(ValueError, match="valid Unicode"):
            store.open_session("name-\udcff")
        assert store.sessions() == []
