"""Profiles of this project where the benchmarks measure it: ``python -m benchmarks.profiling``.

* ``cancel {stream,offline,tool,raw} [--backend B]``: cProfile switched on from the stop
  button's press until the run has returned, over ``--trials`` trials (see `Stop.profiler`), so
  it covers exactly the measured windows; prints Python calls per window by package and the top
  functions of ``llm_worker`` by own time (``raw``: the raw-SDK floor, for comparison).
* ``scale [--backend B] [--pace P]``: pyinstrument over the cancel-all phase of 10 000 runs.
* ``stream``: pyinstrument over ``worker.stream()`` consuming the 20 000-chunk stream.

cProfile slows Python calls down about twofold: read the split, not the absolute times.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import pstats
from typing import Any

import anyio

from . import cancel_latency, scale, stream_overhead
from ._server import ServerProcess

PACKAGES = ("llm_worker", "anyio", "asyncio", "trio", "httpcore2", "httpx2", "openai", "pydantic")


def _package(filename: str) -> str:
    if filename.startswith(("~", "<")):
        return "builtins (C)"
    for name in PACKAGES:
        if f"/{name}/" in filename:
            return name
    return "other"


def report_windows(profile: cProfile.Profile, windows: int, top: int = 25) -> None:
    """Calls and own time per window, by package; then the top ``llm_worker`` functions."""
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    ours = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.items():
        package = _package(filename)
        calls[package] += ncalls
        own[package] += tottime
        if package == "llm_worker":
            where = filename.split("llm_worker/", 1)[1]
            ours.append((tottime, cumtime, ncalls, f"{where}:{line} {name}"))
    total_calls, total_own = sum(calls.values()), sum(own.values())
    print(
        f"{total_calls / windows:.0f} Python calls and {total_own / windows * 1e6:.0f} µs "
        f"(profiled) per window, by package:"
    )
    for package, count in calls.most_common():
        print(
            f"  {package:14s} {count / windows:6.0f} calls  {own[package] / windows * 1e6:6.0f} µs"
        )
    print(f"\ntop {top} llm_worker functions (µs per window: own, cumulative; calls per window):")
    for tottime, cumtime, ncalls, where in sorted(ours, reverse=True)[:top]:
        print(
            f"  {tottime / windows * 1e6:6.1f} {cumtime / windows * 1e6:7.1f} "
            f"{ncalls / windows:5.1f}x  {where}"
        )


async def _cancel(server: ServerProcess, which: str, trials: int) -> None:
    from llm_worker.models.offline import OfflineModel
    from llm_worker.models.openai_chat import OpenAIChatModel

    model = OpenAIChatModel("gpt-4o-mini", base_url=server.openai_base_url, api_key="x")
    if which == "tool":
        server.serve_tool_call()
        trial = cancel_latency.ours_tool(model)
    else:
        server.serve_text(cancel_latency.STREAM_CHUNKS, cancel_latency.PACE)
        trial = {
            "stream": cancel_latency.ours_stream(model),
            "offline": cancel_latency.ours_stream(OfflineModel(pace=cancel_latency.PACE)),
            "raw": cancel_latency.raw_sdk_stream(server.openai_base_url),
        }[which]
    for _ in range(5):
        await trial()
    profile = cProfile.Profile()
    cancel_latency.Stop.profiler = profile
    try:
        for _ in range(trials):
            gc.collect()
            await trial()
    finally:
        cancel_latency.Stop.profiler = None
        await model.aclose()
    report_windows(profile, trials)


def _pyinstrument() -> Any:
    from pyinstrument import Profiler

    return Profiler(interval=0.0005, async_mode="disabled")


def _print(profiler: Any) -> None:
    print(profiler.output_text(unicode=True, color=False, show_all=False))


async def _stream(server: ServerProcess) -> None:
    server.serve_text(stream_overhead.CHUNKS, 0.0, piece=stream_overhead.PIECE)
    consume = stream_overhead.ours_stream(server.openai_base_url)
    await consume()
    profiler = _pyinstrument()
    profiler.start()
    await consume()
    profiler.stop()
    _print(profiler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__)
    parser.add_argument("what", choices=("cancel", "scale", "stream"))
    parser.add_argument("scenario", nargs="?", default="stream", help="for cancel")
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--pace", type=float, default=0.05, help="for scale")
    args = parser.parse_args(argv)
    gc.collect()
    gc.freeze()
    if args.what == "scale":
        profiler = _pyinstrument()
        result = anyio.run(scale.cancel_many, scale.RUNS, args.pace, profiler, backend=args.backend)
        print(result)
        _print(profiler)
        return
    with ServerProcess() as server:
        if args.what == "cancel":
            anyio.run(_cancel, server, args.scenario, args.trials, backend=args.backend)
        else:
            anyio.run(_stream, server, backend="asyncio")


if __name__ == "__main__":
    main()
