"""``make demo``: the main job on the offline model: stream, run tools, get stopped, keep all.

A simulated Stop button (a plain thread, as a GUI would have) stops the worker twice: once in the
middle of an answer, once in the middle of a tool. Each time the demo shows what was kept, then
the same worker runs again at once. No key, no network; about twenty seconds.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import anyio
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from . import AssistantMessage, Cancelled, Note, ToolCall, ToolResult, Worker
from ._demo_tools import DEMO_TOOLS
from .events import TextDelta, ToolFinished, ToolStarted
from .items import Item, UserMessage
from .models.offline import OfflineModel

console = Console(highlight=False)


class StopButton:
    """Presses ``worker.cancel()`` from its own thread when ``ready()`` turns true, then waits."""

    def __init__(self, worker: Worker, ready: Callable[[], bool], after: float, label: str) -> None:
        self.pressed_at: float | None = None
        self._thread = threading.Thread(
            target=self._watch, args=(worker, ready, after, label), name="stop-button", daemon=True
        )
        self._thread.start()

    def _watch(self, worker: Worker, ready: Callable[[], bool], after: float, label: str) -> None:
        deadline = time.monotonic() + 30
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(after)
        self.pressed_at = time.perf_counter()
        worker.cancel(label)

    def join(self) -> None:
        self._thread.join(5)


async def stream_run(worker: Worker, prompt: str) -> float | None:
    """Run ``prompt``, printing the answer and tool activity live; return when it ended."""
    console.print(f"\n[bold cyan]you[/] › {escape(prompt)}")
    console.print("[bold magenta]model[/] › ", end="")
    async with worker.stream(prompt) as run:
        async for event in run:
            if isinstance(event, TextDelta):
                console.print(event.text, end="", markup=False)
            elif isinstance(event, ToolStarted):
                console.print(f"\n   [yellow]⚙ {event.name}({escape(_args(event.arguments))})[/] …")
            elif isinstance(event, ToolFinished):
                result = event.result
                colour = "green" if result.status == "ok" else "red"
                console.print(
                    f"   [{colour}]↳ {result.name}: {result.status}[/] {escape(result.content)}"
                )
    ended = time.perf_counter()
    console.print()
    if isinstance(run.error, Cancelled):
        console.print(f"[bold red]■ stopped[/] ({run.error.kind}: {escape(str(run.error.reason))})")
        kept(run.error.partial.items)
    elif run.error is not None:
        console.print(f"[bold red]error:[/] {escape(str(run.error))}")
    return ended


def kept(items: tuple[Item, ...]) -> None:
    table = Table(title="kept in history", title_justify="left", show_edge=False)
    table.add_column("item")
    table.add_column("content", overflow="fold")
    for item in items:
        if isinstance(item, UserMessage):
            table.add_row("user", item.text)
        elif isinstance(item, AssistantMessage):
            label = "assistant (interrupted)" if item.interrupted else "assistant"
            table.add_row(label, item.text)
        elif isinstance(item, ToolCall):
            table.add_row("tool call", f"{item.name}({item.raw_arguments})")
        elif isinstance(item, ToolResult):
            table.add_row(f"tool result · {item.status}", item.content)
        elif isinstance(item, Note):
            table.add_row("note", item.text)
    console.print(table)


def _args(arguments: dict[str, object]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in arguments.items())


def _streaming(worker: Worker) -> bool:
    run = worker._active
    return bool(run and run.timeline and run.timeline.blocks)


def _counting(worker: Worker) -> bool:
    """True while slow_count runs: its call is in the history and its result is not yet."""
    history = worker.history
    calls = {i.call_id for i in history if isinstance(i, ToolCall) and i.name == "slow_count"}
    answered = {i.call_id for i in history if isinstance(i, ToolResult)}
    return bool(calls - answered)


async def main() -> None:
    worker = Worker(
        OfflineModel(pace=0.04),
        tools=DEMO_TOOLS,
        system="You are a helpful assistant.",
        tool_grace=1.0,
    )
    console.print(
        Panel.fit(
            "llm-worker demo — an agent you can stop at any moment without losing anything\n"
            "offline model, no key, no network; a Stop button thread presses cancel twice",
            style="bold",
        )
    )
    latencies: list[float] = []

    console.rule("1. a normal answer, streamed")
    await stream_run(worker, "What can you do?")

    console.rule("2. stopped mid-answer by the Stop button (another thread)")
    button = StopButton(worker, lambda: _streaming(worker), 0.8, "user pressed Stop")
    ended = await stream_run(worker, "Tell me how cancellation works in this worker.")
    button.join()
    if ended and button.pressed_at:
        latencies.append(ended - button.pressed_at)

    console.rule("3. tools run in parallel; Stop pressed while slow_count is counting")
    button = StopButton(worker, lambda: _counting(worker), 1.2, "user pressed Stop")
    ended = await stream_run(worker, "Use get_weather for Paris and slow_count to 30.")
    button.join()
    if ended and button.pressed_at:
        latencies.append(ended - button.pressed_at)

    console.rule("4. the same worker runs again at once, and knows it was interrupted")
    await stream_run(worker, "Please continue, and tell me the current_time.")

    history = worker.history
    table = Table(title="the whole history", title_justify="left")
    for column in ("#", "item", "status"):
        table.add_column(column)
    for number, item in enumerate(history, 1):
        status = ""
        if isinstance(item, AssistantMessage):
            status = "interrupted" if item.interrupted else "complete"
        elif isinstance(item, ToolResult):
            status = item.status
        elif isinstance(item, ToolCall):
            status = "complete" if item.complete else "cut off"
        table.add_row(str(number), item.type, status)
    console.print(table)
    if latencies:
        median = statistics.median(latencies) * 1000
        console.print(
            f"Stop → run returned (including the tool's grace and clean-up): "
            f"median {median:.1f} ms over {len(latencies)} stops"
        )
    console.print("[bold green]✓[/] every call answered, nothing lost, worker still ready.")


def run() -> None:
    anyio.run(main)


if __name__ == "__main__":
    run()
