"""Every example runs, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_the_demo_is_stopped_twice_and_keeps_everything() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_worker.demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("■ stopped") == 2  # mid-answer and mid-tool
    assert "slow_count: interrupted" in done.stdout  # the tool's partial output was kept
    assert "every call answered" in done.stdout
