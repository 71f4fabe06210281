"""``llm-worker run`` as a process: streaming, JSON events, Ctrl-C, timeouts, resuming."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pydantic
import pytest

from llm_worker.events import Event, ItemCommitted, RunFinished, RunStarted
from llm_worker.items import AssistantMessage, Note, ToolCall, ToolResult, UserMessage
from llm_worker.testing import history_violations

from ._helpers import (
    MODULE,
    SCRIPT,
    assistant_messages,
    cli_env,
    history,
    one_error_line,
    read_until,
    run_cli,
    start_cli,
)

EVENTS: pydantic.TypeAdapter[Event] = pydantic.TypeAdapter(Event)


def test_answer_streams_as_plain_text_when_piped(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("run", "--session", "s", "hello there", env=cli_env(db))
    assert done.returncode == 0, done.stderr
    assert done.stderr == "llm-worker: session s (continue with: llm-worker run -c)\n"
    assert done.stdout.startswith('You asked: "hello there".')
    assert done.stdout.endswith("\n")
    assert "\x1b" not in done.stdout
    items = history(db, "s")
    assert [type(i) for i in items] == [UserMessage, AssistantMessage]
    assert done.stdout.strip() == assistant_messages(items)[0].text.strip()


def test_console_script_and_module(tmp_path: Path) -> None:
    for command in ([SCRIPT], MODULE):
        done = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0
        assert done.stdout.startswith("llm-worker ")


def test_json_events(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli(
        "run",
        "--json",
        "--tools",
        "demo",
        "--session",
        "j",
        "get_weather for Oslo",
        env=cli_env(db),
    )
    assert done.returncode == 0, done.stderr
    first, *lines = done.stdout.splitlines()
    assert json.loads(first) == {"type": "session", "session": "j", "model": "offline"}
    events = [EVENTS.validate_json(line) for line in lines]
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished)
    assert "Oslo" in events[-1].output
    committed = [e.item for e in events if isinstance(e, ItemCommitted)]
    assert committed == history(db, "j")
    assert [i.type for i in committed] == [
        "user",
        "assistant",
        "tool_call",
        "tool_result",
        "assistant",
    ]


def test_a_named_session_continues(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    for prompt in ("first", "second"):
        assert run_cli("run", "--session", "conv", prompt, env=env).returncode == 0
    items = history(db, "conv")
    assert [i.text for i in items if isinstance(i, UserMessage)] == ["first", "second"]


def test_fresh_sessions_get_distinct_names(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    for _ in range(2):
        assert run_cli("run", "hi", env=env).returncode == 0
    listed = run_cli("sessions", "--json", env=env).stdout.splitlines()
    assert len(listed) == 2
    assert all('"name": "run-' in line for line in listed)


def test_prompt_from_stdin(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("run", "--session", "s", env=cli_env(db), input="from a pipe\n")
    assert done.returncode == 0, done.stderr
    assert 'You asked: "from a pipe".' in done.stdout
    done = run_cli("run", "--session", "s", "-", env=cli_env(db), input="dash")
    assert 'You asked: "dash".' in done.stdout


def test_system_prompt_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    run_cli("run", "--session", "s", "--system", "Be terse.", "hi", env=env)
    shown = run_cli("show", "s", env=env).stdout
    assert "system: Be terse." in shown


def test_ctrl_c_keeps_the_partial_answer(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli("run", "--session", "s", "tell me a story", env=cli_env(db, pace=0.05))
    shown = read_until(proc, b"You asked")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=20)
    out = shown + rest
    assert proc.returncode == 130
    line = one_error_line(err.decode())
    assert "interrupted" in line
    assert "'s'" in line
    items = history(db, "s")
    message = assistant_messages(items)[0]
    assert message.interrupted
    assert out.decode().strip() == message.text.strip()  # everything shown was kept, no more
    with_status = run_cli("sessions", env=cli_env(db)).stdout
    assert "interrupted" in with_status


def test_ctrl_c_during_a_tool_keeps_its_partial_output(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli(
        "run",
        "--tools",
        "demo",
        "--session",
        "s",
        "slow_count to 50 step 0.05",
        env=cli_env(db),
    )
    read_until(proc, b"I'll call slow_count.")
    deadline = time.monotonic() + 20
    while not any(isinstance(i, ToolCall) for i in history(db, "s")):  # committed: it runs now
        assert time.monotonic() < deadline, "the tool call was never committed"
        time.sleep(0.01)
    time.sleep(0.3)  # it counts one number every 0.05 s
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in one_error_line(err.decode())
    items = history(db, "s")
    result = next(i for i in items if isinstance(i, ToolResult))
    assert result.status == "interrupted"
    assert result.content.startswith("counted 1")
    assert history_violations(items) == []


def test_resume_after_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli("run", "--session", "s", "a story", env=cli_env(db, pace=0.03))
    read_until(proc, b"You asked")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    done = run_cli("run", "--session", "s", "--resume", env=cli_env(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(My previous answer was interrupted.)")
    items = history(db, "s")
    assert [i.type for i in items] == ["user", "assistant", "note", "assistant"]
    assert isinstance(items[2], Note)
    assert "interrupted by Ctrl-C" in items[2].text
    again = run_cli("run", "--session", "s", "--resume", env=cli_env(db))
    assert again.returncode == 1
    assert "nothing to resume" in one_error_line(again.stderr)


def test_timeout(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("run", "--timeout", "0.4", "--session", "s", "hi", env=cli_env(db, pace=0.05))
    assert done.returncode == 124
    assert "timed out after 0.4s" in one_error_line(done.stderr)
    message = assistant_messages(history(db, "s"))[0]
    assert message.interrupted
    assert message.text


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli("run", "--session", "s", "a story", env=cli_env(db, pace=0.03))
    read_until(proc, b"You asked")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert "terminated" in one_error_line(err.decode())
    assert assistant_messages(history(db, "s"))[0].interrupted


def test_closed_output_pipe_stops_the_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    proc = start_cli("run", "--session", "s", "a story", env=cli_env(db, pace=0.05))
    read_until(proc, b"You asked")
    assert proc.stdout is not None
    proc.stdout.close()
    proc.wait(timeout=20)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.returncode == 141, err
    assert "Traceback" not in err
    assert assistant_messages(history(db, "s"))[0].interrupted


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_both_event_loops(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, LLM_WORKER_ASYNC_BACKEND=backend)
    done = run_cli("run", "--tools", "demo", "--session", "s", "slow_count to 2 step 0.01", env=env)
    assert done.returncode == 0, done.stderr
    assert "slow_count returned: 1 2" in done.stdout


def test_default_database_location(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "unused.db", XDG_DATA_HOME=str(tmp_path / "data"))
    del env["LLM_WORKER_DB"]
    done = run_cli("run", "--session", "d", "hi", env=env)
    assert done.returncode == 0, done.stderr
    default = tmp_path / "data" / "llm-worker" / "sessions.db"
    assert [i.type for i in history(default, "d")] == ["user", "assistant"]
    assert "d " in run_cli("sessions", env=env).stdout
