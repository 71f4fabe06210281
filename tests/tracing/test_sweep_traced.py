"""The cancellation sweep with tracing on: cancelled at every await point, by every means, a
traced run keeps every invariant, and every run span ends, explaining the stop."""

from __future__ import annotations

import anyio.lowlevel
import pytest

from llm_worker import ToolContext, Worker, tool
from llm_worker.testing import SweepMode, cancellation_sweep
from llm_worker.testing._scripted import Script, ScriptedModel

from .conftest import Spans

pytestmark = pytest.mark.timeout(120)


@tool
async def crawl(steps: int, ctx: ToolContext) -> str:
    """A cooperative tool: a checkpoint per step, partial output when cancelled."""
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


def make_worker() -> Worker:
    script = Script.tool_calls(("crawl", {"steps": 2}), ("tally", {"n": 100}), text="On it.")
    model = ScriptedModel([script, Script.text("All done.", chunks=2)] + ["Again."] * 2)
    return Worker(model, tools=[crawl, tally])


@pytest.mark.parametrize("how", ["thread", "external", "supersede"])
async def test_a_traced_run_keeps_every_invariant_at_every_await(
    spans: Spans, how: SweepMode
) -> None:
    report = await cancellation_sweep(make_worker, "Go.", how=how)
    report.raise_for_violations()
    runs = spans.named("invoke_agent")
    assert runs
    assert all(span.end_time is not None for span in spans.all)
    stopped = [
        dict(s.attributes or {}) for s in runs if "llm_worker.cause.kind" in (s.attributes or {})
    ]
    assert stopped
    assert all("llm_worker.stop.noticed_at" in attributes for attributes in stopped)
    assert all("llm_worker.kept.items" in attributes for attributes in stopped)
