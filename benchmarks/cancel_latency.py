"""Cancel latency of this project's worker on the offline model: mid-stream and mid-tool.

Latency is the time from ``worker.cancel()`` (called from a task on the same loop) until the code
awaiting the run has its `Cancelled` — clean-up, ``on_abort`` and history commits included.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import anyio

from llm_worker import Cancelled, ToolContext, Worker, tool
from llm_worker.events import TextDelta, ToolStarted
from llm_worker.models.offline import OfflineModel


@dataclass
class Latency:
    scenario: str
    samples: list[float]
    kept: bool

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000


@tool
async def wait_for_stop(ctx: ToolContext) -> str:
    """A cooperative tool: works until its token is cancelled, then returns partial output."""
    await ctx.token.wait()
    return "partial work"


async def _one(worker: Worker, prompt: str, trigger: type, after: int) -> tuple[float, bool]:
    seen = 0
    pressed = 0.0
    async with worker.stream(prompt) as run:
        async for event in run:
            if isinstance(event, trigger):
                seen += 1
                if seen == after:
                    pressed = time.perf_counter()
                    worker.cancel("benchmark")
    ended = time.perf_counter()
    error = run.error
    assert isinstance(error, Cancelled), error
    kept = bool(error.partial.items) and any(
        getattr(item, "interrupted", False) or getattr(item, "status", "") == "interrupted"
        for item in error.partial.items
    )
    return ended - pressed, kept


async def measure(trials: int = 50) -> list[Latency]:
    """Mid-stream (after 50 text chunks) and mid-tool latencies, ``trials`` each."""
    stream_samples: list[float] = []
    tool_samples: list[float] = []
    kept_stream = kept_tool = True
    worker = Worker(OfflineModel(pace=0.0005, words_per_chunk=1), tools=[wait_for_stop])
    long_prompt = "Tell me everything about stopping agents, at length, please. " * 3
    for _ in range(trials):
        latency, kept = await _one(worker, long_prompt, TextDelta, 20)
        stream_samples.append(latency)
        kept_stream &= kept
        latency, kept = await _one(worker, "Use wait_for_stop now.", ToolStarted, 1)
        tool_samples.append(latency)
        kept_tool &= kept
    return [
        Latency("offline mid-stream", stream_samples, kept_stream),
        Latency("offline mid-tool (cooperative)", tool_samples, kept_tool),
    ]


def main() -> None:
    for backend in ("asyncio", "trio"):
        for result in anyio.run(measure, backend=backend):
            print(
                f"{backend:8s} {result.scenario:32s} median {result.median_ms:6.3f} ms"
                f"  p99 {result.p99_ms:6.3f} ms  kept partial: {result.kept}"
            )


if __name__ == "__main__":
    main()
