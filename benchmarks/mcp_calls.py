"""MCP tool servers: how fast a Stop reaches the server, how fast the run returns, and what a
trivial MCP call costs next to a local ``@tool``.

One server (``_mcp_server.py``) per transport: over stdio, started by the worker; over
streamable HTTP, a child process on a loopback port. Each cancel trial runs ``count`` (progress
every 5 ms), presses ``run.cancel()`` on the third progress event, and takes:

* *cancel → server notified*: until the server's dispatcher read ``notifications/cancelled``
  (stamped by the server with ``time.monotonic()``, the machine-wide clock);
* *cancel → run returned*: until the run ended with `Cancelled`, the partial progress kept.

The call overhead is a whole run (a scripted model asks for one call, then answers) with the
MCP ``echo`` against the same run with a local async ``@tool``; the difference is what the MCP
round trip adds to one call. asyncio only (trio takes the same code path in the SDK).
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from llm_worker import Cancelled, Worker, tool
from llm_worker.events import ToolProgress
from llm_worker.mcp import MCPServer
from llm_worker.testing import Script, ScriptedModel

from ._common import US, Row, latency_metrics

SECTION = "MCP tool servers"
SERVER = str(Path(__file__).resolve().parent / "_mcp_server.py")


@tool
async def echo(text: str) -> str:
    """Return the text."""
    return text


async def _cancel_trials(server: MCPServer, log: Path, trials: int) -> dict[str, Any]:
    notified: list[float] = []
    returned: list[float] = []
    async with Worker(ScriptedModel([]), tools=[server]) as worker:
        for trial in range(trials + 1):  # the first one warms the connection up
            worker.model = ScriptedModel([Script.tool_calls(("count", {})), "ok"])
            stamps = len(_stamps(log))
            pressed = 0.0
            seen = 0
            async with worker.stream("Count.") as run:
                async for event in run:
                    if isinstance(event, ToolProgress):
                        seen += 1
                        if seen == 3:
                            pressed = time.monotonic()
                            run.cancel("benchmark stop")
            done = time.monotonic()
            assert isinstance(run.error, Cancelled)
            with anyio.fail_after(5):
                while len(lines := _stamps(log)) <= stamps:
                    await anyio.sleep(0.001)
            if trial:
                returned.append(done - pressed)
                notified.append(float(lines[stamps].split()[0]) - pressed)
    return {"notified": latency_metrics(notified), "returned": latency_metrics(returned)}


def _stamps(log: Path) -> list[str]:
    """The server's cancel stamps so far (a small file, read whole)."""
    return log.read_text().splitlines() if log.exists() else []


async def _run_times(tools: list[Any], runs: int) -> list[float]:
    times = []
    async with Worker(ScriptedModel([]), tools=tools) as worker:
        for _ in range(runs + 3):
            worker.model = ScriptedModel([Script.tool_calls(("echo", {"text": "hi"})), "ok"])
            started = time.perf_counter()
            await worker.run("Echo.")
            times.append(time.perf_counter() - started)
    return times[3:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_http(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, SERVER, "--http", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the benchmark's HTTP MCP server did not start")


def run(trials: int = 60, runs: int = 200) -> list[Row]:
    import os

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cancels.log"
        env = {**os.environ, "MCP_BENCH_LOG": str(log)}
        stdio = MCPServer.stdio(sys.executable, args=[SERVER], env=env, name="bench")
        port = _free_port()
        http_process = _start_http(port, env)
        try:
            http = MCPServer.http(f"http://127.0.0.1:{port}/mcp", name="bench")
            for name, server in (("stdio", stdio), ("streamable HTTP", http)):
                result = anyio.run(_cancel_trials, server, log, trials)
                n, r = result["notified"], result["returned"]
                rows.append(
                    Row(
                        SECTION,
                        f"{US} Stop during an MCP call ({name})",
                        {"notified": n, "returned": r},
                        f"cancel → server notified {n['median_ms']:.2f} / {n['p99_ms']:.2f} ms, "
                        f"→ run returned {r['median_ms']:.2f} / {r['p99_ms']:.2f} ms "
                        "(median / p99), progress kept",
                    )
                )
            local = anyio.run(_run_times, [echo], runs)
            over_stdio = anyio.run(_run_times, [stdio], runs)
            over_http = anyio.run(_run_times, [http], runs)
        finally:
            http_process.terminate()
            http_process.wait(10)
    base = statistics.median(local) * 1000
    for name, times in (("stdio", over_stdio), ("streamable HTTP", over_http)):
        median = statistics.median(times) * 1000
        rows.append(
            Row(
                SECTION,
                f"{US} run with one trivial MCP call ({name})",
                {"run_median_ms": round(median, 3), "local_tool_run_median_ms": round(base, 3)},
                f"{median:.2f} ms per run vs {base:.2f} ms with a local @tool: "
                f"+{median - base:.2f} ms for the MCP round trip ({median / base:.1f}×)",
            )
        )
    return rows


if __name__ == "__main__":
    from ._common import print_table

    print_table(run(trials=20, runs=50))
