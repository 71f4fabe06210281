"""Running ``llm-worker`` as a process: environment, output reading, database checks."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from llm_worker.items import AssistantMessage, Item
from llm_worker.store import SQLiteStore

SCRIPT = str(Path(sys.executable).parent / "llm-worker")
MODULE = [sys.executable, "-m", "llm_worker"]
_SCRUBBED = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "LLM_WORKER_MODEL",
    "LLM_WORKER_DB",
    "LLM_WORKER_ASYNC_BACKEND",
    "LLM_WORKER_DEBUG",
)


def cli_env(db: Path, *, pace: float = 0.001, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: its own database, a fast offline model, no keys."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        LLM_WORKER_DB=str(db),
        LLM_WORKER_OFFLINE_PACE=str(pace),
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
    )
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODULE, *args],
        env=env,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*MODULE, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 20) -> bytes:
    """Read the process's stdout until ``needle`` appeared; return everything read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen within {timeout}s; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed before {needle!r}; got {data!r}")
            data += chunk
    return data


def one_error_line(stderr: str) -> str:
    """The single ``llm-worker: …`` line a failing command must print (and nothing else)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("llm-worker"), stderr
    return lines[0]


def history(db: Path, session: str) -> list[Item]:
    with SQLiteStore(db, create=False) as store:
        return store.load_history(session)


def assistant_messages(items: list[Item]) -> list[AssistantMessage]:
    return [item for item in items if isinstance(item, AssistantMessage)]
