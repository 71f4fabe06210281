"""Ctrl-C at any moment, and the chat's input, in real processes (pexpect where interactive)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from llm_worker.items import UserMessage

from ._helpers import MODULE, SCRIPT, cli_env, history, run_cli
from .test_chat import PROMPT, finish, spawn_chat

# Spread over start-up: importing, opening the database, starting the event-loop thread, the
# first words of the answer. Tried in parallel batches to keep the test short.
DELAYS = [i * 0.05 for i in range(24)]
BATCH = 6
# Before Python has installed its own handler the kernel's default action ends the process:
# no output, and a shell reports it as 130 like an exit status of 130.
QUIET_ENDS = (130, -signal.SIGINT)


def _pythons_own_start_up(stderr: str) -> bool:
    """A Ctrl-C that landed while the interpreter was starting (``site``, ``runpy``, loading
    the package's first module), before the command line's first line ran: ``python -c pass``
    prints the same traceback, nothing a program can change (a few milliseconds unloaded)."""
    return "KeyboardInterrupt" in stderr and "llm_worker/cli" not in stderr


def _interrupt_after(delay: float, db: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*MODULE, "run", "tell me a long story", "--session", "s"],
        env=cli_env(db, pace=0.03),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    return proc


def _interrupted_at(delays: list[float], directory: Path) -> list[str]:
    """SIGINT each of a batch of processes after its delay; return what went wrong."""
    failures = []
    for start in range(0, len(delays), BATCH):
        batch = [
            (delay, _interrupt_after(delay, directory / f"s{start + n}.db"))
            for n, delay in enumerate(delays[start : start + BATCH])
        ]
        for delay, proc in batch:
            try:
                _, stderr = proc.communicate(timeout=20)  # the bug: a hang, forever
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                failures.append(f"{delay:.2f}s: hung")
                continue
            text = stderr.decode(errors="replace")
            if _pythons_own_start_up(text):
                continue
            if proc.returncode not in QUIET_ENDS or "Traceback" in text:
                failures.append(f"{delay:.2f}s: status {proc.returncode}: {text[-300:]!r}")
    return failures


def test_ctrl_c_at_any_moment_of_start_up_exits_130_quietly(tmp_path: Path) -> None:
    assert _interrupted_at(DELAYS, tmp_path) == []


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    not os.environ.get("LLM_WORKER_SOAK_SIGINTS"), reason="set LLM_WORKER_SOAK_SIGINTS=N to soak"
)
def test_ctrl_c_at_any_moment_soak(tmp_path: Path) -> None:
    rng = random.Random(18)
    count = int(os.environ["LLM_WORKER_SOAK_SIGINTS"])
    assert _interrupted_at([rng.uniform(0, 1.5) for _ in range(count)], tmp_path) == []


def test_two_quick_ctrl_c_at_the_prompt_leave_cleanly_with_the_saved_line(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "c", pace=0.001)
    child.sendline("hello")
    child.expect("You asked")
    child.expect(PROMPT)
    child.sendintr()
    child.sendintr()
    child.expect("saved · continue with: llm-worker chat --session c")
    assert finish(child) == 0


def test_a_pasted_block_is_one_message(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "p", pace=0.001)
    child.send("\x1b[200~first line\rsecond line\rthird line\x1b[201~")
    child.send("\r")
    child.expect("You asked")
    child.expect(PROMPT)
    child.sendline("/quit")
    assert finish(child) == 0
    users = [item.text for item in history(db, "p") if isinstance(item, UserMessage)]
    assert users == ["first line\nsecond line\nthird line"]


def test_lines_arriving_together_are_one_message(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "q", pace=0.001)
    child.send("one\rtwo\rthree\r")  # a paste from a terminal without bracketed paste
    child.expect("You asked")
    child.expect(PROMPT)
    child.sendline("/quit")
    assert finish(child) == 0
    users = [item.text for item in history(db, "q") if isinstance(item, UserMessage)]
    assert users == ["one\ntwo\nthree"]


def test_multiline_mode_gathers_lines_up_to_a_dot(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "m", pace=0.001)
    child.sendline("/multiline")
    child.expect("multi-line input")
    for line in ("alpha", "beta", "."):
        child.sendline(line)
        time.sleep(0.1)
    child.expect("You asked")
    child.expect(PROMPT)
    child.sendline("/quit")
    assert finish(child) == 0
    users = [item.text for item in history(db, "m") if isinstance(item, UserMessage)]
    assert users == ["alpha\nbeta"]


def test_typing_during_an_answer_is_not_echoed_into_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "t", pace=0.03)
    child.sendline("tell me a long story")
    child.expect("You asked")
    child.send("typed-ahead")
    child.sendintr()
    child.expect("interrupted")
    assert "typed-ahead" not in child.before
    child.expect(PROMPT)
    child.sendintr()
    assert finish(child) == 0


def test_ctrl_c_mid_answer_in_a_terminal_exits_130_quietly(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db", pace=0.03, TERM="xterm-256color")
    child = pexpect.spawn(
        SCRIPT, ["run", "tell me a long story"], env=env, encoding="utf-8", timeout=30
    )
    child.expect("You asked")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in (child.before or "")


def test_chat_without_input_leaves_no_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = spawn_chat(db, "--session", "nothing")
    child.sendeof()
    assert finish(child) == 0
    assert run_cli("sessions", "--json", env=cli_env(db)).stdout == ""
