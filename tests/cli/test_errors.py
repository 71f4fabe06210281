"""Bad input: one clear ``llm-worker: …`` line on stderr, a non-zero status, no traceback."""

from __future__ import annotations

import io
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llm_worker.cli import main
from llm_worker.store import MIGRATIONS, SQLiteStore

from ._helpers import cli_env, one_error_line, run_cli


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more


CASES = {
    "unknown model spec": (["run", "--model", "gpt-4", "hi"], 2, "unknown model spec 'gpt-4'"),
    "unknown offline variant": (["run", "--model", "offline:fast", "hi"], 2, "unknown model"),
    "unknown model in chat": (["chat", "--model", "nope:"], 2, "unknown model spec"),
    "missing OpenAI key": (["run", "--model", "openai:gpt-4o-mini", "hi"], 2, "OPENAI_API_KEY"),
    "missing Responses key": (
        ["run", "--model", "openai-responses:gpt-4o-mini", "hi"],
        2,
        "OPENAI_API_KEY",
    ),
    "missing Anthropic key": (
        ["run", "--model", "anthropic:claude-haiku-4-5", "hi"],
        2,
        "ANTHROPIC_API_KEY",
    ),
    "missing Gemini key": (
        ["run", "--model", "gemini:gemini-2.5-flash", "hi"],
        2,
        "GEMINI_API_KEY",
    ),
    "unknown option": (["run", "--frobnicate", "hi"], 2, "unrecognized arguments: --frobnicate"),
    "unknown command": (["frobnicate"], 2, "invalid choice"),
    "bad tools": (["run", "--tools", "all", "hi"], 2, "expected 'demo'"),
    "negative timeout": (["run", "--timeout", "-1", "hi"], 2, "positive number"),
    "non-numeric timeout": (["run", "--timeout", "soon", "hi"], 2, "number of seconds"),
    "empty prompt": (["run", "  "], 2, "the prompt is empty"),
    "no prompt on an empty stdin": (["run"], 2, "the prompt is empty"),
    "prompt and --resume": (["run", "--resume", "--session", "s", "hi"], 2, "not both"),
    "--resume without a session": (["run", "--resume"], 2, "--resume needs --session"),
    "resume of an unknown session": (
        ["run", "--resume", "--session", "new"],
        1,
        "no session named 'new' to resume",
    ),
    "show of an unknown session": (["show", "ghost"], 1, "no session named 'ghost'"),
    "delete of an unknown session": (["delete", "ghost"], 1, "no session named 'ghost'"),
    "missing show argument": (["show"], 2, "required: name"),
}


def main_in_process(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``main()`` here with exactly ``env``: the code path the script runs, in milliseconds."""
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    try:
        return main(argv)
    except SystemExit as exc:  # argparse exits by itself
        return int(exc.code or 0)


@pytest.mark.parametrize("case", CASES)
def test_bad_input(
    tmp_path: Path,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, code, expected = CASES[case]
    status = main_in_process(argv, cli_env(tmp_path / "s.db"), monkeypatch)
    out, err = capsys.readouterr()
    assert status == code, err
    assert expected in one_error_line(err)
    assert out == ""


@pytest.mark.parametrize(
    "case", ["unknown model spec", "missing OpenAI key", "unknown option", "empty prompt"]
)
def test_bad_input_as_a_process(tmp_path: Path, case: str) -> None:
    argv, code, expected = CASES[case]
    done = run_cli(*argv, env=cli_env(tmp_path / "s.db"))
    assert done.returncode == code, done.stderr
    assert expected in one_error_line(done.stderr)
    assert done.stdout == ""


def test_a_bad_model_spec_does_not_create_the_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run_cli("run", "--model", "gpt-4", "hi", env=cli_env(db))
    assert not db.exists()


def test_unreachable_server(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, OPENAI_API_KEY="sk-test-VERY-SECRET")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    done = run_cli(
        "run",
        "--model",
        "openai:gpt-4o-mini",
        "--base-url",
        url,
        "--session",
        "s",
        "hi",
        env=env,
    )
    assert done.returncode == 1
    assert "could not be reached" in one_error_line(done.stderr)
    assert "VERY-SECRET" not in done.stderr + done.stdout
    with SQLiteStore(db) as store:
        assert store.session_info("s").status == "failed"  # the run is recorded
        assert store.load_history("s")[0].type == "user"  # and the prompt kept


@pytest.mark.parametrize("command", ["run", "chat", "sessions", "show"])
def test_a_file_that_is_not_a_database(tmp_path: Path, command: str) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("my shopping list\n" * 100)
    argv = {"run": ["run", "hi"], "chat": ["chat"], "sessions": ["sessions"], "show": ["show", "x"]}
    done = run_cli(*argv[command], "--db", str(db), env=cli_env(tmp_path / "unused.db"))
    assert done.returncode == 2  # a --db that cannot be used: usage
    assert "is not an llm-worker database" in one_error_line(done.stderr)
    assert db.read_text() == "my shopping list\n" * 100


def test_another_programs_database(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE orders (id INTEGER)")
    conn.commit()
    conn.close()
    done = run_cli("run", "hi", env=cli_env(db))
    assert done.returncode == 2  # a --db that cannot be used: usage
    assert "another program" in one_error_line(done.stderr)


def test_a_newer_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.commit()
    conn.close()
    done = run_cli("sessions", env=cli_env(db))
    assert done.returncode == 2  # a --db that cannot be used: usage
    assert "upgrade llm-worker" in one_error_line(done.stderr)


def test_database_paths_that_cannot_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli_env(tmp_path / "unused.db")
    assert main_in_process(["run", "hi", "--db", str(tmp_path)], env, monkeypatch) == 2
    assert "is a directory" in one_error_line(capsys.readouterr().err)
    missing = str(tmp_path / "no" / "dir" / "s.db")
    assert main_in_process(["run", "hi", "--db", missing], env, monkeypatch) == 2
    assert "cannot create the database" in one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    SQLiteStore(db).close()
    db.chmod(0)
    try:
        done = run_cli("sessions", env=cli_env(db))
    finally:
        db.chmod(0o600)
    assert done.returncode == 2  # a --db that cannot be used: usage
    assert "permission denied" in one_error_line(done.stderr)


def test_a_session_in_use(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store, store.open_session("busy"):
        done = run_cli("run", "--session", "busy", "hi", env=cli_env(db))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "'busy' is in use by another process" in line
    assert f"pid {os.getpid()}" in line


def test_bad_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli_env(tmp_path / "s.db", LLM_WORKER_OFFLINE_PACE="fast")
    assert main_in_process(["run", "hi"], env, monkeypatch) == 2
    assert "LLM_WORKER_OFFLINE_PACE" in one_error_line(capsys.readouterr().err)
    env = cli_env(tmp_path / "s.db", LLM_WORKER_ASYNC_BACKEND="curio")
    assert main_in_process(["run", "hi"], env, monkeypatch) == 2
    assert "LLM_WORKER_ASYNC_BACKEND" in one_error_line(capsys.readouterr().err)


def test_a_missing_cli_extra_is_named_not_a_traceback() -> None:
    blocked = (
        "import sys; sys.modules['rich'] = None; sys.modules['platformdirs'] = None; "
        "from llm_worker.cli import main; sys.exit(main(['sessions', '--db', ':memory:']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "pip install 'llm-worker[cli]'" in done.stderr
    assert "Traceback" not in done.stderr
