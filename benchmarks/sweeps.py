"""Sweeps: cancel latency and loop stall against history length and against concurrent runs,
for this project and both peers over HTTP; memory per history item for all three.

Invariants of the measurement:

* every subject runs on asyncio in this process against the same loopback server
  (`ServerProcess`), through the same ``openai`` SDK client settings;
* a history is a realistic mix repeated in order — user message, assistant text, tool call, tool
  result — built in each library's own types from the same pre-built strings, before the clock
  starts (its construction is not timed; only the run is);
* *loop stall* comes from a ticker task that sleeps 1 ms and records how late it woke: the max
  and the p99 of those lags over the measured window, i.e. how long every other task on the loop
  (another run, a Stop button, a web request) had to wait;
* *cancel latency* runs from the moment the Stop was **due** (a fixed delay after the run call,
  or the arrival of the n-th text delta) until the awaiting code had returned — so a loop that is
  blocked when the Stop comes counts against the run, as a user would feel it;
* no ``gc.collect()`` or ``gc.freeze()``: collections happen where real use would have them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from llm_worker import Worker
from llm_worker.events import TextDelta
from llm_worker.items import AssistantMessage, Item, TextPart, ToolCall, ToolResult, UserMessage
from llm_worker.models import Timeouts
from llm_worker.models.openai_chat import OpenAIChatModel

from . import _peers
from ._common import US, Row, Target, percentile
from ._server import ServerProcess

TICK = 0.001
PROMPT = "And one more question, please: answer at length."
TOOL = "get_weather"
HISTORY_SIZES = (10, 100, 1_000, 10_000)
CONCURRENCY = (1, 100, 1_000)
#: Early Stop: due this long after the run call (during request building on long histories).
EARLY = 0.001
#: Turn: the Stop is due when this many text deltas have arrived (the whole request was built).
TURN_DELTAS = 3
#: The concurrency sweep's stream: a delta every ``CONCURRENT_PACE`` s per run (1 000 runs ≈
#: 2 000 chunks/s in all; the saturated 5 000 chunks/s case is scale's cancel-all row),
#: ``VICTIMS`` runs (half as many from 1 000 runs) cancelled one after another, each timed (at
#: most ``VICTIM_WAIT`` s each: a victim that takes longer counts as that long).
#: Runs get ``STREAMING_WAIT`` s to all be streaming; a library that cannot start them all in
#: that time is measured with those that did (the row says how many).
CONCURRENT_PACE = 0.5
VICTIMS = 10
VICTIM_WAIT = 5.0
STREAMING_WAIT = 30.0
#: After the rest were cancelled: how long they get to end before the harness stops waiting.
REST_WAIT = 10.0
MEMORY_ITEMS = 10_000

HISTORY_SECTION = "sweep: history length (HTTP, asyncio)"
CONCURRENCY_SECTION = "sweep: concurrent runs (HTTP, asyncio, a delta every 0.5 s per run)"
MEMORY_SECTION = "memory per history item (a realistic mix, text payload excluded)"
#: On the longest CPU-busy stretch of the loop in a turn (the wall-clock stall beside it also
#: counts the OS giving the core to other processes, which no library controls).
HISTORY_TARGETS = {
    1_000: (Target("turn_busy_max_ms", "<=", 5.0, " ms"),),
    10_000: (Target("turn_busy_max_ms", "<=", 30.0, " ms"),),
}
EARLY_TARGET = Target("early_cancel_median_ms", "<=", 2.0, " ms")
MEMORY_TARGET = Target("overhead_bytes_per_item", "<=", 400, " B")


# -- the histories -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """The strings of one history item; ``kind`` is user, assistant, call or result."""

    kind: str
    text: str
    call_id: str = ""


def history_specs(n: int) -> list[Spec]:
    """``n`` items of the mix, each with its own strings (made here, outside any measurement)."""
    specs: list[Spec] = []
    while len(specs) < n:
        k = len(specs)
        call_id = f"call_{k:06d}"
        specs += [
            Spec("user", f"Question {k}: what is the weather in Paris, and should I cycle today?"),
            Spec("assistant", f"Answer {k}: let me look that up for you before I say. " * 3),
            Spec("call", f'{{"city": "Paris", "day": {k}}}', call_id),
            Spec("result", f"Paris, day {k}: 18 °C, light wind from the west, no rain.", call_id),
        ]
    return specs[:n]


def ours_history(specs: Sequence[Spec]) -> list[Item]:
    items: list[Item] = []
    for s in specs:
        if s.kind == "user":
            items.append(UserMessage(text=s.text))
        elif s.kind == "assistant":
            items.append(AssistantMessage(parts=(TextPart(text=s.text),)))
        elif s.kind == "call":
            items.append(ToolCall(call_id=s.call_id, name=TOOL, raw_arguments=s.text))
        else:
            items.append(ToolResult(call_id=s.call_id, name=TOOL, content=s.text))
    return items


def pydantic_ai_history(specs: Sequence[Spec]) -> list[Any]:
    """pydantic-ai ``ModelMessage`` objects: a request or a response per item."""
    from pydantic_ai import messages as m

    history: list[Any] = []
    for s in specs:
        if s.kind == "user":
            history.append(m.ModelRequest(parts=[m.UserPromptPart(content=s.text)]))
        elif s.kind == "assistant":
            history.append(m.ModelResponse(parts=[m.TextPart(content=s.text)]))
        elif s.kind == "call":
            part = m.ToolCallPart(tool_name=TOOL, args=s.text, tool_call_id=s.call_id)
            history.append(m.ModelResponse(parts=[part]))
        else:
            result = m.ToolReturnPart(tool_name=TOOL, content=s.text, tool_call_id=s.call_id)
            history.append(m.ModelRequest(parts=[result]))
    return history


def openai_agents_history(specs: Sequence[Spec]) -> list[Any]:
    """openai-agents input items as ``result.to_input_list()`` gives them back (and its
    sessions store them): plain dicts."""
    history: list[Any] = []
    for s in specs:
        if s.kind == "user":
            history.append({"role": "user", "content": s.text})
        elif s.kind == "assistant":
            text = {"type": "output_text", "text": s.text, "annotations": [], "logprobs": []}
            history.append(
                {
                    "id": "__fake_id__",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [text],
                }
            )
        elif s.kind == "call":
            history.append(
                {
                    "id": "__fake_id__",
                    "type": "function_call",
                    "call_id": s.call_id,
                    "name": TOOL,
                    "arguments": s.text,
                    "status": "completed",
                }
            )
        else:
            history.append({"type": "function_call_output", "call_id": s.call_id, "output": s.text})
    return history


# -- the instruments ---------------------------------------------------------------------------


class LoopLag:
    """A ticker: sleeps `TICK` and records how late it woke, until its task is cancelled.

    ``busy`` holds the CPU time this thread spent between two ticks: the loop's own work in
    that stretch, without the time the OS gave to other processes — on a shared machine the
    wall-clock lag includes being descheduled, the CPU time does not.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.busy: list[float] = []
        self._tick_started = time.perf_counter()
        self._tick_cpu = time.thread_time()

    async def run(self) -> None:
        while True:
            self._tick_started, self._tick_cpu = time.perf_counter(), time.thread_time()
            await anyio.sleep(TICK)
            self.lags.append(max(0.0, time.perf_counter() - self._tick_started - TICK))
            self.busy.append(time.thread_time() - self._tick_cpu)

    def snapshot(self) -> tuple[list[float], list[float]]:
        """The lags and busy stretches so far, the tick under way included (a loop blocked
        for the whole window would otherwise show no lag at all)."""
        pending = max(0.0, time.perf_counter() - self._tick_started - TICK)
        return [*self.lags, pending], [*self.busy, time.thread_time() - self._tick_cpu]


