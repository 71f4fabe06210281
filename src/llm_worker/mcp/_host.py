"""A task that outlives the run that started it: where an MCP connection lives.

Invariants:
* The SDK's transports are async context managers that must be entered and left in one task,
  and a server is kept across runs, so its connection cannot live in a run's task group. It
  lives in a task of its own, spawned here beside the caller's task on the same event loop:
  an asyncio task (kept referenced here until it ends) or a trio system task.
* The task's function must catch its own errors: what escapes is logged, never raised into the
  loop (on trio a system task's error would crash the whole ``trio.run``).
* At the loop's end (``asyncio.run`` returning, ``trio.run`` finishing) the task is cancelled,
  so its clean-up — shielded and bounded by the caller — still stops the server process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("llm_worker.mcp")

_tasks: set[Any] = set()  # asyncio keeps only weak references to tasks: hold them until done


def spawn_host_task(fn: Callable[[], Awaitable[None]], name: str) -> None:
    """Start ``fn()`` in a task of its own on the running event loop, not tied to the caller."""

    async def guarded() -> None:
        try:
            await fn()
        except Exception:
            logger.exception("%s failed", name)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio.lowlevel

        trio.lowlevel.spawn_system_task(guarded, name=name)
        return
    task = loop.create_task(guarded(), name=name)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
