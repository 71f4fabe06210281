"""Agents the test worker processes serve: a model driven by the input's first word.

``slow ...``: a long answer streamed slowly (stop it mid-stream). ``tool ...``: a cooperative
tool that counts slowly and keeps its partial count when cancelled. ``big ...``: a tool whose
output is larger than a Temporal payload. ``steps ...``: two tool calls, then a paced answer.
``crash ...``: a tool that records each execution in a file (``$RECORD_FILE``), then a slow
answer — unless the history says a crash cut the last turn off, then a short answer. Anything
else: a short answer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio

from llm_worker import Cause, Item, Note, ToolContext, ToolResult, UserMessage, Worker, tool
from llm_worker.events import StreamEvent
from llm_worker.hooks import HookContext, Hooks
from llm_worker.models import ModelRequest
from llm_worker.testing import Script, ScriptedModel

SLOW_TEXT = " ".join(f"word{i}" for i in range(400))
PACE = 0.02


@tool
async def count_slowly(limit: int, ctx: ToolContext) -> str:
    """Count to ``limit``, slowly; return the partial count when cancelled."""
    counted = 0
    while counted < limit and not ctx.cancelled:
        await anyio.sleep(0.05)
        counted += 1
    return f"counted to {counted}"


@tool
async def record(note: str) -> str:
    """Record ``note`` in $RECORD_FILE (one line per execution)."""
    append_line(os.environ["RECORD_FILE"], note)
    return f"recorded {note}"


def append_line(path: str, line: str) -> None:
    """One short append (a test's record of what ran): not worth a thread."""
    with Path(path).open("a") as file:
        file.write(line + "\n")


class CommandModel:
    """Chooses its answer from the last user input and what followed it."""

    name = "command"

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        script, pace = choose(request.history)
        return ScriptedModel([script], pace=pace).stream(request)


def choose(history: list[Item] | tuple[Item, ...] | object) -> tuple[Script, float]:
    items = list(history)  # type: ignore[call-overload]
    last_input = next((i for i in reversed(items) if isinstance(i, UserMessage)), None)
    words = last_input.text.split() if last_input else [""]
    since = items[items.index(last_input) + 1 :] if last_input else []
    results = [i for i in since if isinstance(i, ToolResult)]
    crashed = any(isinstance(i, Note) and "crash:" in i.text for i in since)
    command = words[0]
    if command == "slow":
        return Script.text(SLOW_TEXT, chunks=400), PACE
    if command == "tool" and not results:
        return Script.tool_calls(("count_slowly", {"limit": 400})), 0.0
    if command == "steps" and not results:
        return Script.tool_calls(("record", {"note": "step"}), ("count_slowly", {"limit": 4})), 0.05
    if command == "steps":
        return Script.text("one two three four five six", chunks=6), 0.05
    if command == "big" and not results:
        return Script.tool_calls(("big_output", {})), 0.0
    if command == "crash" and not results:
        return Script.tool_calls(("record", {"note": "executed"})), 0.0
    if command == "crash" and not crashed:  # slow enough (20 s) to start a second worker
        return Script.text(SLOW_TEXT, chunks=400), 0.05
    if command == "crash":
        return Script.text("Resumed after the crash."), 0.0
    return Script.text(f"Done: {' '.join(words)}."), 0.0


@tool
async def big_output() -> str:
    """Return 3 MB of text: more than one Temporal payload may hold."""
    return "x" * 3_000_000


class AbortLog(Hooks):
    """Appends each on_abort to $ABORT_FILE, so a test sees it ran once, on the worker."""

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        path = os.environ.get("ABORT_FILE")
        if path:
            append_line(path, f"{os.getpid()} {cause.kind} {reason}")


def make_agent(history: list[Item]) -> Worker:
    return Worker(
        CommandModel(),
        history=history,
        tools=[count_slowly, record, big_output],
        hooks=[AbortLog()],
        tool_grace=2.0,
    )


AGENTS = {"agent": make_agent}