@dataclass
class Control:
    """The Stop button of one run: due ``after_s`` after `start` or at the ``after_deltas``-th
    text delta; `press` (a task) calls the run's cancel when due and keeps the due time."""

    after_s: float | None = None
    after_deltas: int | None = None
    started_at: float = 0.0
    due_at: float | None = None
    deltas: int = 0
    first_delta_at: float | None = None
    _cancel: Callable[[], object] | None = None
    _started: anyio.Event = field(default_factory=anyio.Event)
    _due: anyio.Event = field(default_factory=anyio.Event)

    def start(self, cancel: Callable[[], object]) -> None:
        """Called by the subject just before its run call, with the run's cancel."""
        self._cancel = cancel
        self.started_at = time.perf_counter()
        self._started.set()

    def delta(self) -> None:
        self.deltas += 1
        if self.deltas == 1:
            self.first_delta_at = time.perf_counter()
        if self.deltas == self.after_deltas:
            self.due_at = time.perf_counter()
            self._due.set()

    def cancel(self) -> None:
        """Press now (nothing to press if the run has not started)."""
        if self._cancel is not None:
            self._cancel()

    async def press(self) -> None:
        await self._started.wait()
        if self.after_s is not None:
            self.due_at = self.started_at + self.after_s
            await anyio.sleep(max(0.0, self.due_at - time.perf_counter()))
        else:
            await self._due.wait()
        self.cancel()


