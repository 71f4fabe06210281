"""Cancel latency: mid-stream and during a cooperative tool, this project against its peers.

Every subject runs against the same loopback server (`ServerProcess`): for *mid-stream*, a
Chat Completions stream of ``STREAM_CHUNKS`` text deltas ``PACE`` seconds apart; for *tool*, a
stream asking for one call of a tool that waits for its cancellation signal. A "stop button" task
presses the subject's cancellation API once the consumer has seen ``CANCEL_AFTER`` text deltas
(or once the tool has started). Latency is the time from that call until the code awaiting the
run has its result or exception (the ``async with`` / ``async for`` / ``await`` has returned).

For each subject the row also says what was kept — the text streamed before the cancel, the tool
call and its result — in what the run returned (exception or result object), and whether the
server saw the client disconnect mid-stream within a second of the run returning.
"""

from __future__ import annotations

import asyncio
import cProfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from llm_worker import Cancelled, ToolContext, Worker, tool
from llm_worker.events import TextDelta
from llm_worker.items import AssistantMessage, Item, ToolCall, ToolResult
from llm_worker.models import Model
from llm_worker.models.offline import OfflineModel
from llm_worker.models.openai_chat import OpenAIChatModel

from . import _peers
from ._common import US, Row, Target, latency_metrics, yes_no
from ._server import TOOL_NAME, ServerProcess

STREAM_CHUNKS = 5_000
PACE = 0.001
CANCEL_AFTER = 50
PROMPT = "Tell me everything about stopping agents, at length, please."
TOOL_PROMPT = f"Use {TOOL_NAME} now."
PARTIAL_OUTPUT = "partial work"
DISCONNECT_WAIT = 1.0

TARGETS = (Target("median_ms", "<=", 0.25, " ms"), Target("p99_ms", "<=", 0.5, " ms"))


@dataclass
class Trial:
    """One cancelled run: seconds from the cancel call to the run's end, and what was kept."""

    latency: float
    kept: dict[str, bool] = field(default_factory=dict)


class Stop:
    """The stop button: a task that calls ``press()`` once ``ready`` is set (and ``delay``
    seconds more), noting the time.

    ``profiler`` (set by ``benchmarks.profiling``) is enabled from the press until `latency` is
    read, so a profile covers exactly the measured windows.
    """

    profiler: cProfile.Profile | None = None

    def __init__(self, delay: float = 0.0) -> None:
        self.ready = anyio.Event()
        self.delay = delay
        self.pressed_at: float | None = None

    async def run(self, press: Callable[[], object]) -> None:
        await self.ready.wait()
        if self.delay:
            await anyio.sleep(self.delay)
        if self.profiler is not None:
            self.profiler.enable()
        self.pressed_at = time.perf_counter()
        press()

    def latency(self) -> float:
        ended = time.perf_counter()
        if self.profiler is not None:
            self.profiler.disable()
        if self.pressed_at is None:
            raise RuntimeError("the run ended before the stop button was pressed")
        return ended - self.pressed_at


TrialFn = Callable[[], Awaitable[Trial]]


# -- this project ------------------------------------------------------------------------------


def _kept_text(items: list[Item]) -> bool:
    return any(isinstance(i, AssistantMessage) and i.interrupted and i.text for i in items)


def _kept_tool(items: list[Item]) -> dict[str, bool]:
    results = [i for i in items if isinstance(i, ToolResult) and i.name == TOOL_NAME]
    return {
        "tool_call": any(isinstance(i, ToolCall) and i.name == TOOL_NAME for i in items),
        "tool_result": bool(results),
        "tool_partial_output": any(PARTIAL_OUTPUT in r.content for r in results),
    }


def ours_stream(model: Model, *, outer: bool = False) -> TrialFn:
    """``worker.stream()`` consumed event by event; ``worker.cancel()`` — or, with ``outer``,
    cancelling an anyio cancel scope around the consumer (the awaiting task is cancelled)."""

    async def trial() -> Trial:
        worker = Worker(model)
        stop = Stop()
        error: BaseException | None = None
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(stop.run, scope.cancel if outer else worker.cancel)
                seen = 0
                async with worker.stream(PROMPT) as run:
                    async for event in run:
                        if type(event) is TextDelta:
                            seen += 1
                            if seen == CANCEL_AFTER:
                                stop.ready.set()
                error = run.error
            latency = stop.latency()
        if outer:
            assert scope.cancelled_caught, "the outer scope was not cancelled"
            return Trial(latency, {"partial_text": _kept_text(worker.history)})
        assert isinstance(error, Cancelled), error
        return Trial(latency, {"partial_text": _kept_text(list(error.partial.items))})

    return trial


