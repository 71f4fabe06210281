"""SQLiteStore: round trips, WAL, migrations, foreign files, transactions, latency."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_worker.items import (
    AssistantMessage,
    Item,
    Note,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
    dump_item,
    replace,
)
from llm_worker.store import (
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    SessionNotFound,
    SQLiteStore,
    StoreError,
)
from llm_worker.store._checkpoints import COMMITS_PER_CHECKPOINT
from llm_worker.store._schema import APPLICATION_ID, migrate, sql

_opened: list[sqlite3.Connection] = []


def request_close(conn: sqlite3.Connection) -> None:
    _opened.append(conn)


@pytest.fixture(autouse=True)
def _close_raw_connections() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def every_item() -> list[Item]:
    """One of each item type and of each variant the worker can produce."""
    return [
        UserMessage(text="Hello, ünïcode ✓ and 'quotes' \"too\"\nnew line"),
        AssistantMessage(
            parts=(
                ReasoningPart(text="thinking", signature="sig==", provider="anthropic"),
                ReasoningPart(redacted_data="opaque", provider="anthropic"),
                ReasoningPart(encrypted_content="enc", provider_id="rs_1", provider="openai"),
                TextPart(text="I'll call two tools."),
            ),
            stop_reason="tool_use",
            model="scripted",
            usage=Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2, cache_read_tokens=1),
        ),
        ToolCall(
            call_id="c1",
            name="get_weather",
            raw_arguments='{"city": "Paris"}',
            arguments={"city": "Paris"},
        ),
        ToolCall(call_id="c2", name="slow_count", raw_arguments="{bad", parse_error="not JSON"),
        ToolCall(call_id="c3", name="slow_count", raw_arguments='{"to": 1', complete=False),
        ToolResult(call_id="c1", name="get_weather", content="18 °C"),
        ToolResult(call_id="c2", name="slow_count", content="Error: bad", status="error"),
        ToolResult(call_id="c3", name="slow_count", content="cut off", status="cancelled"),
        AssistantMessage(parts=(TextPart(text="partial"),), interrupted=True),
        Note(kind="interrupted", text="[interrupted]"),
        ToolCall(call_id="c4", name="t", raw_arguments="{}", arguments={}),
        ToolResult(call_id="c4", name="t", content="1 2", status="interrupted"),
        ToolCall(call_id="c5", name="t", raw_arguments="{}", arguments={}),
        ToolResult(call_id="c5", name="t", content="left running", status="abandoned"),
        ToolCall(call_id="c6", name="t", raw_arguments="{}", arguments={}),
        ToolResult(call_id="c6", name="t", content="no", status="skipped"),
        Note(kind="info", text="fyi"),
    ]


def test_every_item_type_round_trips(tmp_path: Path) -> None:
    items = every_item()
    with SQLiteStore(tmp_path / "s.db") as store:
        with store.open_session("round-trip") as session:
            session.extend(items[:3])
            session.extend(items[3:])
        assert store.load_history("round-trip") == items
    with SQLiteStore(tmp_path / "s.db") as store, store.open_session("round-trip") as session:
        assert session.history == items
        assert session.recovery is None


def test_wal_mode_and_synchronous(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        assert store.journal_mode == "wal"
        assert store._file.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with SQLiteStore(tmp_path / "f.db", synchronous="FULL") as store:
        assert store._file.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_database_file_is_private(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db"):
        pass
    assert (tmp_path / "s.db").stat().st_mode & 0o077 == 0


def test_new_database_is_at_latest_version(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store._file.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_migrations_apply_in_order_from_an_older_version(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    conn = sqlite3.connect(path, isolation_level=None)
    request_close(conn)
    v1 = [Migration("one", sql("CREATE TABLE a (x)"))]
    assert migrate(conn, path, v1) == 0
    conn.execute("INSERT INTO a VALUES (1)")
    v2 = [*v1, Migration("two", sql("ALTER TABLE a ADD COLUMN y DEFAULT 7"))]
    assert migrate(conn, path, v2) == 1
    assert conn.execute("SELECT x, y FROM a").fetchall() == [(1, 7)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert migrate(conn, path, v2) == 2  # nothing left to do


def test_a_failing_migration_leaves_the_old_version(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    conn = sqlite3.connect(path, isolation_level=None)
    request_close(conn)
    v1 = [Migration("one", sql("CREATE TABLE a (x)"))]
    migrate(conn, path, v1)
    broken = [*v1, Migration("two", sql("CREATE TABLE b (x)", "THIS IS NOT SQL"))]
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, path, broken)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "b" not in tables  # rolled back with the rest


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with SQLiteStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this llm-worker supports"):
        SQLiteStore(path)


def test_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text, definitely not a database\n" * 20)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an llm-worker database"):
        SQLiteStore(path)
    assert path.read_bytes() == before


def test_another_programs_sqlite_file_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'Ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        SQLiteStore(path)
    assert path.read_bytes() == before
    assert not (tmp_path / "other.db-wal").exists()


def test_foreign_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another program"):
        SQLiteStore(path)


def test_directories_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        SQLiteStore(tmp_path)
    with pytest.raises(StoreError, match="no database"):
        SQLiteStore(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="cannot create"):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "s.db")
    with pytest.raises(ValueError, match="file"):
        SQLiteStore(":memory:")


def test_an_empty_file_becomes_a_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with SQLiteStore(path) as store:
        assert store.schema_version == len(MIGRATIONS)


def test_an_unreadable_item_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store, store.open_session("s") as session:
        session.extend([UserMessage(text="hi")])
    conn = sqlite3.connect(path)
    conn.execute('UPDATE items SET data = \'{"type": "alien"}\'')
    conn.commit()
    conn.close()
    with SQLiteStore(path) as store:
        with pytest.raises(StoreError, match="item 0 cannot be read"):
            store.load_history("s")
        with pytest.raises(StoreError, match="item 0 cannot be read"):
            store.open_session("s")
        assert store.open_session("s2").history == []  # the lock of "s" was released


def test_each_append_is_one_transaction(tmp_path: Path) -> None:
    statements: list[str] = []
    with SQLiteStore(tmp_path / "s.db") as store, store.open_session("t") as session:
        store._file.conn.set_trace_callback(statements.append)
        session.extend(every_item()[:5])
        store._file.conn.set_trace_callback(None)
    verbs = [s.split()[0].upper() for s in statements]
    assert verbs.count("BEGIN") == 1
    assert verbs.count("COMMIT") == 1
    assert verbs[0] == "BEGIN"
    assert verbs[-1] == "COMMIT"


def test_a_failed_append_writes_nothing_and_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        session.extend([UserMessage(text="first")])
        # Another connection takes row 2: the next append (rows 1 and 2) must fail as a whole.
        other = sqlite3.connect(path)
        other.execute(
            "INSERT INTO items (session, seq, type, item_id, data) VALUES ('t', 2, 'x', 'x', '{}')"
        )
        other.commit()
        session.extend([UserMessage(text="second"), UserMessage(text="third")])
        assert session.unsaved == 2
        assert isinstance(session.error, StoreError)
        rows = other.execute("SELECT seq FROM items WHERE session = 't' ORDER BY seq").fetchall()
        assert rows == [(0,), (2,)]  # row 1 was rolled back with row 2
        other.execute("DELETE FROM items WHERE seq = 2")
        other.commit()
        other.close()
        session.flush()
        assert session.unsaved == 0
        session.close()
        assert [i.text for i in store.load_history("t")] == ["first", "second", "third"]  # type: ignore[union-attr]


def test_close_reports_items_it_could_not_save(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStore(path) as store:
        session = store.open_session("t")
        other = sqlite3.connect(path)
        other.execute(
            "INSERT INTO items (session, seq, type, item_id, data) VALUES ('t', 0, 'x', 'x', '{}')"
        )
        other.commit()
        other.close()
        session.extend([UserMessage(text="lost?")])
        with pytest.raises(StoreError, match="could not be saved"):
            session.close()
        assert session.closed
        store._file.conn.execute("DELETE FROM items")
        store.open_session("t").close()  # the lock was released anyway


def test_listing_and_info(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        with store.open_session("a", model="offline", system="be brief") as session:
            session.extend([UserMessage(text="1"), UserMessage(text="2")])
        time.sleep(0.002)
        held = store.open_session("b", model="openai:gpt-4o-mini")
        infos = store.sessions()
        assert [i.name for i in infos] == ["b", "a"]  # most recent first
        a = store.session_info("a")
        assert (a.model, a.system, a.items, a.in_use_by, a.status) == (
            "offline",
            "be brief",
            2,
            None,
            "",
        )
        assert store.session_info("b").status == "in use"
        held.close()
        assert store.session_info("b").status == ""
        with pytest.raises(SessionNotFound):
            store.session_info("zzz")
        with pytest.raises(SessionNotFound):
            store.load_history("zzz")


def test_model_and_system_are_updated_only_when_given(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.open_session("a", model="offline", system="one").close()
        with store.open_session("a") as session:
            assert (session.model, session.system) == ("offline", "one")
        with store.open_session("a", model="anthropic:claude", system="two") as session:
            assert (session.model, session.system) == ("anthropic:claude", "two")


def test_metadata_is_merged_when_given(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        with store.open_session("a", metadata={"tools": "demo", "theme": "dark"}) as session:
            assert session.metadata == {"tools": "demo", "theme": "dark"}
        with store.open_session("a") as session:
            assert session.metadata == {"tools": "demo", "theme": "dark"}
        with store.open_session("a", metadata={"tools": "none", "theme": None}) as session:
            assert session.metadata == {"tools": "none"}  # replaced, removed
        assert store.session_info("a").metadata == {"tools": "none"}
        assert [i.metadata for i in store.sessions()] == [{"tools": "none"}]
        store.open_session("b").close()
        assert store.session_info("b").metadata == {}
        with pytest.raises(TypeError, match="metadata"):
            store.open_session("c", metadata={"tools": 3})  # type: ignore[dict-item]
        assert [i.name for i in store.sessions()] == ["b", "a"]  # refused before creating


def test_unreadable_metadata_is_ignored(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.open_session("a").close()
        store._file.conn.execute("UPDATE sessions SET metadata = '[1, 2]'")
        assert store.session_info("a").metadata == {}
        with store.open_session("a", metadata={"tools": "demo"}) as session:
            assert session.metadata == {"tools": "demo"}
        assert store.session_info("a").metadata == {"tools": "demo"}


def test_a_database_of_the_first_schema_opens_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:1])  # as the first release created it
    now = "2026-01-02T03:04:05.000000+00:00"
    conn.execute(
        "INSERT INTO sessions (name, model, system, created_at, updated_at, item_count) "
        "VALUES ('old', 'openai:gpt-4o-mini', 'be brief', ?, ?, 1)",
        (now, now),
    )
    item = UserMessage(text="from an old version")
    conn.execute(
        "INSERT INTO items (session, seq, type, item_id, data) VALUES ('old', 0, ?, ?, ?)",
        (item.type, item.id, dump_item(item)),
    )
    conn.execute(
        "INSERT INTO runs (session, run_id, started_at, ended_at, outcome) "
        "VALUES ('old', 'r1', ?, ?, 'finished')",
        (now, now),
    )
    conn.close()
    with SQLiteStore(path) as store:
        assert store.schema_version == len(MIGRATIONS) == 4
        info = store.session_info("old")
        assert (info.model, info.system, info.items, info.metadata) == (
            "openai:gpt-4o-mini",
            "be brief",
            1,
            {},
        )
        assert info.last_run is not None
        assert info.last_run.outcome == "finished"
        with store.open_session("old", metadata={"tools": "demo"}) as session:
            assert session.history == [item]
            assert session.model == "openai:gpt-4o-mini"
            session.extend([UserMessage(text="from the new one")])
    with SQLiteStore(path) as store:
        assert store.session_info("old").metadata == {"tools": "demo"}
        assert len(store.load_history("old")) == 2


def test_delete_session(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        with store.open_session("a") as session:
            session.extend([UserMessage(text="1")])
        store.delete_session("a")
        assert store.sessions() == []
        with pytest.raises(SessionNotFound):
            store.delete_session("a")


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 201])
def test_bad_session_names(tmp_path: Path, name: str) -> None:
    with SQLiteStore(tmp_path / "s.db") as store, pytest.raises(ValueError, match="session name"):
        store.open_session(name)


def test_append_latency(tmp_path: Path) -> None:
    """One append (one item, one transaction) in WAL + synchronous=NORMAL: well under 1 ms."""
    message = AssistantMessage(
        parts=(TextPart(text="word " * 200),), usage=Usage(output_tokens=200)
    )
    with SQLiteStore(tmp_path / "s.db") as store, store.open_session("t") as session:
        for _ in range(300):
            session.extend([replace(message, id=f"{time.perf_counter_ns()}")])
        stats = store.append_stats
    print(
        f"\nappend latency: mean {stats.mean * 1e6:.0f} µs, max {stats.max * 1e6:.0f} µs "
        f"over {stats.count} appends"
    )
    assert stats.count == 300
    assert stats.mean < 0.005  # generous for slow CI disks; typically ~50-150 µs


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llm-worker checkpoints")]


def test_the_wal_is_checkpointed_by_a_helper_thread_not_by_commits(tmp_path: Path) -> None:
    """Commits only append to the WAL (SQLite's own checkpoint is pushed far out); a helper
    thread copies it into the database every few hundred commits, and closing stops it."""
    path = tmp_path / "s.db"
    item = AssistantMessage(parts=(TextPart(text="x" * 300),))
    with SQLiteStore(path) as store, store.open_session("s") as session:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own
        conn.close()
        first_size = path.stat().st_size
        for _ in range(COMMITS_PER_CHECKPOINT * 2):
            session.extend([item])
        assert len(_checkpoint_threads()) == 1
        deadline = time.monotonic() + 10
        while path.stat().st_size < first_size + 100_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        # ~1,700 WAL pages are below the writer's own threshold: only the helper copied them
        assert path.stat().st_size >= first_size + 100_000  # 512 items of ~400 bytes
    assert _checkpoint_threads() == []
    with SQLiteStore(path) as store, store.open_session("s") as session:
        assert len(session.history) == COMMITS_PER_CHECKPOINT * 2


def test_a_store_that_never_writes_much_starts_no_thread(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store, store.open_session("s") as session:
        session.extend([UserMessage(text="hi")])
        assert _checkpoint_threads() == []
