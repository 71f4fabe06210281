"""``llm-worker sessions``, ``show`` and ``delete``."""

from __future__ import annotations

import json
from pathlib import Path

from llm_worker.items import load_item

from ._helpers import cli_env, run_cli


def test_no_database_yet(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = run_cli("sessions", env=cli_env(db))
    assert done.returncode == 0
    assert done.stdout == f"no sessions yet (database: {db})\n"
    assert not db.exists()  # listing creates nothing


def test_listing_showing_deleting(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    run_cli("run", "--session", "alpha", "hello", env=env)
    run_cli("run", "--session", "beta", "--tools", "demo", "get_weather for Rome", env=env)

    listed = run_cli("sessions", env=env)
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MODEL", "ITEMS", "LAST", "ACTIVITY", "STATUS"]
    assert lines[1].split()[:3] == ["beta", "offline", "5"]  # most recent first
    assert lines[2].split()[:3] == ["alpha", "offline", "2"]

    rows = [json.loads(line) for line in run_cli("sessions", "--json", env=env).stdout.splitlines()]
    assert [(r["name"], r["items"], r["last_run"]["outcome"]) for r in rows] == [
        ("beta", 5, "finished"),
        ("alpha", 2, "finished"),
    ]

    shown = run_cli("show", "beta", env=env)
    assert shown.returncode == 0
    text = shown.stdout
    assert text.startswith("session beta · model offline · 5 items")
    assert "you: get_weather for Rome" in text
    assert 'tool call: get_weather(city="Rome")' in text
    assert "tool result: get_weather → Rome:" in text
    assert "\x1b" not in text

    dumped = run_cli("show", "beta", "--json", env=env).stdout.splitlines()
    items = [load_item(line) for line in dumped]
    assert [i.type for i in items] == ["user", "assistant", "tool_call", "tool_result", "assistant"]

    deleted = run_cli("delete", "alpha", env=env)
    assert (deleted.returncode, deleted.stdout) == (0, "deleted session alpha\n")
    assert "alpha" not in run_cli("sessions", env=env).stdout


def test_markup_in_content_is_printed_verbatim(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db)
    run_cli("run", "--session", "m", "[bold red]not markup[/]", env=env)
    shown = run_cli("show", "m", env=env).stdout
    assert "you: [bold red]not markup[/]" in shown
