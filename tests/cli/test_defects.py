"""Issue 18's defects, each checked on the real process: what a new user met, and what now."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_worker.items import UserMessage
from llm_worker.store import SQLiteStore
from llm_worker.testing import FakeProviderServer
from llm_worker.testing._fake_replies import Reply

from ._helpers import MODULE, assistant_messages, cli_env, history, one_error_line, run_cli


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_piped_text_and_a_prompt_are_one_message_piped_text_first(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("run", "--session", "s", "summarise", input="the context\n", env=cli_env(db))
    assert done.returncode == 0, done.stderr
    [message] = [item for item in history(db, "s") if isinstance(item, UserMessage)]
    assert message.text == "the context\n\nsummarise"


def test_a_session_remembers_its_endpoint_but_never_the_key(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    key = "sk-test-NEVER-STORED-123456"
    with FakeProviderServer() as server:
        server.enqueue(Reply.openai_text(["first"]))
        server.enqueue(Reply.openai_text(["second"]))
        env = cli_env(db, OPENAI_API_KEY=key)
        model = ["--model", "openai:gpt-4o-mini"]
        first = run_cli(
            "run", *model, "--base-url", server.openai_base_url, "--session", "o", "hi", env=env
        )
        assert first.returncode == 0, first.stderr
        again = run_cli("run", "--session", "o", "and again", env=env)  # no --base-url
        assert again.returncode == 0, again.stderr
        assert again.stdout == "second\n"
        assert len(server.requests) == 2  # the same endpoint, not OpenAI's
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in stored


def _without_privileges() -> list[str]:
    """As root, run the CLI without the capabilities that let root write any file."""
    if os.getuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if os.environ.get("CI"):
            pytest.fail("setpriv is needed to drop root's privileges")
        pytest.skip("running as root without setpriv")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all"]


@pytest.fixture
def read_only_db(tmp_path: Path) -> Iterator[Path]:
    """A database with one session, in a directory nobody may write."""
    directory = tmp_path / "data"
    directory.mkdir()
    db = directory / "s.db"
    assert run_cli("run", "--session", "kept", "hello", env=cli_env(db)).returncode == 0
    db.chmod(0o444)
    directory.chmod(0o555)
    yield db
    directory.chmod(0o755)


def _run_as_reader(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_without_privileges(), *MODULE, *args],
        env=cli_env(db),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_read_only_database_is_read_and_writing_it_says_what_is_not_writable(
    read_only_db: Path,
) -> None:
    listed = _run_as_reader(read_only_db, "sessions")
    assert listed.returncode == 0, listed.stderr
    assert "kept" in listed.stdout
    shown = _run_as_reader(read_only_db, "show", "kept")
    assert shown.returncode == 0, shown.stderr
    assert "hello" in shown.stdout
    written = _run_as_reader(read_only_db, "run", "--session", "kept", "more")
    assert written.returncode == 2
    line = one_error_line(written.stderr)
    assert "not writable" in line
    assert "not an llm-worker database" not in line


def test_chat_with_stdin_closed_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -m llm_worker chat 0<&-', sys.executable],
        env=cli_env(db),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "stdin is closed" in one_error_line(done.stderr)
    assert "AttributeError" not in done.stderr
    assert not db.exists()


def test_resuming_an_unknown_session_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert run_cli("run", "--session", "real", "hi", env=cli_env(db)).returncode == 0
    done = run_cli("run", "--resume", "--session", "nope", env=cli_env(db))
    assert done.returncode == 1
    assert "no session named 'nope'" in one_error_line(done.stderr)
    with SQLiteStore(db) as store:
        assert [info.name for info in store.sessions()] == ["real"]


def test_leaving_chat_without_a_message_leaves_no_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("chat", "--session", "empty", input="", env=cli_env(db))
    assert done.returncode == 0, done.stderr
    listed = run_cli("sessions", "--json", env=cli_env(db))
    assert listed.stdout == ""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--base-url", "not-a-url", "-m", "openai:x", "hi"], "expected an http(s) URL"),
        (["run", "--base-url", "http://127.0.0.1:9/v1", "hi"], "no effect on the offline"),
        (["run", "--db", "/nonexistent-dir/x/s.db", "hi"], "cannot create the database"),
        (["run", "--mod", "offline", "hi"], "unrecognized arguments: --mod"),
        (["run", "--sess", "x", "hi"], "unrecognized arguments: --sess"),
    ],
    ids=["base-url not a URL", "base-url with offline", "bad --db", "--mod", "--sess"],
)
def test_bad_usage_is_one_line_and_status_2(tmp_path: Path, argv: list[str], expected: str) -> None:
    done = run_cli(*argv, env=cli_env(tmp_path / "s.db"))
    assert done.returncode == 2, done.stderr
    assert expected in one_error_line(done.stderr)


def test_the_help_lists_every_exit_status(tmp_path: Path) -> None:
    done = run_cli("--help", env=cli_env(tmp_path / "s.db"))
    assert all(code in done.stdout for code in ("124", "130", "141", "143"))


def test_text_the_terminal_cannot_encode_is_replaced_not_an_exception_group(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path / "s.db", PYTHONIOENCODING="ascii")
    done = run_cli("run", "caf\u00e9 \u2603", env=env)
    assert "ExceptionGroup" not in done.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("You asked")


def test_an_unreachable_server_is_named_by_its_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    env = cli_env(tmp_path / "s.db", OPENAI_API_KEY="sk-test-123456789")
    done = run_cli("run", "-m", "openai:x", "--base-url", url, "hi", env=env, timeout=120)
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert url in line
    assert "openai could not be reached" not in line


def test_a_server_that_answered_then_died_is_not_called_unreachable(tmp_path: Path) -> None:
    with FakeProviderServer() as server:
        for _ in range(10):  # the retries meet the same
            server.enqueue(Reply.openai_text(["Hello", " there", " and", " more"], drop_after=3))
        env = cli_env(tmp_path / "s.db", OPENAI_API_KEY="sk-test-123456789")
        url = server.openai_base_url
        done = run_cli("run", "-m", "openai:x", "--base-url", url, "hi", env=env, timeout=120)
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "could not be reached" not in line
    assert "broke" in line
    assert url.rstrip("/") in line


def test_a_base_url_needs_no_key_when_none_is_set(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with FakeProviderServer() as server:
        server.enqueue(Reply.openai_text(["local answer"]))
        argv = ["run", "-m", "openai:local", "--base-url", server.openai_base_url, "hi"]
        done = run_cli(*argv, env=cli_env(db))  # cli_env removes OPENAI_API_KEY
    assert done.returncode == 0, done.stderr
    assert done.stdout == "local answer\n"


def test_delete_removes_the_sessions_lock_file(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    assert run_cli("run", "--session", "gone", "hi", env=env).returncode == 0
    assert run_cli("run", "--session", "stays", "hi", env=env).returncode == 0
    locks = tmp_path / "s.db-locks"
    assert len(list(locks.iterdir())) == 2
    done = run_cli("delete", "gone", env=env)
    assert done.returncode == 0, done.stderr
    assert len(list(locks.iterdir())) == 1
    assert assistant_messages(history(db, "stays"))  # the other session is untouched
