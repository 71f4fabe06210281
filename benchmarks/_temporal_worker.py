"""An agent worker process for the Temporal benchmark: ``python -m benchmarks._temporal_worker``.

Arguments: ADDRESS TASK_QUEUE DB THROTTLE. Serves "writer": a long answer streamed slowly (a
run to stop, or to kill), which after a crash answers at once. Writes its pid into
``$RUN_PIDS`` each time it starts a run, so the benchmark knows which process to kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from temporalio.client import Client

from llm_worker import Item, Note, Worker
from llm_worker.durable.temporal import AgentWorker
from llm_worker.events import StreamEvent
from llm_worker.models import ModelRequest
from llm_worker.testing import Script, ScriptedModel

LONG = " ".join(f"w{i}" for i in range(2000))  # 2000 deltas at 10 ms: a 20 s answer


class Writer:
    name = "writer"

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        crashed = any(isinstance(i, Note) and "crash:" in i.text for i in request.history)
        script = Script.text("Resumed.") if crashed else Script.text(LONG, chunks=2000)
        return ScriptedModel([script], pace=0.0 if crashed else 0.01).stream(request)


def make_writer(history: list[Item]) -> Worker:
    pids = os.environ.get("RUN_PIDS")
    if pids:
        with Path(pids).open("a") as file:
            file.write(f"{os.getpid()}\n")
    return Worker(Writer(), history=history)


async def main(address: str, task_queue: str, db: str, throttle: float) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    agents = {"writer": make_writer}
    async with AgentWorker(
        client,
        task_queue=task_queue,
        agents=agents,
        store=db,
        heartbeat_throttle=throttle,
        max_concurrent_activities=200,
    ):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