#: A subject: runs one turn over ``history`` (its own types), reports to ``control``, and
#: returns normally once the run has ended (cancelled).
Turn = Callable[[Any, Control], Awaitable[None]]


@dataclass
class Library:
    name: str
    build: Callable[[Sequence[Spec]], list[Any]]
    turn: Turn


#: Every library's SDK client: a pool for the largest concurrency, a generous connect timeout.
CONNECTIONS = max(CONCURRENCY) + 100


def ours(base_url: str) -> Library:
    client = _peers.openai_client(base_url, connections=CONNECTIONS)
    model = OpenAIChatModel(_peers.MODEL, client=client, timeouts=Timeouts(connect=60.0))

    async def turn(history: list[Item], control: Control) -> None:
        worker = Worker(model, history=history)
        control.start(worker.cancel)
        async with worker.stream(PROMPT) as run:
            async for event in run:
                if type(event) is TextDelta:
                    control.delta()

    return Library(f"{US} worker.cancel()", ours_history, turn)


def pydantic_ai(base_url: str) -> Library:
    from pydantic_ai import CancellationToken
    from pydantic_ai.exceptions import RunCancelled

    agent = _peers.pydantic_ai_agent(_peers.openai_client(base_url, connections=CONNECTIONS))

    async def turn(history: list[Any], control: Control) -> None:
        token = CancellationToken()
        control.start(token.cancel)
        try:
            async with agent.run_stream(
                PROMPT, message_history=history, cancellation_token=token
            ) as response:
                async for _ in response.stream_text(delta=True, debounce_by=None):
                    control.delta()
        except RunCancelled:
            pass

    return Library("pydantic-ai CancellationToken.cancel()", pydantic_ai_history, turn)


def openai_agents(base_url: str) -> Library:
    import agents

    agent = _peers.openai_agents_agent(_peers.openai_client(base_url, connections=CONNECTIONS))

    async def turn(history: list[Any], control: Control) -> None:
        runs: list[Any] = []
        control.start(lambda: runs[0].cancel())
        runs.append(
            agents.Runner.run_streamed(agent, [*history, {"role": "user", "content": PROMPT}])
        )
        async for event in runs[0].stream_events():
            if _peers.is_agents_text_delta(event):
                control.delta()

    return Library("openai-agents result.cancel()", openai_agents_history, turn)


def _lag_metrics(prefix: str, lags: Sequence[float]) -> dict[str, float]:
    return {
        f"{prefix}_max_ms": round(max(lags, default=0.0) * 1000, 2),
        f"{prefix}_p99_ms": round(percentile(lags, 0.99) * 1000, 2) if lags else 0.0,
    }


async def _timed_turn(library: Library, history: list[Any], control: Control) -> Any:
    """One turn with the ticker and the Stop button; (latency from due, lags, control)."""
    lag = LoopLag()
    async with anyio.create_task_group() as group:
        group.start_soon(lag.run)
        group.start_soon(control.press)
        await library.turn(history, control)
        returned = time.perf_counter()
        lag.lags, lag.busy = lag.snapshot()
        group.cancel_scope.cancel()
    if control.due_at is None or control.due_at > returned:
        raise AssertionError(f"{library.name}: the run ended before its Stop was due")
    return returned - control.due_at, lag


