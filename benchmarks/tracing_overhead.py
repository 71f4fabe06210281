"""Tracing overhead: what a run costs with tracing off, on with a no-op provider, and on with
the SDK exporting to memory, as ratios to the uninstrumented baseline in the same run.

The workload is a whole run against an in-process `ScriptedModel` with no pacing (two turns, a
tool call between them, ~20 text deltas), so the worker's own work is all there is to measure
and the tracing seam's share is as large as it gets; a run against a real provider spends far
longer waiting for the network. Subjects:

* uninstrumented: the no-op observer installed directly (what a program that never imports
  OpenTelemetry gets);
* tracing off: OpenTelemetry imported but no tracer provider configured (the worker checks, per
  run, and traces nothing);
* no-op provider: ``tracing.instrument(NoOpTracerProvider())`` (spans made, none recorded);
* SDK, in-memory exporter: ``TracerProvider`` + ``SimpleSpanProcessor(InMemorySpanExporter())``.

Each round times ``RUNS`` runs per subject, in an order that rotates and reverses from round to
round; a subject's ratio is the median over rounds of its time divided by the baseline's time in
the same round (the ratio of the subjects' median times is given too: on a busy machine it is
the steadier of the two). Times are the process's CPU time (``time.process_time``): the runs
never wait for anything, and CPU time is far less disturbed than wall time by other work.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

from llm_worker import Worker, tool
from llm_worker import _observe as observe
from llm_worker.testing import Script, ScriptedModel

from ._common import US, Row, Target

SECTION = "tracing overhead (whole run, ÷ uninstrumented)"
RUNS = 25
BASELINE = f"{US} uninstrumented"
OFF = f"{US} tracing off (OpenTelemetry imported, no provider)"
NOOP = f"{US} tracing on, no-op tracer provider"
SDK = f"{US} tracing on, SDK + in-memory exporter"
TARGETS = {OFF: Target("ratio", "<=", 1.05, "×"), NOOP: Target("ratio", "<=", 1.15, "×")}


@tool
async def lookup(key: str) -> str:
    """Look ``key`` up."""
    return f"value of {key}"


ANSWER = Script.text(" ".join(f"word{i}" for i in range(20)), chunks=20)
CALL = Script.tool_calls(("lookup", {"key": "k"}))


def _workers() -> list[Worker]:
    """Fresh workers, built before the clock starts: each does one run on a short history."""
    return [Worker(ScriptedModel([CALL, ANSWER]), tools=[lookup]) for _ in range(RUNS)]


def _uninstrumented() -> None:
    observe.set_observer_factory(lambda run, model: observe.NO_OBSERVER)


def _subjects() -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """name → (install, after each round)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import NoOpTracerProvider

    from llm_worker import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def nothing() -> None:
        return None

    return {
        BASELINE: (_uninstrumented, nothing),
        OFF: (tracing.uninstrument, nothing),
        NOOP: (lambda: tracing.instrument(NoOpTracerProvider()), nothing),
        SDK: (lambda: tracing.instrument(provider), exporter.clear),
    }


async def _measure(rounds: int) -> dict[str, list[float]]:
    subjects = _subjects()
    times: dict[str, list[float]] = {name: [] for name in subjects}
    names = list(subjects)
    for index in range(rounds + 1):  # the first round is a warm-up
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        if index % 2:
            order.reverse()
        for name in order:
            install, after = subjects[name]
            install()
            workers = _workers()
            gc.collect()
            started = time.process_time()
            for worker in workers:
                await worker.run("look k up")
            elapsed = time.process_time() - started
            after()
            if index:
                times[name].append(elapsed)
    observe.set_observer_factory(None)
    return times


def _off_cost_per_run(repeat: int = 20_000) -> float:
    """CPU µs a run pays with tracing off: choosing its observer (OpenTelemetry imported, no
    provider) and the no-op seam calls of a two-turn run with one tool call — timed directly,
    since a whole run's noise is larger than this."""
    from llm_worker._runs import Run
    from llm_worker.cancel import CancelToken
    from llm_worker.hooks import HookContext

    observe.set_observer_factory(None)
    token = CancelToken()
    run = Run(id="r", token=token, input="x", ctx=HookContext(run_id="r", turn=0, token=token))
    model = ScriptedModel()
    started = time.process_time()
    for _ in range(repeat):
        observer = observe.observer_for(run, model)
        observer.run_started()
        for point in ("before_llm_request", "before_llm_request", "on_turn_end"):
            with observer.hook(point, ()):  # type: ignore[arg-type]
                pass
        observer.tool_calls((), [])
        observer.run_ended("finished", None)
    return (time.process_time() - started) / repeat * 1e6


def run(rounds: int = 40) -> list[Row]:
    """One row per subject: the median ratio of its run time to the baseline's."""
    times = anyio.run(_measure, rounds, backend="asyncio")
    seam_us = _off_cost_per_run()
    baseline = times[BASELINE]
    baseline_median = statistics.median(baseline)
    rows = []
    for name, samples in times.items():
        ratios = [t / b for t, b in zip(samples, baseline, strict=True)]
        per_run = statistics.median(samples) / RUNS * 1e6  # CPU µs
        metrics: dict[str, Any] = {
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "ratio_of_medians": round(statistics.median(samples) / baseline_median, 3),
            "cpu_us_per_run": round(per_run, 1),
            "runs": RUNS,
            "rounds": rounds,
        }
        summary = (
            f"{metrics['ratio']:.3f}× (rounds {metrics['ratio_min']:.3f}–"
            f"{metrics['ratio_max']:.3f}; of medians {metrics['ratio_of_medians']:.3f}×), "
            f"{per_run:.0f} CPU µs/run"
        )
        if name == OFF:
            metrics["seam_cpu_us_per_run"] = round(seam_us, 2)
            summary += f"; the seam itself: {seam_us:.2f} CPU µs/run"
        target = TARGETS.get(name)
        rows.append(Row(SECTION, name, metrics, summary, targets=(target,) if target else ()))
    return rows


if __name__ == "__main__":
    from ._common import print_table

    print_table(run())
