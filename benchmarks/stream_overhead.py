"""Stream overhead: consuming a 20 000-chunk stream, relative to the raw official SDK.

The server sends a Chat Completions stream of ``CHUNKS`` text deltas with no delay. Each subject
consumes it to the end, collecting the text (checked complete); the baseline is the raw ``openai``
SDK (``AsyncOpenAI.chat.completions.create(stream=True)`` iterated to its end). Every subject gets
one untimed warm-up, then ``rounds`` rounds each time every subject once, in an order that rotates
and reverses from round to round; a subject's ratio is the median over rounds of its time divided
by the raw SDK's time in the same round, so drift and noise hit everyone alike.

The Gemini section does the same over a Gemini ``streamGenerateContent?alt=sse`` stream of
``CHUNKS`` chunks. Its baseline is a hand-written client on raw ``httpx2`` (read the lines, parse
each ``data:`` line's JSON, take the text): `GeminiModel` does not use the ``google-genai`` SDK
(see ``llm_worker/models/gemini.py``), whose own ``generate_content_stream`` is shown for
information (asyncio only: its async client does not run on trio).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from llm_worker import Worker
from llm_worker.events import OutputDelta, TextDelta
from llm_worker.models.gemini import GeminiModel
from llm_worker.models.openai_chat import OpenAIChatModel

from . import _peers
from ._common import US, Row, Target
from ._server import GEMINI_MODEL, ServerProcess

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


GEMINI_SECTION = "Gemini stream overhead (20 000 chunks, ÷ raw httpx2 client)"
GEMINI_RAW = "raw httpx2: aiter_lines + json.loads"
_GEMINI_PATH = f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse"
_GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "go"}]}]}


def gemini_raw(base_url: str) -> Consume:
    """What a hand-written Gemini client does: POST, read lines, parse each ``data:`` line."""
    import json

    import httpx2

    client = httpx2.AsyncClient(timeout=60)

    async def consume() -> str:
        parts = []
        async with client.stream("POST", base_url + _GEMINI_PATH, json=_GEMINI_BODY) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    for part in chunk["candidates"][0]["content"]["parts"]:
                        if "text" in part:
                            parts.append(part["text"])
        return "".join(parts)

    return consume


def gemini_wire_floor(base_url: str) -> Consume:
    """The bytes alone, read with ``httpx2`` and split on event boundaries (no JSON)."""
    import httpx2

    client = httpx2.AsyncClient(timeout=60)

    async def consume() -> str:
        events = 0
        last = b""
        async with client.stream("POST", base_url + _GEMINI_PATH, json=_GEMINI_BODY) as response:
            async for data in response.aiter_bytes():
                events += (last + data).count(b"\r\n\r\n")
                last = data[-3:]
        return PIECE * events

    return consume


def gemini_ours(base_url: str, *, stream: bool) -> Consume:
    model = GeminiModel(GEMINI_MODEL, base_url=base_url, api_key="x")

    async def consume() -> str:
        worker = Worker(model)
        if not stream:
            return (await worker.run("go")).output
        parts = []
        async with worker.stream("go") as run:
            async for event in run:
                if type(event) is TextDelta:
                    parts.append(event.text)
        run.result  # noqa: B018 - raises if the run failed
        return "".join(parts)

    return consume


def gemini_sdk(base_url: str) -> Consume | None:
    """``google-genai``'s ``generate_content_stream`` (None when it is not installed)."""
    try:
        from google import genai
    except ImportError:
        return None
    options = {"base_url": base_url, "api_version": "v1beta"}
    client = genai.Client(api_key="x", http_options=options)

    async def consume() -> str:
        parts = []
        stream = await client.aio.models.generate_content_stream(model=GEMINI_MODEL, contents="go")
        async for chunk in stream:
            if chunk.text:
                parts.append(chunk.text)
        return "".join(parts)

    return consume


async def _measure_gemini(base_url: str, rounds: int) -> dict[str, list[float]]:
    subjects: dict[str, Consume] = {
        GEMINI_RAW: gemini_raw(base_url),
        "wire floor: httpx2 bytes, no parsing": gemini_wire_floor(base_url),
        f"{US} worker.stream() on GeminiModel": gemini_ours(base_url, stream=True),
        f"{US} worker.run() on GeminiModel": gemini_ours(base_url, stream=False),
    }
    if (sdk := gemini_sdk(base_url)) is not None:
        subjects["google-genai SDK generate_content_stream"] = sdk
    return await _time(subjects, rounds)


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
    return await _time(subjects, rounds)