# -- history-length sweep ----------------------------------------------------------------------


def _trials_for(size: int, quick: bool) -> int:
    if quick:
        return 2
    return {10: 6, 100: 6, 1_000: 4}.get(size, 2)


async def _history_rows(
    base_url: str, make: Callable[[str], Library], sizes: Sequence[int], quick: bool
) -> list[Row]:
    rows = []
    library = make(base_url)
    for size in sizes:
        specs = history_specs(size)
        early: list[float] = []
        turn: list[float] = []
        turn_lags: list[float] = []
        worst_turn_stall: list[float] = []
        worst_turn_busy: list[float] = []
        first_delta: list[float] = []
        for index in range(_trials_for(size, quick) + 1):  # the first is a warm-up
            history = library.build(specs)
            latency, _ = await _timed_turn(library, history, Control(after_s=EARLY))
            control = Control(after_deltas=TURN_DELTAS)
            turn_latency, lags = await _timed_turn(library, history, control)
            if index == 0:
                continue
            early.append(latency)
            turn.append(turn_latency)
            turn_lags += lags.lags
            worst_turn_stall.append(max(lags.lags, default=0.0))
            worst_turn_busy.append(max(lags.busy, default=0.0))
            assert control.first_delta_at is not None
            first_delta.append(control.first_delta_at - control.started_at)
        metrics: dict[str, Any] = {
            "history_items": size,
            "trials": len(early),
            "early_cancel_median_ms": round(_median(early) * 1000, 3),
            "early_cancel_max_ms": round(max(early) * 1000, 3),
            "turn_cancel_median_ms": round(_median(turn) * 1000, 3),
            "first_delta_median_ms": round(_median(first_delta) * 1000, 2),
            "turn_stall_max_ms": round(_median(worst_turn_stall) * 1000, 2),
            "turn_busy_max_ms": round(_median(worst_turn_busy) * 1000, 2),
            **_lag_metrics("turn_lag", turn_lags),
        }
        summary = (
            f"Stop {EARLY * 1000:g} ms after the call → returned "
            f"{metrics['early_cancel_median_ms']:.2f} ms (max "
            f"{metrics['early_cancel_max_ms']:.2f}); a turn: first delta "
            f"{metrics['first_delta_median_ms']:.1f} ms, longest stall "
            f"{metrics['turn_stall_max_ms']:.2f} ms wall, {metrics['turn_busy_max_ms']:.2f} ms "
            f"CPU-busy (medians over trials; lag p99 {metrics['turn_lag_p99_ms']:.2f} ms), "
            f"cancel at the {TURN_DELTAS}rd delta "
            f"{metrics['turn_cancel_median_ms']:.2f} ms"
        )
        subject = f"{library.name}, {size:,} items".replace(",", " ")
        rows.append(
            Row(HISTORY_SECTION, subject, metrics, summary, _history_targets(subject, size))
        )
        print(f"  {subject}: {summary}", file=sys.stderr, flush=True)
    return rows


def _history_targets(subject: str, size: int) -> tuple[Target, ...]:
    if not subject.startswith(US):
        return ()
    return (*HISTORY_TARGETS.get(size, ()), EARLY_TARGET)


def _median(values: Sequence[float]) -> float:
    return percentile(values, 0.5)


# -- concurrency sweep -------------------------------------------------------------------------


