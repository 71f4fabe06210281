"""Deadlines: no value given anywhere may stop the shared deadline thread, or another deadline.

The deadline thread is one per process, so each test here ends by proving that an unrelated,
short deadline still fires: that is the damage a bad value used to do.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
import threading
import time
from typing import Any

import anyio
import pytest

from llm_worker.cancel import CancelToken, ConcurrentMap, shielded
from llm_worker.cancel._timers import _TimerThread

from ._helpers import finishes_in_thread

HUGE_DELAYS = [
    pytest.param(threading.TIMEOUT_MAX * 2, id="twice-TIMEOUT_MAX"),
    pytest.param(1e10, id="1e10"),
    pytest.param(1e300, id="1e300"),
    pytest.param(10**400, id="int-beyond-float"),
]
BAD_DELAYS = [
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param(-1.0, ValueError, id="negative"),
    pytest.param(-math.inf, ValueError, id="-inf"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param("5", TypeError, id="str"),
]


def another_deadline_fires(delay: float = 0.01) -> bool:
    """True if a fresh token's short deadline fires (within a generous 5 s)."""
    token = CancelToken("witness")
    fired = threading.Event()
    token.on_cancel(fired.set)
    token.cancel_after(delay)
    return fired.wait(5)


@pytest.mark.parametrize("delay", HUGE_DELAYS)
def test_a_deadline_beyond_the_platform_maximum_never_stops_other_timeouts(delay: Any) -> None:
    far = CancelToken("far")
    disarm = far.cancel_after(delay)
    time.sleep(0.05)  # let the deadline thread pick it up and start waiting for it

    assert another_deadline_fires()
    assert another_deadline_fires()  # and again: the thread is still alive and serving
    assert not far.cancelled
    disarm()


@pytest.mark.parametrize(("delay", "error"), BAD_DELAYS)
def test_a_bad_deadline_is_refused_at_the_call_and_never_blocks_other_timeouts(
    delay: Any, error: type[Exception]
) -> None:
    token = CancelToken("bad")

    with pytest.raises(error, match="deadline"):
        token.cancel_after(delay)

    assert not token.cancelled
    assert another_deadline_fires()


def test_an_infinite_deadline_means_no_deadline() -> None:
    token = CancelToken("forever")

    disarm = token.cancel_after(math.inf)

    assert another_deadline_fires()
    assert not token.cancelled
    disarm()  # harmless


def test_a_zero_deadline_fires_at_once() -> None:
    token = CancelToken("already over")
    fired = threading.Event()
    token.on_cancel(fired.set)

    token.cancel_after(0)

    assert fired.wait(5)
    assert token.cause is not None
    assert token.cause.kind == "deadline"


