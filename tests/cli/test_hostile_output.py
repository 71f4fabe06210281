"""Hostile text from a model, a server or a stored session never drives the user's terminal.

A fake provider on loopback streams escape sequences (a window title, clear screen, a cursor
jump, a bare carriage return that would overwrite a line, a bidi override, a C1 CSI), splits
them across deltas, and echoes the API key; the CLI runs as a process, piped and in a
pseudo-terminal, and the raw bytes it writes are checked.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from llm_worker.items import AssistantMessage, load_item
from llm_worker.testing import FakeProviderServer
from llm_worker.testing._fake_replies import Reply

from ._helpers import (
    MODULE,
    SCRIPT,
    assistant_messages,
    cli_env,
    history,
    one_error_line,
    read_until,
    run_cli,
)

KEY = "sk-test-NEVER-PRINTED-0123456789"

# A window title (OSC … BEL), clear screen and cursor home, then a fake shell prompt; a line
# overwritten by a bare CR; a bidi override; a C1 CSI; the key. ESC and the key are split
# across deltas.
DELTAS = [
    "Here you go.\x1b",
    "]0;pwned\x07\x1b[2J\x1b",
    "[H\r\nuser@host:~$ ",
    "rm -rf ~\nharmless\rEVIL \u202eevil\u202c \x9b31mred ",
    "key: " + KEY[:9],
    KEY[9:] + " done.",
]
ANSWER = "".join(DELTAS)

# What the terminal must never receive from the model (rich's own styling is fine).
RAW = [
    b"\x1b]0;",
    b"pwned\x07",
    b"\x1b[2J",
    b"\x1b[H",
    b"harmless\rEVIL",
    "\u202e".encode(),
    "\x9b".encode(),
    KEY.encode(),
]
# What it shows instead.
SHOWN = [b"\\x1b]0;pwned\\x07\\x1b[2J\\x1b[H", b"harmless\\rEVIL", b"\\u202eevil", b"\\x9b31m"]


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as fake:
        yield fake
    assert fake.errors == []


def openai_run(server: FakeProviderServer, *rest: str) -> list[str]:
    return ["run", "--model", "openai:gpt-4o-mini", "--base-url", server.openai_base_url, *rest]


def assert_nothing_raw(output: bytes) -> None:
    for raw in RAW:
        assert raw not in output, (raw, output)


def assert_shown(output: bytes) -> None:
    for shown in SHOWN:
        assert shown in output, (shown, output)


def in_terminal(*args: str, env: dict[str, str]) -> bytes:
    """Run the CLI in a pseudo-terminal; return every byte it wrote there."""
    child = pexpect.spawn(SCRIPT, list(args), env=env, dimensions=(40, 200), timeout=30)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    output: bytes = child.before
    return output


def test_escape_sequences_from_a_model_never_reach_a_pipe_in_run_or_show(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, OPENAI_API_KEY=KEY)
    server.enqueue(Reply.openai_text(DELTAS))
    done = subprocess.run(
        [*MODULE, *openai_run(server, "--session", "h", "hi")], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    for output in (done.stdout, done.stderr):
        assert_nothing_raw(output)
        assert b"\x1b" not in output
        assert b"\r" not in output
        assert b"\x07" not in output
    assert_shown(done.stdout)
    assert b"key: [redacted] done." in done.stdout  # split across two deltas, still hidden
    # The session keeps exactly what the model said: only the display is made safe.
    assert assistant_messages(history(db, "h"))[0].text == ANSWER

    shown = subprocess.run([*MODULE, "show", "h"], env=env, capture_output=True)
    assert shown.returncode == 0, shown.stderr
    assert_nothing_raw(shown.stdout)
    assert b"\x1b" not in shown.stdout
    assert b"\r" not in shown.stdout
    assert_shown(shown.stdout)


def test_escape_sequences_from_a_model_never_reach_a_terminal_in_run_or_show(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, OPENAI_API_KEY=KEY, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    server.enqueue(Reply.openai_text(DELTAS))
    ran = in_terminal(*openai_run(server, "--session", "t", "hi"), env=env)
    assert_nothing_raw(ran)
    assert_shown(ran)
    assert b"Here you go." in ran

    shown = in_terminal("show", "t", env=env)
    assert_nothing_raw(shown)
    assert_shown(shown)
    assert b"Here you go." in shown


def test_show_json_keeps_the_content_but_escapes_what_a_terminal_would_run(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.openai_text(DELTAS))
    env = cli_env(db, OPENAI_API_KEY=KEY)
    assert run_cli(*openai_run(server, "--session", "j", "hi"), env=env).returncode == 0
    shown = subprocess.run([*MODULE, "show", "--json", "j"], env=env, capture_output=True)
    assert shown.returncode == 0, shown.stderr
    assert_nothing_raw(shown.stdout)
    items = [load_item(line) for line in shown.stdout.decode().splitlines()]
    answer = items[-1]
    assert isinstance(answer, AssistantMessage)
    assert answer.text == ANSWER.replace(KEY, "[redacted]")  # the same text, key hidden
    # Without the key in the environment, the stored text comes out whole.
    plain = run_cli("show", "--json", "j", env=cli_env(db))
    assert load_item(plain.stdout.splitlines()[-1]) == history(db, "j")[-1]


def test_a_server_error_with_escape_sequences_and_the_key_is_one_safe_line(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, OPENAI_API_KEY=KEY)
    hostile = f"bad request\x1b]0;owned\x07\x1b[2J\rfor key {KEY}\u202e"
    server.enqueue(Reply.error(400, message=hostile))
    done = subprocess.run([*MODULE, *openai_run(server, "hi")], env=env, capture_output=True)
    assert done.returncode == 1
    line = one_error_line(done.stderr.decode())
    assert "bad request\\x1b]0;owned\\x07\\x1b[2J" in line
    for output in (done.stdout, done.stderr):
        assert b"\x1b" not in output
        assert b"\x07" not in output
        assert KEY.encode() not in output

    server.enqueue(Reply.error(400, message=hostile))
    as_json = subprocess.run(
        [*MODULE, *openai_run(server, "--json", "hi")], env=env, capture_output=True
    )
    assert as_json.returncode == 1
    for output in (as_json.stdout, as_json.stderr):
        assert KEY.encode() not in output
        assert b"\x1b" not in output
        assert "\u202e".encode() not in output
    failed = json.loads(as_json.stdout.splitlines()[-1])
    assert failed["type"] == "run_failed"
    assert "owned\x07" in failed["error"]  # JSON carries it, escaped: the content is kept


def test_stored_names_and_specs_are_listed_escaped_and_never_read_as_markup(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    name = "[/]evil\u202eeman\x9b2J"
    assert run_cli("run", "--session", name, "hello", env=env).returncode == 0

    piped = subprocess.run([*MODULE, "sessions"], env=env, capture_output=True)
    assert piped.returncode == 0, piped.stderr
    assert b"[/]evil\\u202eeman\\x9b2J" in piped.stdout
    assert "\u202e".encode() not in piped.stdout
    assert "\x9b".encode() not in piped.stdout

    listed = in_terminal("sessions", env=env)
    assert b"[/]evil\\u202eeman\\x9b2J" in listed  # literal: not markup, not raw controls
    assert "\u202e".encode() not in listed

    as_json = subprocess.run([*MODULE, "sessions", "--json"], env=env, capture_output=True)
    assert json.loads(as_json.stdout)["name"] == name


def test_a_prompt_that_is_not_utf8_is_answered_and_stored(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    argv = [*(arg.encode() for arg in MODULE), b"run", b"--session", b"u", b"caf\xe9 au lait"]
    done = subprocess.run(argv, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert "caf\ufffd au lait".encode() in done.stdout
    piped = subprocess.run(
        [*MODULE, "run", "--session", "u"], env=env, input=b"na\xefve\n", capture_output=True
    )
    assert piped.returncode == 0, piped.stderr
    texts = [item.text for item in history(db, "u") if item.type == "user"]  # type: ignore[union-attr]
    assert texts == ["caf\ufffd au lait", "na\ufffdve\n"]


def test_chat_answers_and_history_are_escaped(tmp_path: Path, server: FakeProviderServer) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.openai_text(DELTAS))
    chat = [
        "chat",
        "--model",
        "openai:gpt-4o-mini",
        "--base-url",
        server.openai_base_url,
        "--session",
        "c",
    ]
    done = subprocess.run(
        [*MODULE, *chat],
        env=cli_env(db, OPENAI_API_KEY=KEY),
        input=b"hi\n/history\n",
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    for output in (done.stdout, done.stderr):
        assert_nothing_raw(output)
        assert b"\x1b" not in output
        assert b"\r" not in output
    assert done.stdout.count(b"\\x1b]0;pwned\\x07") == 2  # the answer, then /history


def test_a_database_removed_during_a_run_is_one_error_line_not_a_silent_loss(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.openai_text(["first "] + ["word "] * 100, pace=0.02))
    proc = subprocess.Popen(
        [*MODULE, *openai_run(server, "--session", "g", "hi")],
        env=cli_env(db, OPENAI_API_KEY=KEY),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    read_until(proc, b"first")  # the session is open and the prompt is saved
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    line = one_error_line(err.decode())
    assert "1 item(s) of session 'g' could not be saved" in line
    assert "is gone" in line
    assert out.count(b"word") == 100  # the answer was not cut by the failed write
    assert not db.exists()  # nothing recreated behind the user's back
