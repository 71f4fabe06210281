"""What people who use ``llm`` and ``clai`` expect: continue, short flags, their own tools,
model options per session, ``models``, exports, Markdown in a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pexpect

from llm_worker.items import ToolResult, UserMessage, load_item
from llm_worker.store import SQLiteStore

from ._helpers import SCRIPT, cli_env, history, run_cli

TOOLS_FILE = '''
from llm_worker import tool


@tool
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper() + "!"
'''


def test_continue_picks_the_most_recent_session(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db")
    assert run_cli("run", "--session", "old", "first", env=env).returncode == 0
    assert run_cli("run", "--session", "new", "second", env=env).returncode == 0
    done = run_cli("run", "-c", "third", env=env)
    assert done.returncode == 0, done.stderr
    assert "session new" in done.stderr
    users = [i.text for i in history(tmp_path / "s.db", "new") if isinstance(i, UserMessage)]
    assert users == ["second", "third"]


def test_continue_with_no_session_yet_is_a_clear_error(tmp_path: Path) -> None:
    done = run_cli("run", "--continue", "hi", env=cli_env(tmp_path / "s.db"))
    assert done.returncode == 1
    assert "no session to continue" in done.stderr
    assert not (tmp_path / "s.db").exists()


def test_short_flags_and_options_are_remembered_per_session(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    argv = ["run", "-m", "offline", "-s", "Be brief.", "-o", "temperature", "0.2"]
    assert run_cli(*argv, "--session", "o", "hi", env=env).returncode == 0
    assert (
        run_cli("run", "--session", "o", "-o", "max_tokens", "50", "again", env=env).returncode == 0
    )
    with SQLiteStore(db) as store:
        info = store.session_info("o")
    assert info.system == "Be brief."
    assert json.loads(info.metadata["options"]) == {"temperature": "0.2", "max_tokens": "50"}
    bad = run_cli("run", "--session", "o", "-o", "temperature", "hot", "x", env=env)
    assert bad.returncode == 2
    assert "expects a float" in bad.stderr


def test_tools_from_a_file_and_from_a_module_attribute(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    (tmp_path / "mytools.py").write_text(TOOLS_FILE)
    env = cli_env(db, PYTHONPATH=str(tmp_path))
    by_path = run_cli(
        "run", "--tools", str(tmp_path / "mytools.py"), "--session", "f", "use shout", env=env
    )
    assert by_path.returncode == 0, by_path.stderr
    by_module = run_cli("run", "--tools", "mytools:shout", "--session", "m", "use shout", env=env)
    assert by_module.returncode == 0, by_module.stderr
    for session in ("f", "m"):
        results = [i for i in history(db, session) if isinstance(i, ToolResult)]
        assert [r.name for r in results] == ["shout"]
    again = run_cli("run", "--session", "f", "use shout again", env=env)  # remembered
    assert len([i for i in history(db, "f") if isinstance(i, ToolResult)]) == 2, again.stderr
    missing = run_cli("run", "--tools", "mytools:nothing", "hi", env=env)
    assert missing.returncode == 2
    assert "has no 'nothing'" in missing.stderr


def test_models_lists_specs_and_which_keys_are_set_never_their_values(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db", OPENAI_API_KEY="sk-test-SECRET-VALUE-1234")
    done = run_cli("models", env=env)
    assert done.returncode == 0, done.stderr
    assert "openai:<model>" in done.stdout
    assert "OPENAI_API_KEY set" in done.stdout
    assert "ANTHROPIC_API_KEY not set" in done.stdout
    assert "SECRET" not in done.stdout


def test_show_as_json_is_lossless_and_as_markdown_is_an_export(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    assert (
        run_cli("run", "--tools", "demo", "--session", "x", "get_weather Oslo", env=env).returncode
        == 0
    )
    as_json = run_cli("show", "x", "--json", env=env)
    assert [load_item(line) for line in as_json.stdout.splitlines()] == history(db, "x")
    as_markdown = run_cli("show", "x", "--markdown", env=env)
    assert as_markdown.stdout.startswith("# Session x")
    assert "## User" in as_markdown.stdout
    assert "**Tool call** `get_weather`" in as_markdown.stdout


def _terminal_run(tmp_path: Path, *args: str) -> str:
    env = cli_env(tmp_path / "s.db", pace=0.001, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(SCRIPT, ["run", *args], env=env, encoding="utf-8", timeout=30)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return str(child.before)


def test_a_terminal_gets_markdown_rendered_and_plain_turns_it_off(tmp_path: Path) -> None:
    rendered = _terminal_run(tmp_path, "--session", "md", "**bold** and `code`")
    plain = _terminal_run(tmp_path, "--plain", "--session", "pl", "**bold** and `code`")
    assert "**bold**" in plain  # the text as the model wrote it
    assert "**bold**" not in rendered  # rich drew it bold instead
    assert "bold" in rendered


def test_a_terminal_shows_the_time_waiting_and_each_tool_running(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db", pace=0.01, TERM="xterm-256color")
    child = pexpect.spawn(
        SCRIPT,
        ["run", "--tools", "demo", "slow_count to 30 step 0.05"],
        env=env,
        encoding="utf-8",
        timeout=30,
    )
    child.expect(r"slow_count running \d+\.\ds")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_help_lists_the_same_model_specs_as_the_registry() -> None:
    from llm_worker.cli._common import MODEL_HELP
    from llm_worker.models._registry import SPEC_HELP

    assert MODEL_HELP == SPEC_HELP  # written out in the CLI so that --help loads no models
