"""Every async test runs on three backends: asyncio, asyncio with eager tasks, and trio.

``anyio_mode = "auto"`` (pyproject.toml) makes every ``async def test_*`` an anyio test, so no
test silently runs on one backend only.

Cancellation bugs hide in the differences: eager tasks change where a task first runs (and so where
a cancel can land), and trio's cancellation is level-triggered natively.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    return loop


_BACKENDS: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.version_info >= (3, 12):
    _BACKENDS.append(pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="asyncio+eager"))
_BACKENDS.append(pytest.param(("trio", {}), id="trio"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


SWEPT: dict[str, list[int]] = {}


@pytest.fixture
def record_sweep() -> Any:
    """Record a cancellation sweep (its checkpoints and the re-runs that swept them)."""

    def record(name: str, report: Any) -> None:
        total = SWEPT.setdefault(name, [0, 0])
        total[0] += report.checkpoints
        total[1] += report.runs

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SWEPT:
        terminalreporter.section("cancellation sweeps (all backends): checkpoints, runs cancelled")
        for name, (checkpoints, runs) in sorted(SWEPT.items()):
            terminalreporter.write_line(f"{name:56s} {checkpoints:7d} {runs:6d}")
        checkpoints = sum(c for c, _ in SWEPT.values())
        runs = sum(r for _, r in SWEPT.values())
        terminalreporter.write_line(f"{'total':56s} {checkpoints:7d} {runs:6d}")
