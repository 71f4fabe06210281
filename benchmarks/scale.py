"""Scale: 10 000 concurrent runs on the offline model, all cancelled at once; idle-worker memory.

Cancel-all runs in a fresh child process per backend and pace (``python -m benchmarks.scale
BACKEND PACE``), so its peak RSS is its own. The runs stream from a shared `OfflineModel` (one
chunk every ``PACE`` seconds each; 50 ms as shipped); once every run has committed its prompt,
and 0.3 s more so that each is mid-stream, one loop calls ``worker.cancel()`` on all of them.
Measured: the time from the first ``cancel()`` until every run has returned, how many returned
`Cancelled` and how many were cut mid-answer (an interrupted message kept), the tasks left
afterwards (must be 0), the peak RSS and RSS growth per run, and one pass of the loop just
before the cancel (how saturated it was).

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
import anyio.lowlevel

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


async def cancel_many(runs: int = RUNS, pace: float = 0.05, profiler: Any = None) -> dict[str, Any]:
    """Start ``runs`` runs, cancel them all mid-stream, wait for all; the measurements.

    ``profiler`` (``start()``/``stop()``, e.g. pyinstrument's) covers the cancel-all phase.
    """
    rss_before = _rss_mb()
    model = OfflineModel(pace=pace)
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
        lag_started = time.perf_counter()
        await anyio.lowlevel.checkpoint()  # one pass of the loop: how much is queued
        loop_pass = time.perf_counter() - lag_started
        if profiler is not None:
            profiler.start()
        began, began_cpu = time.perf_counter(), time.process_time()
        for worker in workers:
            worker.cancel("scale benchmark")
        cancel_calls = time.perf_counter() - began
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - began_cpu
    if profiler is not None:
        profiler.stop()
    tasks_left = len(anyio.get_running_tasks()) - tasks_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "runs": runs,
        "pace_s": pace,
        "loop_pass_ms": round(loop_pass * 1000, 2),
        "cancel_all_s": round(elapsed, 4),
        "cancel_all_cpu_s": round(cpu, 4),
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


def _child(backend: str, pace: float) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", backend, str(pace)],
        capture_output=True,
        text=True,
        check=True,
    )
    metrics: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return metrics


def run(backends: Sequence[str] = ("asyncio", "trio")) -> list[Row]:
    """Cancel-all rows (one child process each), then the idle-worker memory row.

    With the shipped pace (a chunk every 50 ms per run, like a real provider) 10 000 runs ask
    for more than one core can give, so the loop is saturated when the cancel comes (see
    ``loop_pass_ms``); the rows at a 1 s pace show the cancellation cost without that backlog.
    """
    rows = []
    for pace in (0.05, 1.0):
        for backend in backends:
            metrics = _child(backend, pace)
            summary = (
                f"all returned in {metrics['cancel_all_s']:.3f} s (cancel() calls "
                f"{metrics['cancel_calls_s']:.3f} s); tasks left {metrics['tasks_left']}; "
                f"{'all' if metrics['all_cancelled'] else 'NOT all'} cancelled, "
                f"{metrics['cut_mid_answer']} mid-answer; peak RSS "
                f"{metrics['peak_rss_mb']:.0f} MB ({metrics['rss_kb_per_run']:.0f} KB/run); "
                f"loop pass before cancel {metrics['loop_pass_ms']:.1f} ms"
            )
            if pace == 0.05:
                rows.append(Row(SECTION, f"{US} [{backend}]", metrics, summary, CANCEL_TARGETS))
            else:
                subject = f"{US} [{backend}], 1 s pace"
                notes = "unsaturated loop: for information"
                rows.append(Row(SECTION, subject, metrics, summary, notes=notes))
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
    if len(sys.argv) > 1:  # the child: BACKEND [PACE]; JSON on the last line
        pace = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
        print(json.dumps(anyio.run(cancel_many, RUNS, pace, backend=sys.argv[1])))
    else:
        from ._common import print_table

        print_table(run())
