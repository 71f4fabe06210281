"""Stream overhead: consuming a 20 000-chunk stream, relative to the raw official SDK.

The server sends a Chat Completions stream of ``CHUNKS`` text deltas with no delay. Each subject
consumes it to the end, collecting the text (checked complete); the baseline is the raw ``openai``
SDK (``AsyncOpenAI.chat.completions.create(stream=True)`` iterated to its end). Every subject gets
one untimed warm-up, then ``rounds`` rounds each time every subject once, in an order that rotates
and reverses from round to round; a subject's ratio is the median over rounds of its time divided
by the raw SDK's time in the same round, so drift and noise hit everyone alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from llm_worker import Worker
from llm_worker.events import TextDelta
from llm_worker.models.openai_chat import OpenAIChatModel

from . import _peers
from ._common import US, Row, Target
from ._server import ServerProcess

CHUNKS = 20_000
PIECE = "word "
SECTION = "stream overhead (20 000 chunks, ÷ raw openai SDK)"
RAW = "raw openai SDK"
TARGET = Target("ratio", "<=", 1.05, "×")

Consume = Callable[[], Awaitable[str]]


def raw_sdk(base_url: str) -> Consume:
    client = _peers.openai_client(base_url)

    async def consume() -> str:
        stream = await client.chat.completions.create(
            model=_peers.MODEL, messages=[{"role": "user", "content": "go"}], stream=True
        )
        parts = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return "".join(parts)

    return consume


def wire_floor(base_url: str) -> Consume:
    """The bytes alone, read with ``httpx2`` and split on SSE event boundaries (no JSON): how
    fast the server sends and the HTTP stack reads, below which nobody can go."""
    import httpx2

    client = httpx2.AsyncClient(timeout=60)
    body = {"model": _peers.MODEL, "messages": [{"role": "user", "content": "go"}], "stream": True}

    async def consume() -> str:
        events = 0
        last = b""  # an event boundary may straddle two reads
        async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            async for data in response.aiter_bytes():
                events += (last + data).count(b"\n\n")
                last = data[-1:]
        return PIECE * (events - 4)  # minus the role, finish, usage and [DONE] events

    return consume


def ours_stream(base_url: str) -> Consume:
    model = OpenAIChatModel(_peers.MODEL, base_url=base_url, api_key="x")

    async def consume() -> str:
        worker = Worker(model)
        parts = []
        async with worker.stream("go") as run:
            async for event in run:
                if type(event) is TextDelta:
                    parts.append(event.text)
        run.result  # noqa: B018 - raises if the run failed
        return "".join(parts)

    return consume


def ours_run(base_url: str) -> Consume:
    model = OpenAIChatModel(_peers.MODEL, base_url=base_url, api_key="x")

    async def consume() -> str:
        result = await Worker(model).run("go")
        return result.output

    return consume


def pydantic_ai(base_url: str, debounce_by: float | None) -> Consume:
    agent = _peers.pydantic_ai_agent(_peers.openai_client(base_url))

    async def consume() -> str:
        parts = []
        async with agent.run_stream("go") as response:
            async for text in response.stream_text(delta=True, debounce_by=debounce_by):
                parts.append(text)
        return "".join(parts)

    return consume


def openai_agents(base_url: str) -> Consume:
    import agents

    agent = _peers.openai_agents_agent(_peers.openai_client(base_url))

    async def consume() -> str:
        parts = []
        result = agents.Runner.run_streamed(agent, "go")
        event: Any
        async for event in result.stream_events():
            if _peers.is_agents_text_delta(event):
                parts.append(event.data.delta)
        return "".join(parts)

    return consume


async def _measure(base_url: str, rounds: int) -> dict[str, list[float]]:
    subjects: dict[str, Consume] = {
        RAW: raw_sdk(base_url),
        "wire floor: httpx2 bytes, no parsing": wire_floor(base_url),
        f"{US} worker.stream()": ours_stream(base_url),
        f"{US} worker.run() (no event stream)": ours_run(base_url),
        "pydantic-ai run_stream/stream_text(debounce_by=None)": pydantic_ai(base_url, None),
        "pydantic-ai run_stream/stream_text (default debounce)": pydantic_ai(base_url, 0.1),
        "openai-agents run_streamed/stream_events": openai_agents(base_url),
    }
    expected = PIECE * CHUNKS
    for name, consume in subjects.items():  # warm-up, and a check that everyone got it all
        text = await consume()
        if text != expected:
            raise AssertionError(f"{name} got {len(text)} characters, expected {len(expected)}")
    times: dict[str, list[float]] = {name: [] for name in subjects}
    names = list(subjects)
    for index in range(rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        if index % 2:
            order.reverse()
        for name in order:
            started = time.perf_counter()
            await subjects[name]()
            times[name].append(time.perf_counter() - started)
    return times


def run(server: ServerProcess, rounds: int = 5) -> list[Row]:
    """One row per subject: median ratio to the raw SDK over ``rounds`` rounds."""
    server.serve_text(CHUNKS, 0.0, piece=PIECE)
    times = anyio.run(_measure, server.openai_base_url, rounds, backend="asyncio")
    baseline = times[RAW]
    rows = []
    for name, samples in times.items():
        ratios = [t / b for t, b in zip(samples, baseline, strict=True)]
        metrics: dict[str, Any] = {
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "median_s": round(statistics.median(samples), 4),
            "us_per_chunk": round(statistics.median(samples) / CHUNKS * 1e6, 2),
            "rounds": rounds,
        }
        summary = (
            f"{metrics['ratio']:.2f}× (rounds {metrics['ratio_min']:.2f}–"
            f"{metrics['ratio_max']:.2f}), {metrics['median_s']:.3f} s, "
            f"{metrics['us_per_chunk']:.1f} µs/chunk"
        )
        targets = (TARGET,) if name == f"{US} worker.stream()" else ()
        rows.append(Row(SECTION, name, metrics, summary, targets=targets))
    return rows


if __name__ == "__main__":
    from ._common import print_table

    with ServerProcess() as bench_server:
        print_table(run(bench_server, rounds=3))