async def _concurrent(library: Library, runs: int, history: list[Any]) -> dict[str, Any]:
    """``runs`` runs stream at once; once all have text, 1 s of loop lag under that load, then
    `VICTIMS` runs cancelled one after another (each timed), then all the others at once."""
    controls = [Control() for _ in range(runs)]
    ended = [anyio.Event() for _ in range(runs)]
    streaming = 0
    all_streaming = anyio.Event()

    async def one(index: int) -> None:
        control = controls[index]
        original = control.delta

        def delta() -> None:
            nonlocal streaming
            original()
            if control.deltas == 1:
                streaming += 1
                if streaming == runs:
                    all_streaming.set()

        control.delta = delta  # type: ignore[method-assign]
        try:
            await library.turn(history, control)
        finally:
            ended[index].set()

    lag = LoopLag()
    victims: list[float] = []
    victim_count = min(VICTIMS if runs <= 100 else VICTIMS // 2, runs)
    async with anyio.create_task_group() as group:
        for index in range(runs):
            group.start_soon(one, index)
            if index % 100 == 99:  # connect in waves: a burst overflows the accept backlog
                await anyio.sleep(0.05)
        with anyio.move_on_after(STREAMING_WAIT):
            await all_streaming.wait()
        streaming_at_start = streaming
        async with anyio.create_task_group() as ticker:
            ticker.start_soon(lag.run)
            await anyio.sleep(1.0)
            loaded_lags, loaded_busy = lag.snapshot()
            for index in range(victim_count):
                due = time.perf_counter()
                controls[index].cancel()
                with anyio.move_on_after(VICTIM_WAIT):
                    await ended[index].wait()
                victims.append(time.perf_counter() - due)
            ticker.cancel_scope.cancel()
        began = time.perf_counter()
        for control in controls[victim_count:]:
            control.cancel()
        with anyio.move_on_after(REST_WAIT):
            for event in ended:
                await event.wait()
        cancel_all = time.perf_counter() - began
        left_running = sum(1 for event in ended if not event.is_set())
        group.cancel_scope.cancel()  # those that did not end (or never started) end here
    return {
        "victim_latencies": victims,
        "loaded_lags": loaded_lags,
        "loaded_busy": loaded_busy,
        "cancel_rest_s": cancel_all,
        "streaming": streaming_at_start,
        "left_running": left_running,
    }


async def _concurrency_rows(
    base_url: str, make: Callable[[str], Library], counts: Sequence[int], quick: bool
) -> list[Row]:
    history_specs_10 = history_specs(10)
    rows = []
    library = make(base_url)
    for runs in counts:
        history = library.build(history_specs_10)
        victims: list[float] = []
        loaded: list[float] = []
        loaded_busy: list[float] = []
        rest = []
        streaming = runs
        left_running = 0
        for _ in range(1 if runs > 1 else (2 if quick else 5)):
            measured = await _concurrent(library, runs, history)
            victims += measured["victim_latencies"]
            loaded += measured["loaded_lags"]
            loaded_busy += measured["loaded_busy"]
            rest.append(measured["cancel_rest_s"])
            streaming = min(streaming, measured["streaming"])
            left_running = max(left_running, measured["left_running"])
        metrics: dict[str, Any] = {
            "runs": runs,
            "victims": len(victims),
            "victim_cancel_median_ms": round(_median(victims) * 1000, 3),
            "victim_cancel_max_ms": round(max(victims) * 1000, 3),
            **_lag_metrics("loaded_lag", loaded),
            **_lag_metrics("loaded_busy", loaded_busy),
            "cancel_rest_s": round(max(rest), 4),
            "streaming_when_measured": streaming,
            "rest_still_running_after_wait": left_running,
        }
        summary = (
            f"one run cancelled: {metrics['victim_cancel_median_ms']:.2f} ms median, "
            f"{metrics['victim_cancel_max_ms']:.2f} max ({len(victims)} victims); loop "
            f"lag while streaming max {metrics['loaded_lag_max_ms']:.1f} ms, p99 "
            f"{metrics['loaded_lag_p99_ms']:.1f} ms (CPU-busy max "
            f"{metrics['loaded_busy_max_ms']:.1f} ms); the rest cancelled in "
            f"{metrics['cancel_rest_s']:.3f} s"
        )
        if left_running:
            summary += f"; {left_running} had not ended {REST_WAIT:g} s after their cancel"
        if streaming < runs:
            summary += f"; only {streaming} of {runs} were streaming after {STREAMING_WAIT:g} s"
        subject = f"{library.name}, {runs:,} runs".replace(",", " ")
        rows.append(Row(CONCURRENCY_SECTION, subject, metrics, summary))
        print(f"  {subject}: {summary}", file=sys.stderr, flush=True)
    return rows


# -- memory ------------------------------------------------------------------------------------


def history_bytes(build: Callable[[Sequence[Spec]], list[Any]], items: int) -> dict[str, Any]:
    """Bytes a history of ``items`` holds beyond its text (tracemalloc; the strings are built
    before tracing starts, so only what the library adds is counted), per item."""
    specs = history_specs(items)
    payload = sum(len(s.text.encode()) + len(s.call_id) for s in specs)
    build(specs[:8])  # imports and caches, before tracing
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build(specs)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == items
    return {
        "items": items,
        "overhead_bytes_per_item": round((after - before) / items, 1),
        "payload_bytes_per_item": round(payload / items, 1),
    }


def memory_rows(items: int = MEMORY_ITEMS) -> list[Row]:
    rows = []
    for name, build, notes in (
        (US, ours_history, "items: slotted frozen pydantic dataclasses"),
        ("pydantic-ai", pydantic_ai_history, "ModelMessage objects, one per item"),
        ("openai-agents", openai_agents_history, "input items (dicts) as to_input_list() gives"),
    ):
        metrics = history_bytes(build, items)
        summary = (
            f"{metrics['overhead_bytes_per_item']:.0f} B per item beyond "
            f"{metrics['payload_bytes_per_item']:.0f} B of text ({items:,} items)"
        ).replace(",", " ")
        targets = (MEMORY_TARGET,) if name == US else ()
        rows.append(Row(MEMORY_SECTION, name, metrics, summary, targets, notes=notes))
    return rows


# -- entry -------------------------------------------------------------------------------------


LIBRARIES: dict[str, Callable[[str], Library]] = {
    "llm-worker": ours,
    "pydantic-ai": pydantic_ai,
    "openai-agents": openai_agents,
}


def _child(sweep: str, library: str, quick: bool) -> list[Row]:
    """One sweep of one library in a fresh process (its own heap, its own server)."""
    command = [sys.executable, "-m", "benchmarks.sweeps", "--child", sweep, library]
    child = subprocess.run(command + (["--quick"] if quick else []), capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"sweep {sweep} of {library} failed:\n{child.stderr[-3000:]}")
    print(child.stderr, end="", flush=True)  # its progress lines
    rows = []
    for row in json.loads(child.stdout.strip().splitlines()[-1]):
        targets: tuple[Target, ...] = ()
        if row["section"] == HISTORY_SECTION:
            targets = _history_targets(row["subject"], row["metrics"]["history_items"])
        rows.append(Row(row["section"], row["subject"], row["metrics"], row["summary"], targets))
    return rows


def _child_main(sweep: str, library: str, quick: bool) -> None:
    make = LIBRARIES[library]
    with ServerProcess() as server:
        if sweep == "history":
            server.serve_text(5_000, 0.001)
            sizes = (10, 1_000) if quick else HISTORY_SIZES
            rows = anyio.run(
                _history_rows, server.openai_base_url, make, sizes, quick, backend="asyncio"
            )
        else:
            server.serve_text(1_000, CONCURRENT_PACE)
            counts = (1, 100) if quick else CONCURRENCY
            rows = anyio.run(
                _concurrency_rows, server.openai_base_url, make, counts, quick, backend="asyncio"
            )
    print(
        json.dumps(
            [
                {
                    "section": r.section,
                    "subject": r.subject,
                    "metrics": r.metrics,
                    "summary": r.summary,
                }
                for r in rows
            ]
        )
    )


def run(quick: bool = False) -> list[Row]:
    """The memory rows here, then each sweep of each library in a fresh child process;
    ``quick`` measures fewer sizes and trials (a smoke run)."""
    rows = memory_rows(2_000 if quick else MEMORY_ITEMS)
    for sweep in ("history", "concurrency"):
        for library in LIBRARIES:
            rows += _child(sweep, library, quick)
    return rows


if __name__ == "__main__":
    from ._common import print_table

    if sys.argv[1:2] == ["--child"]:
        _child_main(sys.argv[2], sys.argv[3], "--quick" in sys.argv)
    else:
        print_table(run(quick="--quick" in sys.argv))
