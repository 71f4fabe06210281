"""The cancellation sweep over the worker's main scenarios: cancel at every await point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from llm_worker import Hooks, Pause, ToolCall, ToolContext, UserMessage, Worker, tool
from llm_worker.hooks import HookContext
from llm_worker.testing import SweepMode, cancellation_sweep
from llm_worker.testing._scripted import Script, ScriptedModel

pytestmark = pytest.mark.timeout(120)


@tool
async def lookup(key: str) -> str:
    """Answers after one checkpoint."""
    await anyio.lowlevel.checkpoint()
    return f"value of {key}"


@tool
async def crawl(steps: int, ctx: ToolContext) -> str:
    """A slow cooperative tool: a checkpoint per step, partial output when cancelled."""
    done = 0
    while done < steps and not ctx.cancelled:
        await anyio.lowlevel.checkpoint()
        done += 1
    return f"crawled {done} of {steps}"


@tool
def tally(n: int, ctx: ToolContext) -> str:
    """A sync tool in a thread that looks at its token."""
    total = 0
    for i in range(n):
        if ctx.cancelled:
            return f"partial total {total}"
        total += i
    return f"total {total}"


class PauseBeforeTools(Hooks):
    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Pause:
        await anyio.lowlevel.checkpoint()
        return Pause("needs approval")


class ScreenThePrompt(Hooks):
    """An async prompt hook (a moderation call, say): three awaits before the run goes on."""

    async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> None:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()


def scenario(name: str) -> Callable[[], Worker]:
    follow_up = Script.text("Follow-up answer.", chunks=2)
    scripts: dict[str, tuple[list[Any], dict[str, Any]]] = {
        "plain text": ([Script.text("One two three four five six.", chunks=6)], {}),
        "reasoning + text": (
            [Script.text("The answer is four.", chunks=4, reasoning="Two plus two, carefully.")],
            {},
        ),
        "parallel tool calls": (
            [
                Script.tool_calls(("lookup", {"key": "a"}), ("lookup", {"key": "b"}), text="Hm."),
                Script.text("Both looked up.", chunks=3),
            ],
            {"tools": [lookup]},
        ),
        "slow cooperative tool": (
            [Script.tool_calls(("crawl", {"steps": 8})), Script.text("Crawled.", chunks=2)],
            {"tools": [crawl], "tool_grace": 1.0},
        ),
        "sync tool": (
            [Script.tool_calls(("tally", {"n": 1000})), Script.text("Tallied.", chunks=2)],
            {"tools": [tally], "tool_grace": 1.0},
        ),
        "hook that pauses": (
            [Script.tool_calls(("lookup", {"key": "a"}))],
            {"tools": [lookup], "hooks": [PauseBeforeTools()]},
        ),
        "hook that screens the prompt": (
            [Script.text("Screened.", chunks=2)],
            {"hooks": [ScreenThePrompt()]},
        ),
    }
    responses, options = scripts[name]

    def make() -> Worker:
        return Worker(ScriptedModel([*responses, follow_up]), **options)

    return make


SCENARIOS = [
    "plain text",
    "reasoning + text",
    "parallel tool calls",
    "slow cooperative tool",
    "sync tool",
    "hook that pauses",
    "hook that screens the prompt",
]


@pytest.mark.parametrize("name", SCENARIOS)
async def test_cancelling_at_every_checkpoint_keeps_every_invariant(
    name: str, record_sweep: Any
) -> None:
    report = await cancellation_sweep(scenario(name), "Go.")
    report.raise_for_violations()
    assert report.checkpoints > 3
    assert report.cancelled > 0
    record_sweep(f"worker / {name} / cancel", report)


@pytest.mark.parametrize("how", ["token", "thread", "timeout", "supersede", "external"])
@pytest.mark.parametrize("name", ["plain text", "parallel tool calls", "slow cooperative tool"])
async def test_every_way_of_cancelling_keeps_every_invariant(
    name: str, how: SweepMode, record_sweep: Any
) -> None:
    report = await cancellation_sweep(scenario(name), "Go.", how=how)
    report.raise_for_violations()
    assert report.cancelled > 0
    record_sweep(f"worker / {name} / {how}", report)


async def test_the_sweep_detects_a_broken_invariant() -> None:
    """The sweep must not pass vacuously: a worker that drops results is caught."""

    def broken() -> Worker:
        worker = scenario("parallel tool calls")()
        original = worker._answer_unanswered
        worker._answer_unanswered = lambda run, cause: None  # type: ignore[method-assign]
        assert original is not None
        return worker

    report = await cancellation_sweep(broken, "Go.", follow_up=None)
    assert not report.ok
    assert "tool-results" in report.counts()
    assert any("unanswered" in v or "before the results" in v for v in report.violations)