def ours_tool(
    model: Model,
    *,
    cooperative: bool = True,
    delay: float = 0.0,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> TrialFn:
    """``worker.run()`` while a tool runs; ``worker.cancel()`` ``delay`` s after it started.

    ``cooperative``: the tool takes its `ToolContext`, awaits ``ctx.token.wait()`` and returns
    partial output (it gets the grace period). Otherwise it is the peers' body, a plain
    ``await sleep(30)`` that cannot know it was asked to stop (it is stopped at once).
    """
    stop_holder: list[Stop] = []

    @tool(name=TOOL_NAME)
    async def wait_for_stop(ctx: ToolContext) -> str:
        """Works until cancelled, then returns what it has so far."""
        stop_holder[-1].ready.set()
        await ctx.token.wait()
        return PARTIAL_OUTPUT

    @tool(name=TOOL_NAME)
    async def sleep_on() -> str:
        """Works for a while (the peers' tool body)."""
        stop_holder[-1].ready.set()
        await sleep(30)
        return PARTIAL_OUTPUT

    async def trial() -> Trial:
        worker = Worker(model, tools=[wait_for_stop if cooperative else sleep_on])
        stop = Stop(delay)
        stop_holder.append(stop)
        async with anyio.create_task_group() as group:
            group.start_soon(stop.run, worker.cancel)
            try:
                await worker.run(TOOL_PROMPT)
            except Cancelled as exc:
                latency = stop.latency()
                items = list(exc.partial.items)
            else:
                raise AssertionError("the run was not cancelled")
        stop_holder.clear()
        kept = _kept_tool(items)
        if not cooperative:
            del kept["tool_partial_output"]  # it has none to give
        return Trial(latency, kept)

    return trial


# -- the floor: the raw SDK -------------------------------------------------------------------


def raw_sdk_stream(base_url: str) -> TrialFn:
    """The raw ``openai`` SDK stream read in an anyio cancel scope that the stop button cancels;
    leaving ``async with stream`` closes the response. No agent, no history: the cost of
    interrupting a read and closing the connection on this HTTP stack, which every subject pays."""
    client = _peers.openai_client(base_url)

    async def trial() -> Trial:
        stop = Stop()
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(stop.run, scope.cancel)
                stream = await client.chat.completions.create(
                    model=_peers.MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
                )
                seen = 0
                async with stream:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            seen += 1
                            if seen == CANCEL_AFTER:
                                stop.ready.set()
            latency = stop.latency()
        assert scope.cancelled_caught, "the read was not cancelled"
        return Trial(latency)

    return trial


async def _cancel_task_when(ready: asyncio.Event, consume: Awaitable[None]) -> Trial:
    """Run ``consume`` as a plain asyncio task; once ``ready`` is set, ``task.cancel()`` and
    time until ``await task`` raises. No task group, no cancel scope, no stop-button task: the
    least any harness can add."""
    task = asyncio.ensure_future(consume)
    await ready.wait()
    pressed_at = time.perf_counter()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return Trial(time.perf_counter() - pressed_at)
    raise AssertionError("the read was not cancelled")


def raw_sdk_task_cancel(base_url: str) -> TrialFn:
    """The floor: the raw ``openai`` SDK stream consumed by a plain asyncio task that is
    cancelled with ``task.cancel()``; ``async with stream`` closes the response on the way out."""
    client = _peers.openai_client(base_url)

    async def trial() -> Trial:
        ready = asyncio.Event()

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model=_peers.MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            seen = 0
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        seen += 1
                        if seen == CANCEL_AFTER:
                            ready.set()

        return await _cancel_task_when(ready, consume())

    return trial


def bytes_floor(base_url: str) -> TrialFn:
    """Below the SDK: the HTTP body read as bytes with ``httpx2`` and split into SSE lines
    (nothing parsed), in a plain asyncio task cancelled with ``task.cancel()``."""
    import httpx2

    client = httpx2.AsyncClient(timeout=60)
    messages = [{"role": "user", "content": PROMPT}]
    body: dict[str, Any] = {"model": _peers.MODEL, "messages": messages, "stream": True}

    async def trial() -> Trial:
        ready = asyncio.Event()

        async def consume() -> None:
            seen = 0
            tail = b""
            url = f"{base_url}/chat/completions"
            async with client.stream("POST", url, json=body) as response:
                async for data in response.aiter_bytes():
                    *lines, tail = (tail + data).split(b"\n")
                    seen += sum(1 for line in lines if line.startswith(b"data:"))
                    if seen >= CANCEL_AFTER and not ready.is_set():
                        ready.set()

        return await _cancel_task_when(ready, consume())

    return trial


# -- pydantic-ai -------------------------------------------------------------------------------


def _pai_kept_text(messages: list[Any]) -> bool:
    from pydantic_ai.messages import ModelResponse, TextPart

    return any(
        isinstance(m, ModelResponse) and any(isinstance(p, TextPart) and p.content for p in m.parts)
        for m in messages
    )


def _pai_kept_tool(messages: list[Any]) -> dict[str, bool]:
    from pydantic_ai.messages import ToolCallPart, ToolReturnPart

    parts = [p for m in messages for p in m.parts]
    returns = [p for p in parts if isinstance(p, ToolReturnPart) and p.tool_name == TOOL_NAME]
    return {
        "tool_call": any(isinstance(p, ToolCallPart) and p.tool_name == TOOL_NAME for p in parts),
        "tool_result": bool(returns),
        "tool_partial_output": any(PARTIAL_OUTPUT in str(p.content) for p in returns),
    }


def pydantic_ai_stream(base_url: str, *, task_cancel: bool = False) -> TrialFn:
    """``agent.run_stream()`` + ``stream_text(delta=True, debounce_by=None)``, cancelled with a
    ``CancellationToken`` passed to the run (its documented API: the run raises `RunCancelled`
    carrying ``all_messages()``) — or, with ``task_cancel``, ``task.cancel()`` on the consuming
    task (then `RunCancelled.from_cancellation` recovers the run state)."""
    from pydantic_ai import CancellationToken
    from pydantic_ai.exceptions import RunCancelled

    agent = _peers.pydantic_ai_agent(_peers.openai_client(base_url))

    async def trial() -> Trial:
        token = CancellationToken()
        stop = Stop()

        async def consume() -> None:
            seen = 0
            async with agent.run_stream(PROMPT, cancellation_token=token) as response:
                async for _ in response.stream_text(delta=True, debounce_by=None):
                    seen += 1
                    if seen == CANCEL_AFTER:
                        stop.ready.set()

        state: RunCancelled | None = None
        async with anyio.create_task_group() as group:
            if task_cancel:
                task = asyncio.create_task(consume())
                group.start_soon(stop.run, task.cancel)
                try:
                    await task
                except asyncio.CancelledError as exc:
                    latency = stop.latency()
                    state = RunCancelled.from_cancellation(exc)
            else:
                group.start_soon(stop.run, token.cancel)
                try:
                    await consume()
                except RunCancelled as exc:
                    latency = stop.latency()
                    state = exc
        assert stop.pressed_at is not None, "the run was not cancelled"
        return Trial(
            latency, {"partial_text": state is not None and _pai_kept_text(state.all_messages())}
        )

    return trial


def pydantic_ai_tool(base_url: str, *, delay: float = 0.0) -> TrialFn:
    """``agent.run_stream(cancellation_token=...)`` while a tool awaits ``asyncio.sleep(30)``
    (its only cancellation signal is the ``CancelledError`` the token delivers);
    ``token.cancel()`` ``delay`` s after the tool started."""
    from pydantic_ai import CancellationToken
    from pydantic_ai.exceptions import RunCancelled

    stop_holder: list[Stop] = []

    async def wait_for_stop() -> str:
        """Works for a while."""
        stop_holder[-1].ready.set()
        await asyncio.sleep(30)
        return PARTIAL_OUTPUT

    wait_for_stop.__name__ = TOOL_NAME
    agent = _peers.pydantic_ai_agent(_peers.openai_client(base_url), tools=[wait_for_stop])

    async def trial() -> Trial:
        token = CancellationToken()
        stop = Stop(delay)
        stop_holder.append(stop)
        async with anyio.create_task_group() as group:
            group.start_soon(stop.run, token.cancel)
            try:
                async with agent.run_stream(TOOL_PROMPT, cancellation_token=token) as response:
                    await response.get_output()
            except RunCancelled as exc:
                latency = stop.latency()
                messages = exc.all_messages()
            else:
                raise AssertionError("the run was not cancelled")
        stop_holder.clear()
        return Trial(latency, _pai_kept_tool(messages))

    return trial


# -- openai-agents -----------------------------------------------------------------------------


def _agents_kept_text(result: Any) -> bool:
    for item in result.to_input_list():
        if item.get("role") == "assistant" or item.get("type") == "message":
            content = item.get("content")
            if content and any(part.get("text") for part in content if isinstance(part, dict)):
                return True
    return False


def _agents_kept_tool(result: Any) -> dict[str, bool]:
    items = result.to_input_list()
    calls = [i for i in items if i.get("type") == "function_call" and i.get("name") == TOOL_NAME]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    return {
        "tool_call": bool(calls),
        "tool_result": bool(outputs),
        "tool_partial_output": any(PARTIAL_OUTPUT in str(o.get("output")) for o in outputs),
    }


def openai_agents_run(
    base_url: str, *, with_tool: bool, task_cancel: bool = False, delay: float = 0.0
) -> TrialFn:
    """``Runner.run_streamed()`` consumed through ``stream_events()``; ``result.cancel()`` (its
    documented API; mode ``"immediate"``) — or, with ``task_cancel``, ``task.cancel()`` on the
    consuming task. With ``with_tool`` the model asks for a tool that awaits
    ``asyncio.sleep(30)``, and the stop comes ``delay`` s after it started."""
    import agents

    stop_holder: list[Stop] = []

    @agents.function_tool(name_override=TOOL_NAME)
    async def wait_for_stop() -> str:
        """Works for a while."""
        stop_holder[-1].ready.set()
        await asyncio.sleep(30)
        return PARTIAL_OUTPUT

    client = _peers.openai_client(base_url)
    agent = _peers.openai_agents_agent(client, tools=[wait_for_stop] if with_tool else [])
    prompt = TOOL_PROMPT if with_tool else PROMPT

    async def trial() -> Trial:
        stop = Stop(delay if with_tool else 0.0)
        stop_holder.append(stop)
        result = agents.Runner.run_streamed(agent, prompt)

        async def consume() -> None:
            seen = 0
            async for event in result.stream_events():
                if not with_tool and _peers.is_agents_text_delta(event):
                    seen += 1
                    if seen == CANCEL_AFTER:
                        stop.ready.set()

        async with anyio.create_task_group() as group:
            if task_cancel:
                task = asyncio.create_task(consume())
                group.start_soon(stop.run, task.cancel)
                try:
                    await task
                except asyncio.CancelledError:
                    latency = stop.latency()
            else:
                group.start_soon(stop.run, result.cancel)
                await consume()
                latency = stop.latency()
        stop_holder.clear()
        if with_tool:
            return Trial(latency, _agents_kept_tool(result))
        return Trial(latency, {"partial_text": _agents_kept_text(result)})

    return trial


# -- the harness -------------------------------------------------------------------------------


@dataclass
class Subject:
    """A row to measure: its name, its trial, and whether this project's targets apply."""

    name: str
    trial: TrialFn
    ours: bool = False
    streaming: bool = True
    notes: str = ""


async def measure(
    subject: Subject, section: str, server: ServerProcess | None, trials: int, warmup: int
) -> Row:
    """Run ``warmup`` + ``trials`` trials; one `Row` with the latencies of the last ``trials``.

    Also counts, per trial, the tasks still running when the run had returned (the run's own
    background work left behind) and whether the server saw the client leave mid-stream.
    """
    watch_server = server is not None and subject.streaming
    samples: list[float] = []
    kept: dict[str, int] = {}
    disconnects = tasks_left = 0
    for index in range(warmup + trials):
        before = 0
        if server is not None and watch_server:
            before = (await anyio.to_thread.run_sync(server.stats))["disconnects_mid_stream"]
        tasks_before = len(anyio.get_running_tasks())
        result = await subject.trial()
        left = len(anyio.get_running_tasks()) - tasks_before
        if server is not None and watch_server:
            seen, _ = await anyio.to_thread.run_sync(
                server.wait_for, "disconnects_mid_stream", before + 1, DISCONNECT_WAIT
            )
        else:
            await anyio.sleep(0.01)  # let whatever the run left behind finish before the next
            seen = False
        if index < warmup:
            continue
        samples.append(result.latency)
        tasks_left = max(tasks_left, left)
        disconnects += int(seen)
        for name, value in result.kept.items():
            kept[name] = kept.get(name, 0) + int(value)
    metrics: dict[str, Any] = latency_metrics(samples)
    for name, count in kept.items():
        metrics[f"kept_{name}"] = count == trials
        metrics[f"kept_{name}_trials"] = count
    metrics["tasks_left_at_return_max"] = tasks_left
    parts = [f"median {metrics['median_ms']:.3f} ms", f"p99 {metrics['p99_ms']:.3f} ms"]
    if kept:
        kept_text = ", ".join(
            f"{name.replace('_', ' ')} {yes_no(metrics[f'kept_{name}'])}" for name in kept
        )
        parts.append(f"kept: {kept_text}")
    if watch_server:
        metrics["server_saw_disconnect_trials"] = disconnects
        parts.append(f"disconnect seen {disconnects}/{trials}")
    parts.append(f"tasks left {tasks_left}")
    return Row(
        section,
        subject.name,
        metrics,
        "; ".join(parts),
        targets=TARGETS if subject.ours else (),
        notes=subject.notes,
    )


async def _run_subjects(
    subjects: list[tuple[str, Subject]], server: ServerProcess | None, trials: int, warmup: int
) -> list[Row]:
    rows = []
    for section, subject in subjects:
        if server is not None:
            if subject.streaming:
                server.serve_text(STREAM_CHUNKS, PACE)
            else:
                server.serve_tool_call()
        rows.append(await measure(subject, section, server, trials, warmup))
    return rows


MID_STREAM = "cancel latency mid-stream"
FLOOR = "raw openai SDK, task.cancel()"
TOOL_AT_ONCE = "cancel latency during a tool, pressed as soon as it started"
TOOL_LATER = "cancel latency during a tool, pressed 100 ms after it started"
TOOL_DELAYS = ((TOOL_AT_ONCE, 0.0), (TOOL_LATER, 0.1))
COOPERATIVE = "cooperative tool (ToolContext, partial output)"
PLAIN = "plain tool (the peers' body: await sleep(30))"


def _tool_subjects(model: Model, url: str) -> list[tuple[str, Subject]]:
    subjects: list[tuple[str, Subject]] = []
    for section, delay in TOOL_DELAYS:
        subjects += [
            (
                section,
                Subject(
                    f"{US} worker.cancel(), {COOPERATIVE} [asyncio]",
                    ours_tool(model, delay=delay),
                    True,
                    False,
                ),
            ),
            (
                section,
                Subject(
                    f"{US} worker.cancel(), {PLAIN} [asyncio]",
                    ours_tool(model, cooperative=False, delay=delay, sleep=asyncio.sleep),
                    True,
                    False,
                ),
            ),
            (
                section,
                Subject(
                    f"pydantic-ai CancellationToken.cancel(), {PLAIN}",
                    pydantic_ai_tool(url, delay=delay),
                    streaming=False,
                ),
            ),
            (
                section,
                Subject(
                    f"openai-agents result.cancel(), {PLAIN}",
                    openai_agents_run(url, with_tool=True, delay=delay),
                    streaming=False,
                ),
            ),
            (
                section,
                Subject(
                    f"openai-agents task.cancel(), {PLAIN}",
                    openai_agents_run(url, with_tool=True, task_cancel=True, delay=delay),
                    streaming=False,
                ),
            ),
        ]
    return subjects


async def _asyncio_rows(server: ServerProcess, trials: int, warmup: int) -> list[Row]:
    url = server.openai_base_url
    ours_model = OpenAIChatModel(_peers.MODEL, base_url=url, api_key="x")
    offline = OfflineModel(pace=PACE)
    subjects: list[tuple[str, Subject]] = [
        (
            MID_STREAM,
            Subject(f"{US} worker.cancel() [asyncio]", ours_stream(ours_model), True),
        ),
        (
            MID_STREAM,
            Subject(
                f"{US} outer cancel scope [asyncio]",
                ours_stream(ours_model, outer=True),
                notes="partial text checked in worker.history (the framework's exception "
                "propagates)",
            ),
        ),
        (
            MID_STREAM,
            Subject(
                f"{US} worker.cancel(), offline model",
                ours_stream(offline),
                streaming=False,
                notes="no HTTP: the worker's own share of the latency",
            ),
        ),
        (
            MID_STREAM,
            Subject(
                f"{FLOOR} (floor)",
                raw_sdk_task_cancel(url),
                notes="a plain asyncio task reading the SDK stream: interrupting the read and "
                "closing the connection, nothing else",
            ),
        ),
        (
            MID_STREAM,
            Subject(
                "raw openai SDK, anyio cancel scope + stop-button task",
                raw_sdk_stream(url),
                notes="the floor inside the harness every other row uses",
            ),
        ),
        (
            MID_STREAM,
            Subject(
                "bytes floor: httpx2 body split into SSE lines, task.cancel()",
                bytes_floor(url),
                notes="no SDK, no JSON",
            ),
        ),
        (MID_STREAM, Subject("pydantic-ai CancellationToken.cancel()", pydantic_ai_stream(url))),
        (
            MID_STREAM,
            Subject("pydantic-ai task.cancel()", pydantic_ai_stream(url, task_cancel=True)),
        ),
        (
            MID_STREAM,
            Subject("openai-agents result.cancel()", openai_agents_run(url, with_tool=False)),
        ),
        (
            MID_STREAM,
            Subject(
                "openai-agents task.cancel()",
                openai_agents_run(url, with_tool=False, task_cancel=True),
            ),
        ),
        *_tool_subjects(ours_model, url),
    ]
    try:
        return await _run_subjects(subjects, server, trials, warmup)
    finally:
        await ours_model.aclose()


async def _trio_rows(server: ServerProcess, trials: int, warmup: int) -> list[Row]:
    import trio

    model = OpenAIChatModel(_peers.MODEL, base_url=server.openai_base_url, api_key="x")
    subjects = [(MID_STREAM, Subject(f"{US} worker.cancel() [trio]", ours_stream(model), True))]
    for section, delay in TOOL_DELAYS:
        subjects += [
            (
                section,
                Subject(
                    f"{US} worker.cancel(), {COOPERATIVE} [trio]",
                    ours_tool(model, delay=delay),
                    True,
                    False,
                ),
            ),
            (
                section,
                Subject(
                    f"{US} worker.cancel(), {PLAIN} [trio]",
                    ours_tool(model, cooperative=False, delay=delay, sleep=trio.sleep),
                    True,
                    False,
                ),
            ),
        ]
    try:
        return await _run_subjects(subjects, server, trials, warmup)
    finally:
        await model.aclose()


def run(server: ServerProcess, trials: int = 60, warmup: int = 3) -> list[Row]:
    """Both scenarios for every subject: asyncio (all libraries), then trio (this project)."""
    rows = anyio.run(_asyncio_rows, server, trials, warmup, backend="asyncio")
    rows += anyio.run(_trio_rows, server, trials, warmup, backend="trio")
    order = {MID_STREAM: 0, TOOL_AT_ONCE: 1, TOOL_LATER: 2}
    rows.sort(key=lambda r: order[r.section])  # stable: keeps the subjects' order
    _compare(rows)
    return rows


def _compare(rows: list[Row]) -> None:
    """Same-run ratios: every median against this project's reference row of its section (the
    plain tool in the tool sections: the same body as the peers'), and, mid-stream, this
    project's medians above the raw-SDK ``task.cancel()`` floor."""
    names = (f"{US} worker.cancel() [asyncio]", f"{US} worker.cancel(), {PLAIN} [asyncio]")
    reference = {r.section: r for r in rows if r.subject in names}
    floor = next((r for r in rows if r.subject.startswith(FLOOR)), None)
    for row in rows:
        ours = reference.get(row.section)
        if ours is not None and row is not ours:
            ratio = row.metrics["median_ms"] / ours.metrics["median_ms"]
            row.metrics["median_vs_llm_worker"] = round(ratio, 2)
            row.summary += f"; {ratio:.2f}× {US}'s median"
        if floor is not None and row.section == MID_STREAM and row.targets:
            above = row.metrics["median_ms"] - floor.metrics["median_ms"]
            row.metrics["median_above_floor_ms"] = round(above, 4)
            row.summary += f"; {above:.3f} ms above the floor"


if __name__ == "__main__":
    from ._common import print_table

    with ServerProcess() as bench_server:
        print_table(run(bench_server, trials=20))
