"""``llm-worker run --mcp "COMMAND ARGS..."`` as a process: the server's tools are offered, called,
and remembered by the session like ``--tools``; nothing is left running when it exits."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from cli._helpers import cli_env, history, run_cli
from llm_worker.items import ToolResult
from llm_worker.store import SQLiteStore

from .conftest import PROBE, children


def test_run_with_mcp_calls_the_server_and_the_session_remembers_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    command = shlex.join([sys.executable, PROBE])
    first = run_cli("run", "--session", "s", "--mcp", command, "use echo to say hello", env=env)
    assert first.returncode == 0, first.stderr

    again = run_cli("run", "--session", "s", "echo once more", env=env)  # no --mcp: remembered
    assert again.returncode == 0, again.stderr
    results = [i for i in history(db, "s") if isinstance(i, ToolResult)]
    assert [(r.name, r.status) for r in results] == [("echo", "ok")] * 2
    with SQLiteStore(db, create=False) as store:
        stored = json.loads(store.session_info("s").metadata["mcp"])
    assert stored == {"stdio": [command], "http": []}
    assert children() == []


def test_a_server_that_cannot_start_is_one_error_line_naming_the_command(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db")
    result = run_cli("run", "--mcp", "no-such-mcp-server --flag", "use it", env=env)
    assert result.returncode == 1
    assert "no-such-mcp-server" in result.stderr
    assert "unexpected" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("llm-worker: error:"), result.stderr