async def _time(subjects: dict[str, Consume], rounds: int) -> dict[str, list[float]]:
    """Each subject's time per round (after a checked warm-up), in rotating order."""
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
    """One row per subject: median ratio to the baseline over ``rounds`` rounds (the OpenAI
    section ÷ the raw openai SDK, the Gemini section ÷ a raw httpx2 client)."""
    server.serve_text(CHUNKS, 0.0, piece=PIECE)
    times = anyio.run(_measure, server.openai_base_url, rounds, backend="asyncio")
    rows = _rows(SECTION, times, RAW, f"{US} worker.stream()")
    rows.append(structured_output_row(server, rounds))
    server.serve_gemini_text(CHUNKS, piece=PIECE)
    times = anyio.run(_measure_gemini, server.base_url, rounds, backend="asyncio")
    # No target: the baseline is a bare loop that builds nothing (no events, no history), not an
    # SDK; the google-genai row shows what the official client costs on the same stream.
    return rows + _rows(GEMINI_SECTION, times, GEMINI_RAW, None)


def _rows(section: str, times: dict[str, list[float]], raw: str, targeted: str | None) -> list[Row]:
    baseline = times[raw]
    rows = []
    for name, samples in times.items():
        ratios = [t / b for t, b in zip(samples, baseline, strict=True)]
        metrics: dict[str, Any] = {
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "median_s": round(statistics.median(samples), 4),
            "us_per_chunk": round(statistics.median(samples) / CHUNKS * 1e6, 2),
            "rounds": len(samples),
        }
        summary = (
            f"{metrics['ratio']:.2f}× (rounds {metrics['ratio_min']:.2f}–"
            f"{metrics['ratio_max']:.2f}), {metrics['median_s']:.3f} s, "
            f"{metrics['us_per_chunk']:.1f} µs/chunk"
        )
        targets = (TARGET,) if name == targeted else ()
        rows.append(Row(section, name, metrics, summary, targets=targets))
    return rows


STRUCTURED = f"{US} worker.stream(output_type=str), OutputDelta ÷ {US} worker.stream() text"


def structured_output_row(server: ServerProcess, rounds: int) -> Row:
    """Structured output's streaming cost: the same 20 000 chunks as one JSON string answer
    (``{"value": "word word …"}``, validated partially as it grows, `OutputDelta` events)
    against the plain text run, alternating in the same rounds."""
    model = OpenAIChatModel(_peers.MODEL, base_url=server.openai_base_url, api_key="x")

    async def consume(output_type: Any) -> int:
        deltas = 0
        async with Worker(model).stream("go", output_type=output_type) as run:
            async for event in run:
                deltas += type(event) is OutputDelta
        assert run.result is not None
        return deltas

    async def measure() -> tuple[list[float], list[float], int]:
        text_times: list[float] = []
        structured_times: list[float] = []
        deltas = 0
        for index in range(rounds + 1):  # the first round warms up
            order = [(None, text_times), (str, structured_times)]
            for output_type, times in order if index % 2 else reversed(order):
                if output_type is None:
                    server.serve_text(CHUNKS, 0.0, piece=PIECE)
                else:
                    server.serve_json_text(CHUNKS, piece=PIECE)
                started = time.perf_counter()
                seen = await consume(output_type)
                if index:
                    times.append(time.perf_counter() - started)
                    deltas = seen if output_type is not None else deltas
        return text_times, structured_times, deltas

    text_times, structured_times, deltas = anyio.run(measure, backend="asyncio")
    ratios = [s / t for s, t in zip(structured_times, text_times, strict=True)]
    metrics: dict[str, Any] = {
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "median_s": round(statistics.median(structured_times), 4),
        "output_deltas": deltas,
        "rounds": rounds,
    }
    summary = (
        f"{metrics['ratio']:.2f}× (rounds {metrics['ratio_min']:.2f}–{metrics['ratio_max']:.2f}),"
        f" {metrics['median_s']:.3f} s, {deltas} OutputDelta events for {CHUNKS} chunks"
    )
    return Row(SECTION, STRUCTURED, metrics, summary)


if __name__ == "__main__":
    from ._common import print_table

    with ServerProcess() as bench_server:
        print_table(run(bench_server, rounds=3))
