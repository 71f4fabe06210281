"""``--tools`` is remembered per session, like ``--model``; an explicit flag overrides it."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from llm_worker.items import ToolCall, ToolResult, UserMessage, dump_item
from llm_worker.store import MIGRATIONS, SQLiteStore
from llm_worker.store._schema import migrate
from llm_worker.testing import history_violations

from ._helpers import cli_env, history, read_until, run_cli, start_cli


def tool_results(db: Path, session: str) -> list[ToolResult]:
    return [item for item in history(db, session) if isinstance(item, ToolResult)]


def stored_tools(db: Path, session: str) -> str | None:
    with SQLiteStore(db, create=False) as store:
        return store.session_info(session).metadata.get("tools")


def test_run_and_chat_remember_the_tools(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    first = run_cli("run", "--session", "s", "--tools", "demo", "get_weather for Paris", env=env)
    assert first.returncode == 0, first.stderr
    assert stored_tools(db, "s") == "demo"

    again = run_cli("run", "--session", "s", "get_weather for Oslo", env=env)  # no --tools
    assert again.returncode == 0, again.stderr
    assert "Oslo:" in again.stdout
    assert [(r.name, r.status) for r in tool_results(db, "s")] == [("get_weather", "ok")] * 2

    chat = run_cli("chat", "--session", "s", env=env, input="get_weather for Lima\n")
    assert chat.returncode == 0, chat.stderr
    assert "tools: get_weather, slow_count, current_time" in chat.stdout
    assert "Lima:" in chat.stdout
    assert len(tool_results(db, "s")) == 3
    assert "tools demo" in run_cli("show", "s", env=env).stdout
    assert stored_tools(db, "s") == "demo"


def test_a_chat_remembers_the_tools_for_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    # A chat left without a message keeps no session (issue 18), so it says something.
    chat = run_cli("chat", "--session", "c", "--tools", "demo", env=env, input="hello\n")
    assert chat.returncode == 0, chat.stderr
    done = run_cli("run", "--session", "c", "get_weather for Rome", env=env)
    assert done.returncode == 0, done.stderr
    assert [r.name for r in tool_results(db, "c")] == ["get_weather"]


def test_an_explicit_flag_overrides_and_is_remembered(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    run_cli("run", "--session", "s", "--tools", "demo", "get_weather for Paris", env=env)

    # The history holds get_weather calls; without tools, the next runs still work.
    for argv in (["--tools", "none"], []):
        done = run_cli("run", "--session", "s", *argv, "get_weather for Rome", env=env)
        assert done.returncode == 0, done.stderr
        assert "Rome:" not in done.stdout
        assert stored_tools(db, "s") == "none"
    assert len(tool_results(db, "s")) == 1
    chat = run_cli("chat", "--session", "s", env=env, input="")
    assert "tools: none" in chat.stdout
    assert "tools demo" not in run_cli("show", "s", env=env).stdout

    back = run_cli("run", "--session", "s", "--tools", "demo", "get_weather for Lima", env=env)
    assert back.returncode == 0, back.stderr
    assert "Lima:" in back.stdout
    assert stored_tools(db, "s") == "demo"
    assert history_violations(history(db, "s")) == []


def test_sessions_without_the_flag_have_no_tools(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    done = run_cli("run", "--session", "plain", "get_weather for Paris", env=env)
    assert done.returncode == 0, done.stderr
    assert stored_tools(db, "plain") is None
    assert tool_results(db, "plain") == []
    other = run_cli("run", "--session", "other", "--tools", "demo", "hi", env=env)
    assert other.returncode == 0
    assert stored_tools(db, "plain") is None  # one session's tools are its own


def test_resuming_calls_to_tools_no_longer_available(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli(
        "run",
        "--json",
        "--tools",
        "demo",
        "--session",
        "s",
        "slow_count to 50 step 0.05",
        env=cli_env(db),
    )
    read_until(proc, b'"type":"tool_started"')
    proc.send_signal(signal.SIGKILL)  # the call stays without a result
    proc.communicate(timeout=20)
    assert [i.type for i in history(db, "s")][-1] == "tool_call"

    done = run_cli("run", "--session", "s", "--resume", "--tools", "none", env=cli_env(db))
    assert done.returncode == 0, done.stderr
    (result,) = tool_results(db, "s")
    assert (result.name, result.status) == ("slow_count", "error")
    assert "no tool named 'slow_count'" in result.content
    assert history_violations(history(db, "s")) == []
    follow_up = run_cli("run", "--session", "s", "slow_count to 2", env=cli_env(db))
    assert follow_up.returncode == 0, follow_up.stderr
    assert len(tool_results(db, "s")) == 1  # still none: the override was remembered


def test_an_unknown_stored_toolset(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.open_session("s", model="offline", metadata={"tools": "web"}).close()
    env = cli_env(db)
    done = run_cli("run", "--session", "s", "hi", env=env)
    assert done.returncode == 1
    assert "uses the toolset 'web'" in done.stderr
    assert history(db, "s") == []  # refused before anything was written
    fixed = run_cli("run", "--session", "s", "--tools", "none", "hi", env=env)
    assert fixed.returncode == 0, fixed.stderr
    assert stored_tools(db, "s") == "none"


def test_a_database_from_before_session_metadata(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, str(db), MIGRATIONS[:1])  # the first schema, without sessions.metadata
    now = "2026-01-02T03:04:05.000000+00:00"
    conn.execute(
        "INSERT INTO sessions (name, model, system, created_at, updated_at, item_count) "
        "VALUES ('old', 'offline', NULL, ?, ?, 3)",
        (now, now),
    )
    items = [
        UserMessage(text="get_weather for Paris"),
        ToolCall(call_id="c1", name="get_weather", arguments={"city": "Paris"}),
        ToolResult(call_id="c1", name="get_weather", content="Paris: 18 °C, sunny."),
    ]
    for seq, item in enumerate(items):
        conn.execute(
            "INSERT INTO items (session, seq, type, item_id, data) VALUES ('old', ?, ?, ?, ?)",
            (seq, item.type, item.id, dump_item(item)),
        )
    conn.close()

    env = cli_env(db)
    listed = run_cli("sessions", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "old" in listed.stdout
    done = run_cli("run", "--session", "old", "get_weather for Oslo", env=env)
    assert done.returncode == 0, done.stderr
    assert len(tool_results(db, "old")) == 1  # no tools stored: none
    done = run_cli("run", "--session", "old", "--tools", "demo", "get_weather for Oslo", env=env)
    assert done.returncode == 0, done.stderr
    assert "Oslo:" in done.stdout
    assert stored_tools(db, "old") == "demo"
    with SQLiteStore(db) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.load_history("old")[:3] == items
