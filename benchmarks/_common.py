"""What every benchmark section shares: result rows, targets, statistics and the printed table."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

#: The project under test, as it appears in the table.
US = "llm-worker"
#: The packages whose versions go into the results.
PACKAGES = ("llm-worker", "openai", "httpx2", "anyio", "trio", "pydantic-ai-slim", "openai-agents")


@dataclass(frozen=True)
class Target:
    """A target for one metric of this project: ``metric`` compared to ``limit`` with ``op``."""

    metric: str
    op: str  # "<=", ">=" or "=="
    limit: float
    unit: str = ""

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.limit
        if self.op == ">=":
            return value >= self.limit
        return value == self.limit

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}{self.unit}"


@dataclass
class Row:
    """One line of the table: a subject (library and method) measured in one section.

    ``metrics`` holds the numbers (also written to JSON), ``summary`` their short printed form,
    ``targets`` this project's targets for the row (empty for peers).
    """

    section: str
    subject: str
    metrics: dict[str, Any]
    summary: str
    targets: Sequence[Target] = ()
    notes: str = ""
    misses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.misses = [
            f"{t} (got {self.metrics.get(t.metric)})"
            for t in self.targets
            if not t.met(float(self.metrics.get(t.metric, math.nan)))
        ]

    @property
    def status(self) -> str:
        if not self.targets:
            return ""
        return "MISSED" if self.misses else "met"

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "subject": self.subject,
            "metrics": self.metrics,
            "targets": [
                {
                    "target": str(t),
                    "value": self.metrics.get(t.metric),
                    "met": t.met(float(self.metrics.get(t.metric, math.nan))),
                }
                for t in self.targets
            ],
            "status": self.status or None,
            "notes": self.notes,
        }


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0–1) with linear interpolation between order statistics."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_metrics(samples_s: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99 and max of latencies given in seconds, in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "trials": len(ms),
        "median_ms": round(statistics.median(ms), 4),
        "p95_ms": round(percentile(ms, 0.95), 4),
        "p99_ms": round(percentile(ms, 0.99), 4),
        "max_ms": round(max(ms), 4),
    }


def yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


def print_table(rows: Sequence[Row]) -> None:
    """The table, grouped by section. This project's rows carry their targets' verdict (``met``
    or ``MISSED``, then which ones and the value); peers' rows have none."""
    width = max(len(r.subject) for r in rows)
    pad = " " * (width + 12)
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            print(f"\n== {section}")
        print(f"  {row.subject:<{width}}  {row.status:<6}  {row.summary}")
        if row.misses:
            print(f"{pad}↳ missed: {'; '.join(row.misses)}")
        elif row.targets:
            print(f"{pad}↳ targets: {'; '.join(str(t) for t in row.targets)}")
        if row.notes:
            print(f"{pad}↳ {row.notes}")


def markdown(rows: Sequence[Row], title: str) -> str:
    """The table as Markdown (one table per section), for the README."""
    lines = [title]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines += ["", f"**{section}**", "", "| subject | result | target |", "|---|---|---|"]
        if row.misses:
            verdict = "**missed**: " + "; ".join(row.misses)
        elif row.targets:
            verdict = "met: " + "; ".join(str(t) for t in row.targets)
        else:
            verdict = ""
        result = row.summary + (f" ({row.notes})" if row.notes else "")
        lines.append(f"| {row.subject} | {result} | {verdict} |".replace("\n", " "))
    return "\n".join(lines) + "\n"


def source_state() -> dict[str, Any]:
    """The commit measured, and the files under ``src`` that differ from it (if any)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.rstrip()

    changed = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_src_changes": changed}


def environment() -> dict[str, Any]:
    """The machine and package versions the numbers were measured with."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "packages": versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
