"""Every example runs, as a user would run it, and prints what it is there to show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

# What each example must print: the behaviour it demonstrates, not incidental wording.
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "tool_result counted to",
        # Not the reason: a cancel from another thread (here the deadline's timer) can race with
        # the tool map's own cancel scope and give the tools "the awaiting task was cancelled".
        "; the output above is partial.]",
        "finished (My previous answer was interrupted.)",
    ],
    "stop_button.py": [
        "-> stopped (explicit: user pressed Stop); kept:",
        "   assistant (interrupted)",
        "   tool result slow_count: interrupted: counted to",
        "-> finished",
        "note sent to the model: [The previous turn was interrupted (explicit: user pressed Stop).",
        "a Stop while idle does nothing: worker.cancel() -> False",
    ],
    "fake_provider.py": [
        "retrying: attempt 1 failed (openai answered HTTP 429",
        "waiting 0.2s",
        "answer: Hello from the fake server.",
        "requests received: 2;",
        "stopped (deadline); kept: 'The answer is '",
        "client left mid-stream: 1; open connections: 0",
        "sent assistant: The answer is",
        "sent user: [The previous turn was interrupted (deadline: the run timed out after 0.5s).",
        "sent user: Go on.",
    ],
    "gemini_stop.py": [
        "retrying after 0.2s: gemini answered HTTP 429: Quota exceeded.",
        "tool secret: the secret of mellon",
        "tool secret: the secret of sesame",
        "answer: Both secrets found.",
        "signature sent back on the first call: c2lnbmF0dXJl",
        "stopped; kept: 'Once upon ",
        "sent user: [The previous turn was interrupted (explicit: user pressed Stop).",
        "sent user: Go on.",
    ],
    "sessions.py": [
        "stopped: the run timed out after 0.5s",
        "second open refused: session 'trip-planning' is in use by this process",
        "session trip-planning: 2 items, status 'interrupted'",
        "on reopening: the last run was interrupted (the run timed out after 0.5s)",
        "   assistant (interrupted)\n   note\n",
        "resumed: finished: (My previous answer was interrupted.)",
        ": cancelled deadline",
        ": finished",
    ],
    "hooks.py": [
        "run: paused",
        "result delete_file: skipped: Skipped: deleting system files is not allowed",
        "waiting for approval: read_file({'path': 'notes.txt'}), "
        "delete_file({'path': 'build/old.log'})",
        "resume: finished",
        "result read_file: ok: (contents of notes.txt)",
        "result delete_file: ok: deleted build/old.log",
        "on_abort: prompts must not contain passwords (kind aborted)",
        "run: aborted by a hook: prompts must not contain passwords",
    ],
    "temporal_stop.py": [
        "-> stopped (explicit: Stop pressed in another process); kept:",
        "   tool result slow_count: interrupted: counted to",
        "-> finished: (My previous answer was interrupted.)",
        "a Stop after the end does nothing: cancel() -> False",
    ],
    "web_stop.py": [
        "header x-vercel-ai-ui-message-stream: v1",
        "stop: {'cancelled': True}",
        "interrupted: {'kind': 'explicit', 'reason': 'user pressed Stop'}",
        "data-interrupted abort",
        "a second Stop, now idle: {'cancelled': False}",
        "continued: finished",
        "history: ['user', 'assistant', 'assistant']",
    ],
    "mcp_stop.py": [
        "progress: counted 3",
        "stopped: the user pressed Stop",
        "kept count (interrupted):\n  counted 1\n  counted 2\n  counted 3\n",
        "the server's stderr: counter: asked to stop: the user pressed Stop",
        "next run: finished",
        "closed: the server process has exited",
    ],
    "structured_output.py": [
        "validated: Recipe(name='Tea', steps=[Step(title='Boil water', minutes=3)])",
        "asked for: Recipe",
        "  growing: PartialRecipe(name='Pancakes', steps=None)",
        "stopped; kept: PartialRecipe(name='Pancakes', steps=[PartialStep(title='Mix', minutes=5), "
        "PartialStep(title='Fr', minutes=None)])",
        "attachment sent as: ['text', 'image_url']",
        "fallback: 'Hello from the secondary.' by anthropic:claude-sonnet-4-6",
    ],
    "cancellation_sweep.py": [
        "  cancel: ",
        "  thread: ",
        "   token: ",
        "external: ",
        "violations: 0",
        "every invariant held at every await point",
    ],
}


def run_example(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    done = run_example(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    for expected in EXPECTED[path.name]:
        assert expected in done.stdout, f"{expected!r} not in the output:\n{done.stdout}"


def test_every_example_says_what_it_must_print() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


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
