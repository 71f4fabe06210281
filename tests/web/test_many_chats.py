"""Fifty chats at once, with random Stops and disconnects: every run ends, nothing is left
open, and every session holds a valid history."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import anyio
import httpx2

from llm_worker.models import OfflineModel
from llm_worker.store import SQLiteStore
from llm_worker.testing import history_violations

from ._chunks import UIMessageReader
from .conftest import chat_body, wait_until

CHATS = 50


def open_sockets() -> int:
    """Sockets open in this process (the server thread's and the client's)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(fd).startswith("socket:")
    return count


async def test_fifty_concurrent_chats_with_random_stops_and_disconnects_all_end_cleanly(
    server_factory: Any,
) -> None:
    server = server_factory(model_factory=lambda: OfflineModel(pace=0.005), tools="demo")
    rng = random.Random(11)
    plans = [rng.choice(["finish", "stop", "disconnect"]) for _ in range(CHATS)]
    endings: dict[int, str | None] = {}
    limits = httpx2.Limits(max_connections=CHATS * 2)
    sockets_before = open_sockets()  # the server's listening socket, the test's own

    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

        async def chat(number: int) -> None:
            name = f"many-{number}"
            prompt = "use slow_count to 3" if number % 3 == 0 else "tell me something"
            plan = plans[number]
            reader = UIMessageReader()
            async with client.stream(
                "POST", f"{server.url}/api/chat", json=chat_body(name, prompt)
            ) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    reader.feed_line(line[6:])
                    if len(reader.chunks) == 4:
                        if plan == "stop":
                            await anyio.sleep(rng.random() * 0.05)
                            response = await client.post(f"{server.url}/api/chats/{name}/cancel")
                            assert response.status_code == 200
                        elif plan == "disconnect":
                            endings[number] = None
                            return
            assert reader.done
            endings[number] = reader.ending

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for number in range(CHATS):
                    group.start_soon(chat, number)

    await wait_until(lambda: server.registry.active == 0 and server.registry.running == 0)
    await wait_until(lambda: open_sockets() <= sockets_before)  # no connection left open
    for number, plan in enumerate(plans):
        if plan == "finish":
            assert endings[number] == "finish"
        elif plan == "stop":
            assert endings[number] in ("abort", "finish")  # a Stop may land after the end
    with SQLiteStore(server.db) as store:
        for number in range(CHATS):
            history = store.load_history(f"many-{number}")
            assert history_violations(history) == [], number
            runs = store.runs(f"many-{number}")
            assert len(runs) == 1
            assert runs[0].ended
            if plans[number] == "disconnect" and runs[0].outcome == "cancelled":
                assert runs[0].reason == "the client disconnected"
