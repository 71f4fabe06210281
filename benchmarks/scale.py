"""Scale: 10 000 concurrent runs on the offline model, all cancelled at once; idle-worker memory.

Reports the time from the first ``cancel()`` until every run has returned, the tasks left running
afterwards (must be 0), the peak RSS of the process, and the memory one idle worker with a
20-item history costs (tracemalloc, averaged over many workers).
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from dataclasses import dataclass

import anyio

from llm_worker import Cancelled, Worker
from llm_worker.items import AssistantMessage, Item, TextPart, ToolCall, ToolResult, UserMessage
from llm_worker.models.offline import OfflineModel


@dataclass
class ScaleResult:
    runs: int
    cancel_all_seconds: float
    tasks_left: int
    all_cancelled: bool
    peak_rss_mb: float


async def cancel_many(runs: int = 10_000) -> ScaleResult:
    model = OfflineModel(pace=0.05)
    workers = [Worker(model) for _ in range(runs)]
    cancelled = 0
    started = anyio.Event()
    streaming = 0

    async def one(worker: Worker) -> None:
        nonlocal cancelled, streaming
        pending = worker.run("Tell me a long story about cancellation.")
        streaming += 1
        if streaming == runs:
            started.set()
        try:
            await pending
        except Cancelled:
            cancelled += 1

    tasks_before = len(anyio.get_running_tasks())
    async with anyio.create_task_group() as group:
        for worker in workers:
            group.start_soon(one, worker)
        await started.wait()
        await anyio.sleep(0.2)  # every run is mid-stream now
        began = time.perf_counter()
        for worker in workers:
            worker.cancel("scale benchmark")
    elapsed = time.perf_counter() - began
    tasks_left = len(anyio.get_running_tasks()) - tasks_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return ScaleResult(runs, elapsed, tasks_left, cancelled == runs, peak)


def _history(n: int) -> list[Item]:
    items: list[Item] = []
    while len(items) < n:
        items.append(UserMessage(text="What is the weather in Paris today?"))
        items.append(AssistantMessage(parts=(TextPart(text="Let me check that for you."),)))
        items.append(ToolCall(call_id=f"c{len(items)}", name="get_weather", raw_arguments="{}"))
        items.append(ToolResult(call_id=f"c{len(items) - 1}", name="get_weather", content="18°C"))
    return items[:n]


def idle_worker_bytes(workers: int = 1000, history_items: int = 20) -> float:
    """Average bytes one idle worker holds, history included (its model is shared)."""
    model = OfflineModel()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [Worker(model, history=_history(history_items)) for _ in range(workers)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == workers
    return (after - before) / workers


def main() -> None:
    for backend in ("asyncio", "trio"):
        result = anyio.run(cancel_many, backend=backend)
        print(
            f"{backend:8s} {result.runs} runs cancelled in {result.cancel_all_seconds:.3f} s, "
            f"tasks left {result.tasks_left}, all cancelled {result.all_cancelled}, "
            f"peak RSS {result.peak_rss_mb:.0f} MB"
        )
    print(f"idle worker with a 20-item history: {idle_worker_bytes() / 1024:.1f} KB")


if __name__ == "__main__":
    main()
