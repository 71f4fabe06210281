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
import anyio.to_thread
import openai

from llm_worker import Cancelled, Worker
from llm_worker.items import (
    AssistantMessage,
    Item,
    TextPart,
    ToolCall,
    ToolResult,
    UserMessage,
)
from llm_worker.models import Model, Timeouts
from llm_worker.models.offline import OfflineModel
from llm_worker.models.openai_chat import OpenAIChatModel

from . import _peers
from ._common import US, Row, Target
from ._server import ServerProcess

RUNS = 10_000
SECTION = "scale (10 000 concurrent runs, offline model, all cancelled)"
SATURATED_RUNS = 1_000
SATURATED_PACE = 0.2
SATURATED_SECTION = "cancel-all, saturated loop (1 000 runs, offline model, 5 000 chunks/s)"
SATURATED_TARGETS = (
    Target("cancel_all_s", "<=", 0.2, " s"),
    Target("tasks_left", "==", 0),
    Target("all_cancelled", "==", 1),
)
HTTP_RUNS = 1_000
HTTP_PACE = 0.5
HTTP_SECTION = "cancel-all over HTTP (loopback server, a chunk every 0.5 s per run)"
HTTP_TARGETS = (Target("tasks_left", "==", 0), Target("all_cancelled", "==", 1))
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


async def cancel_many(
    runs: int = RUNS, pace: float = 0.05, profiler: Any = None, server: ServerProcess | None = None
) -> dict[str, Any]:
    """Start ``runs`` runs, cancel them all mid-stream, wait for all; the measurements.

    ``profiler`` (``start()``/``stop()``, e.g. pyinstrument's) covers the cancel-all phase. With
    ``server`` the runs stream over HTTP from it (one connection each) instead of the offline
    model.
    """
    rss_before = _rss_mb()
    model: Model = OfflineModel(pace=pace) if server is None else _http_model(server, runs)
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
        for index, worker in enumerate(workers):
            group.start_soon(one, worker)
            if server is not None and index % 100 == 99:
                # Connections in waves: a burst of thousands of SYNs overflows the server's
                # accept backlog, and the kernel's 1 s, 3 s, ... retries would time the backlog.
                await anyio.sleep(0.05)
        await all_started.wait()
        if server is not None:  # every request has reached the server and is streaming
            reached, _ = await anyio.to_thread.run_sync(
                server.wait_for, "streams_started", runs, 120.0
            )
            assert reached, "not every run reached the server"
        await anyio.sleep(0.3 if server is None else pace + 0.3)  # every run is mid-stream now
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
    if isinstance(model, OpenAIChatModel):
        await model.aclose()
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


def _http_model(server: ServerProcess, runs: int) -> OpenAIChatModel:
    """The shipped Chat Completions model over an SDK client whose pool holds ``runs``
    connections (the SDK's default pool stops at 1 000)."""
    import httpx2

    limits = httpx2.Limits(max_connections=runs + 10, max_keepalive_connections=runs + 10)
    client = openai.AsyncOpenAI(
        base_url=server.openai_base_url,
        api_key="x",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )
    # A generous connect timeout: on a loaded machine a thousand connects can take seconds.
    return OpenAIChatModel(_peers.MODEL, client=client, timeouts=Timeouts(connect=60.0))


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


def _child(backend: str, pace: float, runs: int = RUNS, http: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scale", backend, str(pace), str(runs)]
    child = subprocess.run(
        command + (["http"] if http else []), capture_output=True, text=True, check=True
    )
    metrics: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return metrics


def _summary(metrics: dict[str, Any]) -> str:
    return (
        f"all returned in {metrics['cancel_all_s']:.3f} s, CPU {metrics['cancel_all_cpu_s']:.3f} s "
        f"(cancel() calls {metrics['cancel_calls_s']:.3f} s); tasks left {metrics['tasks_left']}; "
        f"{'all' if metrics['all_cancelled'] else 'NOT all'} cancelled, "
        f"{metrics['cut_mid_answer']} mid-answer; peak RSS "
        f"{metrics['peak_rss_mb']:.0f} MB ({metrics['rss_kb_per_run']:.0f} KB/run); "
        f"loop pass before cancel {metrics['loop_pass_ms']:.1f} ms"
    )


def run(backends: Sequence[str] = ("asyncio", "trio"), quick: bool = False) -> list[Row]:
    """Cancel-all rows (one child process each), then the idle-worker memory row.

    With the shipped pace (a chunk every 50 ms per run, like a real provider) 10 000 runs ask
    for more than one core can give, so the loop is saturated when the cancel comes (see
    ``loop_pass_ms``); the rows at a 1 s pace show the cancellation cost without that backlog.
    The saturated row: 1 000 runs at 0.2 s (5 000 chunks/s in all). Over HTTP: `HTTP_RUNS` runs
    against the loopback server, one connection each (``quick``: 500, one backend, no 1 s pace).
    """
    if quick:  # a smoke run: one backend, no 1 s pace rows
        backends = backends[:1]
    rows = []
    for pace in (0.05,) if quick else (0.05, 1.0):
        for backend in backends:
            metrics = _child(backend, pace)
            if pace == 0.05:
                rows.append(
                    Row(SECTION, f"{US} [{backend}]", metrics, _summary(metrics), CANCEL_TARGETS)
                )
            else:
                subject = f"{US} [{backend}], 1 s pace"
                notes = "unsaturated loop: for information"
                rows.append(Row(SECTION, subject, metrics, _summary(metrics), notes=notes))
    for backend in backends:
        metrics = _child(backend, SATURATED_PACE, SATURATED_RUNS)
        subject = f"{US} [{backend}]"
        rows.append(Row(SATURATED_SECTION, subject, metrics, _summary(metrics), SATURATED_TARGETS))
    http_runs = 200 if quick else HTTP_RUNS
    for backend in backends:
        metrics = _child(backend, HTTP_PACE, http_runs, http=True)
        subject = f"{US} [{backend}], {http_runs:,} runs".replace(",", " ")
        notes = (
            f"{http_runs} concurrent streams is what this 2-core machine runs in reasonable "
            "time next to the server process; the offline rows above are the 10 000-run figure"
        )
        rows.append(
            Row(HTTP_SECTION, subject, metrics, _summary(metrics), HTTP_TARGETS, notes=notes)
        )
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
    if len(sys.argv) > 1:  # the child: BACKEND [PACE [RUNS [http]]]; JSON on the last line
        backend = sys.argv[1]
        pace = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
        runs = int(sys.argv[3]) if len(sys.argv) > 3 else RUNS
        if "http" in sys.argv[4:]:
            with ServerProcess() as bench_server:
                bench_server.serve_text(100_000, pace)
                metrics = anyio.run(cancel_many, runs, pace, None, bench_server, backend=backend)
        else:
            metrics = anyio.run(cancel_many, runs, pace, backend=backend)
        print(json.dumps(metrics))
    else:
        from ._common import print_table

        print_table(run(quick="--quick" in sys.argv))
