"""The web service (``llm-worker serve``): Stop and disconnect latency, time to the first text
chunk against the library directly, and 200 concurrent streaming chats.

The server is the real command, ``llm-worker serve``, in a child process (offline model,
its own database); the client is ``httpx2`` in this process, so the numbers include HTTP, SSE
and the session store. Measured:

* Stop → ``abort``: from sending ``POST /api/chats/{id}/cancel`` (mid-stream, right after a
  text chunk) to reading the stream's ``abort`` chunk; median and p99.
* Disconnect → run cancelled: from closing the stream's connection mid-stream to the chat
  reported idle (``GET /api/chats/{id}``, polled); an upper bound of the server's reaction.
* Time to the first text chunk: ``POST /api/chat`` → first ``text-delta``, against
  ``worker.stream()`` → first `TextDelta` in this process (offline model, no pacing); the ratio.
* 200 chats at once: wall time, chunks per second, the server's RSS growth per chat at the peak,
  and after all ended, its open sockets (file descriptors) above the idle baseline and the
  chats still active or running (all must be 0).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

from llm_worker import Worker
from llm_worker.events import TextDelta
from llm_worker.models.offline import OfflineModel

from ._common import US, Row, Target, latency_metrics

SECTION = "web service (llm-worker serve, offline model, loopback HTTP)"
CONCURRENT = 200
STOP_TARGETS = (Target("p99_ms", "<=", 50, " ms"),)
SCALE_TARGETS = (Target("sockets_left", "==", 0), Target("chats_left", "==", 0))


class ServeProcess:
    """``llm-worker serve`` on a free port in a child process, with its own database."""

    def __init__(self, directory: Path, pace: float) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(LLM_WORKER_OFFLINE_PACE=str(pace), LLM_WORKER_DB=str(directory / "web.db"))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llm_worker", "serve", "--port", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("llm-worker serve did not start")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def sockets(self) -> int:
        count = 0
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed while we looked
                count += os.readlink(fd).startswith("socket:")
        return count

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def body(chat: str, text: str = "tell me something") -> dict[str, Any]:
    return {
        "id": chat,
        "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
    }


async def stop_latency(server: ServeProcess, trials: int) -> list[float]:
    samples: list[float] = []
    async with httpx2.AsyncClient(timeout=30) as client:
        for trial in range(trials):
            chat = f"stop-{trial}"
            async with client.stream("POST", f"{server.url}/api/chat", json=body(chat)) as stream:
                started = 0.0
                async for line in stream.aiter_lines():
                    if not started and '"text-delta"' in line:
                        started = time.perf_counter()
                        await client.post(f"{server.url}/api/chats/{chat}/cancel")
                    elif '"type": "abort"' in line:
                        samples.append(time.perf_counter() - started)
                        break
    return samples


async def disconnect_latency(server: ServeProcess, trials: int) -> list[float]:
    samples: list[float] = []
    async with httpx2.AsyncClient(timeout=30) as client:
        for trial in range(trials):
            chat = f"gone-{trial}"
            async with client.stream("POST", f"{server.url}/api/chat", json=body(chat)) as stream:
                async for line in stream.aiter_lines():
                    if '"text-delta"' in line:
                        break
            started = time.perf_counter()  # leaving the block closed the connection
            while (await client.get(f"{server.url}/api/chats/{chat}")).json()["running"]:
                pass
            samples.append(time.perf_counter() - started)
    return samples


async def first_chunk_service(server: ServeProcess, trials: int) -> list[float]:
    samples: list[float] = []
    async with httpx2.AsyncClient(timeout=30) as client:
        for trial in range(trials):
            started = time.perf_counter()
            async with client.stream(
                "POST", f"{server.url}/api/chat", json=body(f"first-{trial}", "hi")
            ) as stream:
                async for line in stream.aiter_lines():
                    if '"text-delta"' in line:
                        samples.append(time.perf_counter() - started)
                        break
    return samples


async def first_chunk_library(trials: int) -> list[float]:
    samples: list[float] = []
    model = OfflineModel(pace=0)
    for _ in range(trials):
        worker = Worker(model)
        started = time.perf_counter()
        async with worker.stream("hi") as run:
            async for event in run:
                if isinstance(event, TextDelta):
                    samples.append(time.perf_counter() - started)
                    break
    return samples


async def concurrent_chats(server: ServeProcess) -> dict[str, Any]:
    baseline_sockets = server.sockets()
    baseline_rss = server.rss_mb()
    peak_rss = baseline_rss
    chunks = 0
    limits = httpx2.Limits(max_connections=CONCURRENT + 10)
    async with httpx2.AsyncClient(timeout=120, limits=limits) as client:

        async def chat(number: int) -> None:
            nonlocal chunks
            async with client.stream(
                "POST", f"{server.url}/api/chat", json=body(f"many-{number}")
            ) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        chunks += 1

        async def sample_rss() -> None:
            nonlocal peak_rss
            while True:
                peak_rss = max(peak_rss, server.rss_mb())
                await anyio.sleep(0.05)

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            group.start_soon(sample_rss)
            async with anyio.create_task_group() as chats:
                for number in range(CONCURRENT):
                    chats.start_soon(chat, number)
            group.cancel_scope.cancel()
        elapsed = time.perf_counter() - started
        health: dict[str, Any] = {}
        for _ in range(100):  # the server releases each chat just after its last chunk
            health = (await client.get(f"{server.url}/api/health")).json()
            if health["active"] == 0:
                break
            await anyio.sleep(0.05)
    closed = time.perf_counter()
    while server.sockets() > baseline_sockets and time.perf_counter() - closed < 10:
        await anyio.sleep(0.05)  # the server sees each closed connection and closes its end
    return {
        "chats": CONCURRENT,
        "seconds": round(elapsed, 2),
        "chunks_per_s": round(chunks / elapsed),
        "rss_kb_per_chat": round((peak_rss - baseline_rss) * 1024 / CONCURRENT, 1),
        "sockets_left": max(0, server.sockets() - baseline_sockets),
        "sockets_closed_after_s": round(time.perf_counter() - closed, 2),
        "chats_left": health["active"] + health["running"],
    }


def run(trials: int = 60) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="llm-worker-web-bench-") as tmp:
        _mkdir(Path(tmp) / "paced")
        paced = ServeProcess(Path(tmp) / "paced", pace=0.01)
        try:
            stops = anyio.run(stop_latency, paced, trials)
            gone = anyio.run(disconnect_latency, paced, trials)
            scale = anyio.run(concurrent_chats, paced)
        finally:
            paced.close()
        _mkdir(Path(tmp) / "fast")
        fast = ServeProcess(Path(tmp) / "fast", pace=0)
        try:
            anyio.run(first_chunk_service, fast, 5)  # warm-up
            service = anyio.run(first_chunk_service, fast, trials)
        finally:
            fast.close()
    library = anyio.run(first_chunk_library, trials)
    stop_metrics = latency_metrics(stops)
    rows.append(
        Row(
            SECTION,
            f"{US} Stop → abort chunk",
            stop_metrics,
            f"{stop_metrics['median_ms']:.2f} / {stop_metrics['p99_ms']:.2f} ms (median / p99)",
            STOP_TARGETS,
        )
    )
    gone_metrics = latency_metrics(gone)
    rows.append(
        Row(
            SECTION,
            f"{US} disconnect → run cancelled",
            gone_metrics,
            f"{gone_metrics['median_ms']:.2f} / {gone_metrics['p99_ms']:.2f} ms (median / p99, "
            "polled)",
        )
    )
    service_ms = statistics.median(service) * 1000
    library_ms = statistics.median(library) * 1000
    first = {
        "service_median_ms": round(service_ms, 3),
        "library_median_ms": round(library_ms, 3),
        "ratio": round(service_ms / library_ms, 1),
    }
    rows.append(
        Row(
            SECTION,
            f"{US} time to first text chunk",
            first,
            f"service {service_ms:.2f} ms vs library {library_ms:.3f} ms ({first['ratio']}×)",
        )
    )
    rows.append(
        Row(
            SECTION,
            f"{US} {CONCURRENT} concurrent streaming chats",
            scale,
            f"{scale['seconds']} s, {scale['chunks_per_s']:,} chunks/s, "
            f"{scale['rss_kb_per_chat']} KB RSS per chat; left: {scale['sockets_left']} sockets, "
            f"{scale['chats_left']} chats",
            SCALE_TARGETS,
        )
    )
    return rows


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    from ._common import print_table

    print_table(run(trials=int(sys.argv[1]) if len(sys.argv) > 1 else 60))
