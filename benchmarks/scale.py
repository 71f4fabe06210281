"""Scale: 10 000 concurrent runs on the offline model, all cancelled at once; idle-worker memory.

Cancel-all runs in a fresh child process per backend (``python -m benchmarks.scale BACKEND``),
so its peak RSS is its own. The runs stream from a shared `OfflineModel` (one chunk every 50 ms
each); once every run has committed its prompt, and 0.3 s more so that each is mid-stream, one
loop calls ``worker.cancel()`` on all of them. Measured: the time from the first ``cancel()``
until every run has returned, how many returned `Cancelled` and how many were cut mid-answer
(an interrupted message kept), the tasks left afterwards (must be 0), the peak RSS, and RSS
growth per run.

Idle-worker memory is measured in this process with tracemalloc: the bytes 1 000 workers with a
20-item history hold, divided by 1 000 (their model is shared).
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

import anyio

from llm_worker import Cancelled, Worker
from llm_worker.items import (
    AssistantMessage,
    Item,
    TextPart,
    ToolCall,
    ToolResult,
    UserMessage,
)
from llm_worker.models.offline import OfflineModel

from ._common import US, Row, Target

RUNS = 10_000
SECTION = "scale (10 000 concurrent runs, offline model, all cancelled)"
MEMORY_SECTION = "memory per idle worker (20-item history)"
CANCEL_TARGETS = (
    Target("cancel_all_s", "<=", 1.0, " s"),
    Target("tasks_left", "==", 0),
    Target("all_cancelled", "==", 1),
)
MEMORY_TARGET = Target("kb_per_worker", "<=", 50, " KB")


def _rss_mb() -> float:
    """Current resident set size in MB (Linux ``/proc``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def cancel_many(runs: int = RUNS) -> dict[str, Any]:
    """Start ``runs`` runs, cancel them all mid-stream, wait for all; the measurements."""
    rss_before = _rss_mb()
    model = OfflineModel(pace=0.05)
    workers = [Worker(model) for _ in range(runs)]
    started = 0
    all_started = anyio.Event()
    cancelled = mid_stream = 0

    def on_commit(items: Sequence[Item]) -> None:
        nonlocal started
        if any(isinstance(item, UserMessage) for item in items):
            started += 1
            if started == runs:
                all_started.set()

    for worker in workers:
        worker.on_commit(on_commit)

    async def one(worker: Worker) -> None:
        nonlocal cancelled, mid_stream
        try:
            await worker.run("Tell me a long story about cancellation.")
        except Cancelled as exc:
            cancelled += 1
            mid_stream += any(
                isinstance(item, AssistantMessage) and item.interrupted and item.text
                for item in exc.partial.items
            )

    tasks_before = len(anyio.get_running_tasks())
    async with anyio.create_task_group() as group:
        for worker in workers:
            group.start_soon(one, worker)
        await all_started.wait()
        await anyio.sleep(0.3)  # every run is mid-stream now
        began = time.perf_counter()
        for worker in workers:
            worker.cancel("scale benchmark")
        cancel_calls = time.perf_counter() - began
    elapsed = time.perf_counter() - began
    tasks_left = len(anyio.get_running_tasks()) - tasks_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "runs": runs,
        "cancel_all_s": round(elapsed, 4),
        "cancel_calls_s": round(cancel_calls, 4),
        "tasks_left": tasks_left,
        "all_cancelled": int(cancelled == runs),
        "cut_mid_answer": mid_stream,
        "peak_rss_mb": round(peak, 1),
        "rss_kb_per_run": round((peak - rss_before) * 1024 / runs, 1),
    }


def _history(n: int) -> list[Item]:
    items: list[Item] = []
    while len(items) < n:
        items.append(UserMessage(text="What is the weather in Paris today?"))
        items.append(AssistantMessage(parts=(TextPart(text="Let me check that for you."),)))
        items.append(ToolCall(call_id=f"c{len(items)}", name="get_weather", raw_arguments="{}"))
        items.append(ToolResult(call_id=f"c{len(items) - 1}", name="get_weather", content="18°C"))
    return items[:n]


def idle_worker_bytes(workers: int = 1000, history_items: int = 20) -> float:
    """Average bytes one idle worker holds, its own history included (the model is shared)."""
    model = OfflineModel()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [Worker(model, history=_history(history_items)) for _ in range(workers)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == workers
    return (after - before) / workers


def run(backends: Sequence[str] = ("asyncio", "trio")) -> list[Row]:
    """Cancel-all rows (one child process per backend), then the idle-worker memory row."""
    rows = []
    for backend in backends:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", backend],
            capture_output=True,
            text=True,
            check=True,
        )
        metrics = json.loads(child.stdout.strip().splitlines()[-1])
        summary = (
            f"all returned {metrics['cancel_all_s']:.3f} s after the first cancel "
            f"(cancel() calls {metrics['cancel_calls_s']:.3f} s), tasks left "
            f"{metrics['tasks_left']}, cancelled {'all' if metrics['all_cancelled'] else 'NOT all'}"
            f" ({metrics['cut_mid_answer']} mid-answer), peak RSS {metrics['peak_rss_mb']:.0f} MB "
            f"({metrics['rss_kb_per_run']:.0f} KB/run)"
        )
        rows.append(Row(SECTION, f"{US} [{backend}]", metrics, summary, CANCEL_TARGETS))
    kb = idle_worker_bytes() / 1024
    rows.append(
        Row(
            MEMORY_SECTION,
            US,
            {"kb_per_worker": round(kb, 2)},
            f"{kb:.1f} KB per worker (tracemalloc, 1 000 workers)",
            (MEMORY_TARGET,),
        )
    )
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1:  # the child: one backend, JSON on the last line
        print(json.dumps(anyio.run(cancel_many, backend=sys.argv[1])))
    else:
        from ._common import print_table

        print_table(run())
