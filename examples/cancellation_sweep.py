"""Check your own agent: cancel it at every await point and verify every invariant.

`cancellation_sweep` runs the scenario once to count its await points, then re-runs it with a
fresh worker, cancelling at each of them in turn, and checks after each stop that nothing was
lost, every tool call was answered, nothing is left running and the worker runs again. Offline.
"""

import anyio
import anyio.lowlevel

from llm_worker import ToolContext, Worker, tool
from llm_worker.testing import Script, ScriptedModel, cancellation_sweep


@tool
async def lookup(topic: str, ctx: ToolContext) -> str:
    """Look a topic up."""
    await anyio.lowlevel.checkpoint()  # stands in for a network call
    if ctx.cancelled:
        return "lookup stopped early"
    await anyio.lowlevel.checkpoint()  # stands in for a network call
    return f"{topic}: 3 results"


def make_worker() -> Worker:
    """A fresh worker per re-run: a tool call, an answer, and one reply for the follow-up run."""
    model = ScriptedModel(
        [Script.tool_calls(("lookup", {"topic": "lighthouses"})), "Found three.", "Going on."]
    )
    return Worker(model, tools=[lookup])


async def main() -> None:
    for how in ("cancel", "thread", "token", "external"):
        report = await cancellation_sweep(make_worker, "Look up lighthouses.", how=how)
        print(
            f"{how:>8}: {report.runs} runs, {report.cancelled} cancelled, "
            f"{report.completed} completed, violations: {len(report.violations)}"
        )
        report.raise_for_violations()  # an AssertionError listing each broken invariant
    print("every invariant held at every await point")


if __name__ == "__main__":
    anyio.run(main)
