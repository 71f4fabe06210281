"""``llm-worker chat`` in a pseudo-terminal, typed at and interrupted like a person would."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pexpect
import pytest

from llm_worker.items import Note, ToolResult
from llm_worker.testing import history_violations

from ._helpers import (
    SCRIPT,
    assistant_messages,
    cli_env,
    history,
    read_until,
    run_cli,
    start_cli,
)

PROMPT = "›"
ANSI = r"(?:\x1b\[[0-9;]*m)*"  # styles between a label and its text


def spawn_chat(db: Path, *args: str, pace: float = 0.03) -> pexpect.spawn:
    env = cli_env(db, pace=pace, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(
        SCRIPT, ["chat", *args], env=env, encoding="utf-8", dimensions=(40, 120), timeout=30
    )
    child.expect("llm-worker chat")
    child.expect(PROMPT)
    return child


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    status: int = child.exitstatus
    return status


def test_ctrl_c_stops_the_answer_keeps_it_and_ctrl_c_at_the_prompt_quits(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "c")
    child.sendline("tell me a long story")
    child.expect("You asked")
    child.sendintr()
    child.expect("interrupted — what was said is kept")
    child.expect(PROMPT)
    message = assistant_messages(history(db, "c"))[0]  # read while the chat is still open
    assert message.interrupted
    assert message.text.startswith("You asked")
    assert "^C" not in child.before  # the terminal did not echo it into the answer
    child.sendintr()
    assert finish(child) == 0
    assert "llm-worker chat --session c" in child.before  # how to come back


def test_two_quick_ctrl_c_quit(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "c")
    child.sendline("tell me a long story")
    child.expect("You asked")
    child.sendintr()
    time.sleep(0.05)  # two signals sent at once would merge into one (signals do not queue)
    child.sendintr()
    assert finish(child) == 0
    assert assistant_messages(history(db, "c"))[0].interrupted


def test_tool_calls_are_shown_as_they_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "t", "--tools", "demo", pace=0.002)
    child.sendline("what is the weather in Paris? use get_weather")
    child.expect("⚙ get_weather")
    child.expect("✓ get_weather → Paris: ")
    child.expect("Every call finished normally")
    child.expect(r"offline · \d+ in / \d+ out tokens")  # the status line
    child.expect(PROMPT)
    child.sendline("slow_count to 100 step 0.05")
    child.expect("⚙ slow_count")
    time.sleep(0.5)
    child.sendintr()
    child.expect(r"slow_count \[interrupted\] → counted 1 2")
    child.expect("interrupted — what was said is kept")
    child.expect(PROMPT)
    child.sendline("/resume")
    child.expect(r"\(My previous answer was interrupted\.\)")
    child.expect(PROMPT)
    child.sendeof()  # Ctrl-D
    assert finish(child) == 0
    items = history(db, "t")
    assert history_violations(items) == []
    statuses = [i.status for i in items if isinstance(i, ToolResult)]
    assert statuses == ["ok", "interrupted"]


def test_commands(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "h", pace=0.001)
    child.sendline("/help")
    child.expect("/resume")
    child.expect(PROMPT)
    child.sendline("/resume")
    child.expect("nothing to resume")
    child.sendline("hello")
    child.expect("You asked")
    child.expect(PROMPT)
    child.sendline("/history")
    child.expect(rf"you: {ANSI}hello")
    child.expect(rf"assistant: {ANSI}You asked")
    child.sendline("/nope")
    child.expect("unknown command /nope")
    child.sendline("/quit")
    assert finish(child) == 0


def test_ctrl_c_at_the_first_prompt_quits(tmp_path: Path) -> None:
    child = spawn_chat(tmp_path / "s.db")
    child.sendintr()
    assert finish(child) == 0


def test_chat_continues_a_crashed_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli("run", "--session", "k", "a long story", env=cli_env(db, pace=0.03))
    read_until(proc, b"You asked")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    child = spawn_chat(db, "--session", "k", pace=0.001)
    assert "the last run did not finish" in child.before
    child.sendline("/resume")
    child.expect(r"\(My previous answer was interrupted\.\)")
    child.expect(PROMPT)
    child.sendline("/quit")
    assert finish(child) == 0
    items = history(db, "k")
    assert [i.type for i in items] == ["user", "note", "assistant"]
    assert isinstance(items[1], Note)
    assert "crash" in items[1].text


def test_run_in_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, pace=0.03, TERM="xterm-256color")
    child = pexpect.spawn(
        SCRIPT,
        ["run", "--session", "r", "a story"],
        env=env,
        encoding="utf-8",
        dimensions=(40, 120),
        timeout=30,
    )
    child.expect("You asked")
    child.sendintr()
    child.expect("interrupted; what was said is kept in session 'r'")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert assistant_messages(history(db, "r"))[0].interrupted


def test_chat_reads_a_pipe(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("chat", "--session", "p", env=cli_env(db), input="hello\n\nsecond\n")
    assert done.returncode == 0, done.stderr
    assert 'You asked: "hello".' in done.stdout
    assert 'You asked: "second".' in done.stdout
    assert "\x1b" not in done.stdout
    assert len(assistant_messages(history(db, "p"))) == 2


@pytest.mark.parametrize("backend", ["trio"])
def test_chat_on_trio(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, pace=0.03, TERM="xterm-256color", LLM_WORKER_ASYNC_BACKEND=backend)
    child = pexpect.spawn(
        SCRIPT,
        ["chat", "--session", "c"],
        env=env,
        encoding="utf-8",
        dimensions=(40, 120),
        timeout=30,
    )
    child.expect(PROMPT)
    child.sendline("tell me a long story")
    child.expect("You asked")
    child.sendintr()
    child.expect("interrupted")
    child.expect(PROMPT)
    child.sendintr()
    assert finish(child) == 0
    assert assistant_messages(history(db, "c"))[0].interrupted