@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt, RecursionError])
def test_a_deadline_callback_raising_anything_never_stops_other_deadlines(
    exception: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    token = CancelToken("raising")
    raised = threading.Event()

    def callback() -> None:
        raised.set()
        raise exception("from a cancel callback in the deadline thread")

    token.on_cancel(callback)
    with caplog.at_level(logging.ERROR, logger="llm_worker.cancel"):
        token.cancel_after(0)
        assert raised.wait(5)
        assert another_deadline_fires()

    assert exception.__name__ in caplog.text


# -- the thread itself ------------------------------------------------------------------------


class _KillTimerThread(BaseException):
    """Raised inside a timer thread by the test below, to make it really die."""


def blocked_in_condition_wait(thread: threading.Thread) -> bool:
    """True if ``thread`` is parked in ``threading.Condition.wait`` (waiting for a deadline)."""
    assert thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    return (
        frame is not None
        and frame.f_code.co_name == "wait"
        and frame.f_code.co_filename == threading.__file__
    )


def test_a_timer_thread_that_died_is_restarted_by_the_next_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Defence in depth: nothing known can kill the thread any more, but if anything ever does,
    # deadlines must not silently stop for the rest of the process. A private instance is used,
    # and killed for real with an asynchronous exception, so the process's own thread is spared.
    timers = _TimerThread(name="test-deadlines")
    timers.call_at(time.monotonic() + 3600, lambda: None)
    thread = timers._thread
    assert thread is not None
    assert thread.ident is not None
    deadline = time.monotonic() + 5
    while not blocked_in_condition_wait(thread):  # so the exception lands inside the wait
        assert time.monotonic() < deadline, "the timer thread never started waiting"
        time.sleep(0.001)
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    assert set_async_exc(ctypes.c_ulong(thread.ident), ctypes.py_object(_KillTimerThread)) == 1
    with caplog.at_level(logging.CRITICAL, logger="llm_worker.cancel"):
        timers.call_at(time.monotonic() + 3600, lambda: None)  # wakes it: the exception lands
        thread.join(5)
    assert not thread.is_alive()
    assert "deadline thread died" in caplog.text

    fired = threading.Event()
    assert finishes_in_thread(lambda: timers.call_at(time.monotonic() + 0.01, fired.set))

    assert fired.wait(5)
    assert timers._thread is not thread


def test_a_timer_refuses_a_time_that_is_not_finite() -> None:
    timers = _TimerThread(name="test-deadlines")
    for when in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            timers.call_at(when, lambda: None)
    assert timers._heap == []
    assert timers._thread is None  # nothing was scheduled, so nothing was started


# -- on an event loop ----------------------------------------------------------------------


@pytest.mark.parametrize("delay", [1e10, 1e300, math.inf])
async def test_waiting_beside_a_huge_deadline_still_sees_a_short_one(delay: float) -> None:
    far, near = CancelToken("far"), CancelToken("near")
    far.cancel_after(delay)
    near.cancel_after(0.01)

    with anyio.fail_after(5):
        cause = await near.wait()

    assert cause.kind == "deadline"
    assert not far.cancelled


@pytest.mark.parametrize("bound", [1e10, 1e300, math.inf, None])
async def test_a_shielded_region_with_a_huge_or_no_bound_runs_to_its_end(
    bound: float | None,
) -> None:
    with anyio.fail_after(5), shielded(bound, "a long clean-up") as region:
        await anyio.sleep(0.01)

    assert not region.overran
    assert another_deadline_fires()


@pytest.mark.parametrize(("bound", "error"), BAD_DELAYS)
async def test_a_shielded_region_refuses_a_bad_bound_before_it_starts(
    bound: Any, error: type[Exception]
) -> None:
    entered = False
    with pytest.raises(error, match="closing the stream"), shielded(bound, "closing the stream"):
        entered = True

    assert not entered


@pytest.mark.parametrize(("grace", "error"), BAD_DELAYS)
def test_a_concurrent_map_refuses_a_bad_grace_at_construction(
    grace: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="grace"):
        ConcurrentMap([], grace=grace)


@pytest.mark.parametrize("grace", [1e10, math.inf])
async def test_a_call_past_its_own_deadline_with_a_huge_grace_keeps_its_partial_output(
    grace: float,
) -> None:
    # The call's own token is cancelled (a tool timeout) while the group goes on: the map used to
    # arm a timer of ``grace`` seconds for its hard stop, which a huge grace killed.
    async def call(token: CancelToken) -> str:
        await token.wait()
        await anyio.sleep(0.02)  # winding down, past its deadline
        return "partial"

    def own_deadline(token: CancelToken) -> Any:
        token.cancel_after(0.01)
        return call(token)

    runner: ConcurrentMap[str] = ConcurrentMap([own_deadline], grace=grace)
    with anyio.fail_after(5):
        [outcome] = await runner.run()

    assert (outcome.status, outcome.value) == ("interrupted", "partial")
    assert another_deadline_fires()


@pytest.mark.parametrize("grace", [1e10, math.inf])
async def test_a_stopped_map_with_a_huge_grace_waits_for_its_cooperating_calls(
    grace: float,
) -> None:
    stop = CancelToken("stop")

    async def call(token: CancelToken) -> str:
        await token.wait()
        await anyio.sleep(0.02)
        return "partial"

    runner: ConcurrentMap[str] = ConcurrentMap([call, call], token=stop, grace=grace)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            await anyio.sleep(0.01)
            stop.cancel("user")

    assert [(o.status, o.value) for o in runner.outcomes] == [("interrupted", "partial")] * 2
