"""`ConcurrentMap`: a limit, token-first cancellation with grace, hard cancel, abandoned threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from llm_worker.cancel import (
    CancelToken,
    ConcurrentMap,
    concurrent_map,
    move_on_cancel,
)

from ._helpers import registrations


class Started:
    """Counts calls that reached their working part; the test waits for all of them."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._count = 0
        self._lock = threading.Lock()
        self._all = threading.Event()

    def mark(self) -> None:
        with self._lock:
            self._count += 1
            if self._count >= self.expected:
                self._all.set()

    async def wait(self) -> None:
        with anyio.fail_after(5):
            while not self._all.is_set():
                await anyio.sleep(0.001)


async def cancel_when(started: Started, token: CancelToken, reason: str = "stop") -> None:
    await started.wait()
    token.cancel(reason)


# -- running ---------------------------------------------------------------------------------


async def test_every_call_returns_its_result_in_call_order() -> None:
    async def double(x: int, token: CancelToken) -> int:
        await anyio.sleep(0.001 * (5 - x))  # finish in reverse order
        return 2 * x

    def square(x: int, token: CancelToken) -> int:
        return x * x

    calls: list[Callable[[CancelToken], Any]] = []
    for x in range(5):
        calls.append(lambda token, x=x: double(x, token))
        calls.append(lambda token, x=x: square(x, token))

    result = await concurrent_map(calls)

    assert [o.value for o in result.outcomes] == [v for x in range(5) for v in (2 * x, x * x)]
    assert {o.status for o in result.outcomes} == {"ok"}
    assert all(o.started for o in result.outcomes)
    assert result.cause is None
    assert result.abandoned == []


async def test_sync_calls_run_in_worker_threads_and_async_calls_in_the_loop() -> None:
    loop_thread = threading.get_ident()

    def sync_call(token: CancelToken) -> int:
        return threading.get_ident()

    async def async_call(token: CancelToken) -> int:
        return threading.get_ident()

    class AsyncCallable:
        async def __call__(self, token: CancelToken) -> int:
            return threading.get_ident()

    result = await concurrent_map([sync_call, async_call, AsyncCallable()])

    sync_outcome, async_outcome, object_outcome = result.outcomes
    assert sync_outcome.value != loop_thread
    assert sync_outcome.thread is not None
    assert async_outcome.value == loop_thread
    assert object_outcome.value == loop_thread
    assert async_outcome.thread is None


async def test_a_callable_that_returns_an_awaitable_is_awaited() -> None:
    async def fetch(token: CancelToken) -> str:
        await anyio.lowlevel.checkpoint()
        return "fetched"

    result = await concurrent_map([lambda token: fetch(token)])

    assert result.outcomes[0].status == "ok"
    assert result.outcomes[0].value == "fetched"


async def test_an_empty_map_returns_at_once() -> None:
    result = await concurrent_map([], grace=10)

    assert result.outcomes == []
    assert result.cause is None


async def test_a_map_runs_once_and_rejects_a_limit_below_one() -> None:
    runner: ConcurrentMap[None] = ConcurrentMap([])
    await runner.run()

    with pytest.raises(RuntimeError, match="runs once"):
        await runner.run()
    with pytest.raises(ValueError, match="limit"):
        ConcurrentMap([], limit=0)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_the_concurrency_limit_is_respected_and_reached(
    anyio_backend: object, kind: str
) -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    def enter() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)

    def leave() -> None:
        nonlocal active
        with lock:
            active -= 1

    async def async_call(token: CancelToken) -> None:
        enter()
        await anyio.sleep(0.01)
        leave()

    def sync_call(token: CancelToken) -> None:
        enter()
        time.sleep(0.01)
        leave()

    call = async_call if kind == "async" else sync_call
    result = await concurrent_map([call] * 12, limit=3)

    assert peak == 3
    assert {o.status for o in result.outcomes} == {"ok"}


async def test_without_a_limit_every_call_runs_at_once() -> None:
    started = Started(8)
    release = anyio.Event()

    async def call(token: CancelToken) -> None:
        started.mark()
        await release.wait()

    async def release_when_all_started() -> None:
        await started.wait()  # would time out if any call waited for another
        release.set()

    async with anyio.create_task_group() as group:
        group.start_soon(release_when_all_started)
        result = await concurrent_map([call] * 8)

    assert {o.status for o in result.outcomes} == {"ok"}


async def test_a_failing_call_is_reported_and_does_not_stop_the_others_by_default() -> None:
    error = ValueError("bad input")

    async def failing(token: CancelToken) -> None:
        raise error

    async def sibling(token: CancelToken) -> str:
        await anyio.sleep(0.01)
        return "finished"

    result = await concurrent_map([failing, sibling, sibling])

    assert [o.status for o in result.outcomes] == ["error", "ok", "ok"]
    assert result.outcomes[0].error is error
    assert [o.value for o in result.outcomes[1:]] == ["finished", "finished"]
    assert result.cause is not None
    assert result.cause.kind == "failure"
    assert result.cause.failures() == [error]
    assert result.cause.interrupts() == []


# -- graceful cancellation -------------------------------------------------------------------


async def test_cancelling_the_map_token_lets_calls_return_partial_results_within_the_grace() -> (
    None
):
    token = CancelToken()
    started = Started(2)

    async def quick(call_token: CancelToken) -> str:
        return "complete"

    async def streamer(call_token: CancelToken) -> list[int]:
        received: list[int] = []
        started.mark()
        with move_on_cancel(call_token):
            while True:
                received.append(len(received))
                await anyio.sleep(0.001)
        return received  # partial output

    def poller(call_token: CancelToken) -> str:
        started.mark()
        while not call_token.cancelled:
            time.sleep(0.001)
        return f"stopped: {call_token.reason}"

    begin = time.monotonic()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_when, started, token, "user stop")
            result = await concurrent_map([quick, streamer, poller], token=token, grace=30)

    assert time.monotonic() - begin < 5  # the grace ends as soon as every call has returned
    quick_o, streamer_o, poller_o = result.outcomes
    assert (quick_o.status, quick_o.value) == ("ok", "complete")
    assert streamer_o.status == "interrupted"
    assert isinstance(streamer_o.value, list)
    assert len(streamer_o.value) >= 1
    assert (poller_o.status, poller_o.value) == ("interrupted", "stopped: user stop")
    assert result.cause is token.cause


async def test_a_call_that_ignores_its_token_is_cancelled_hard_after_the_grace() -> None:
    token = CancelToken()
    started = Started(2)
    finalised: list[str] = []

    async def stubborn(call_token: CancelToken) -> str:
        started.mark()
        try:
            await anyio.sleep_forever()
        finally:
            finalised.append("stubborn")
        return "never"

    async def cooperative(call_token: CancelToken) -> str:
        started.mark()
        await call_token.wait()
        return "partial"

    begin = time.monotonic()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_when, started, token)
            result = await concurrent_map([stubborn, cooperative], token=token, grace=0.1)
        # nothing the map started is still running when it returns
        assert finalised == ["stubborn"]

    elapsed = time.monotonic() - begin
    assert 0.1 <= elapsed < 3
    stubborn_o, cooperative_o = result.outcomes
    assert (stubborn_o.status, stubborn_o.value, stubborn_o.started) == ("cancelled", None, True)
    assert (cooperative_o.status, cooperative_o.value) == ("interrupted", "partial")


async def test_a_thread_that_ignores_its_token_is_abandoned_after_the_grace_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelToken()
    started = Started(1)
    release = threading.Event()
    thread_ended = threading.Event()

    def stuck(call_token: CancelToken) -> str:
        started.mark()
        release.wait(30)  # a blocking call that never looks at its token
        thread_ended.set()
        return "too late"

    begin = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="llm_worker.cancel"), anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(cancel_when, started, token)
                result = await concurrent_map([stuck], token=token, grace=0.1)
        elapsed = time.monotonic() - begin
        assert not thread_ended.is_set()  # returned without waiting for the thread
    finally:
        release.set()
        await anyio.to_thread.run_sync(thread_ended.wait, 5)

    assert 0.1 <= elapsed < 3
    [outcome] = result.outcomes
    assert outcome.status == "abandoned"
    assert outcome.value is None
    assert outcome.thread is not None
    assert result.abandoned == [outcome]
    assert f"abandoned thread {outcome.thread}" in caplog.text
    assert result.cause is token.cause


async def test_calls_still_waiting_for_a_slot_never_start_once_cancelled() -> None:
    token = CancelToken()
    started = Started(1)
    ran: list[int] = []

    async def call(call_token: CancelToken) -> str:
        ran.append(1)
        started.mark()
        await call_token.wait()
        return "partial"

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_when, started, token)
            result = await concurrent_map([call] * 5, token=token, limit=1, grace=30)

    assert ran == [1]
    statuses = sorted((o.status, o.started) for o in result.outcomes)
    assert statuses == [("cancelled", False)] * 4 + [("interrupted", True)]


async def test_a_map_given_a_cancelled_token_starts_nothing() -> None:
    token = CancelToken()
    token.cancel("too late")
    ran: list[int] = []

    async def call(call_token: CancelToken) -> None:
        ran.append(1)

    with anyio.fail_after(5):
        result = await concurrent_map([call, call], token=token, grace=30)

    assert ran == []
    assert [(o.status, o.started) for o in result.outcomes] == [("cancelled", False)] * 2
    assert result.cause is token.cause


async def test_a_sync_call_that_raises_interrupted_is_reported_cancelled() -> None:
    token = CancelToken()
    started = Started(1)

    def polite(call_token: CancelToken) -> None:
        started.mark()
        while True:
            call_token.raise_if_cancelled()
            time.sleep(0.001)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_when, started, token)
            result = await concurrent_map([polite], token=token)

    assert result.outcomes[0].status == "cancelled"
    assert result.outcomes[0].error is None


async def test_each_call_gets_a_child_token_and_the_map_releases_every_registration() -> None:
    token = CancelToken()
    seen: list[CancelToken] = []

    async def call(call_token: CancelToken) -> None:
        seen.append(call_token)

    runner: ConcurrentMap[None] = ConcurrentMap([call, call], token=token)
    await runner.run()

    assert {id(o.token) for o in runner.outcomes} == {id(t) for t in seen}
    assert seen[0] is not seen[1]
    assert seen[0] is not token
    assert registrations(token) == 0
    assert registrations(runner.group_token) == 0
    token.cancel()
    assert not any(t.cancelled for t in seen)  # released: a later cancel reaches nothing


# -- cancel on failure -----------------------------------------------------------------------


async def test_cancel_on_failure_stops_the_siblings_and_reports_a_parallel_cause() -> None:
    error = ConnectionError("upstream down")
    started = Started(2)

    async def failing(token: CancelToken) -> None:
        await started.wait()
        raise error

    async def sibling(token: CancelToken) -> str:
        started.mark()
        with move_on_cancel(token):
            await anyio.sleep(30)
        return "partial" if token.cancelled else "finished"

    async def stubborn(token: CancelToken) -> None:
        started.mark()
        await anyio.sleep_forever()

    begin = time.monotonic()
    with anyio.fail_after(10):
        result = await concurrent_map(
            [failing, sibling, stubborn], cancel_on_failure=True, grace=0.1
        )

    assert time.monotonic() - begin < 5
    assert [o.status for o in result.outcomes] == ["error", "interrupted", "cancelled"]
    assert result.outcomes[1].value == "partial"
    cause = result.cause
    assert cause is not None
    assert cause.tag == "parallel"
    assert cause.kind == "failure"
    assert cause.failures() == [error]
    assert [(i.kind, i.origin) for i in cause.interrupts()] == [
        ("parent", "call 1"),
        ("parent", "call 2"),
    ]
    assert "upstream down" in str(cause)
    assert result.group_token.cause is not None
    assert result.group_token.cause.error is error


# -- outer cancellation ----------------------------------------------------------------------


def _outer_cancel_calls(
    started: Started, finalised: list[str]
) -> list[Callable[[CancelToken], Any]]:
    """A call that completes, one that stops on its token, one that ignores it."""

    async def quick(token: CancelToken) -> str:
        finalised.append("quick")
        started.mark()
        return "complete"

    async def cooperative(token: CancelToken) -> str:
        started.mark()
        try:
            await token.wait()
            return "partial"
        finally:
            finalised.append("cooperative")

    async def stubborn(token: CancelToken) -> str:
        started.mark()
        try:
            await anyio.sleep_forever()
        finally:
            finalised.append("stubborn")
        return "never"

    return [quick, cooperative, stubborn]


def _assert_outer_cancel_outcomes(runner: ConcurrentMap[Any], finalised: list[str]) -> None:
    assert sorted(finalised) == ["cooperative", "quick", "stubborn"]  # nothing left running
    assert [(o.status, o.value) for o in runner.outcomes] == [
        ("ok", "complete"),
        ("interrupted", "partial"),
        ("cancelled", None),
    ]
    assert runner.group_token.cause is not None
    assert runner.group_token.cause.kind == "external"
    assert runner.cause is not None
    assert runner.cause.kind == "external"


async def test_an_outer_cancellation_stops_the_calls_keeps_completed_outcomes_and_re_raises() -> (
    None
):
    started = Started(3)
    finalised: list[str] = []
    runner: ConcurrentMap[Any] = ConcurrentMap(_outer_cancel_calls(started, finalised), grace=0.1)

    async def cancel_outer(scope: anyio.CancelScope) -> None:
        await started.wait()
        scope.cancel()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as outer:
                group.start_soon(cancel_outer, outer)
                await runner.run()
                pytest.fail("the outer cancellation was swallowed")

    assert outer.cancelled_caught
    _assert_outer_cancel_outcomes(runner, finalised)


async def test_a_token_cancelled_in_a_thread_is_the_cause_even_if_its_scope_wins_the_race() -> None:
    # A token cancelled in another thread runs its callbacks there, one by one. The loop can
    # deliver the first (a scope bound to the token, around the map) before the last (the map's
    # own link to the token) has run: the calls must still learn the token's reason.
    token = CancelToken()
    running = anyio.Event()
    outer = anyio.CancelScope()

    def scope_first() -> None:
        anyio.from_thread.run_sync(outer.cancel)
        time.sleep(0.1)  # the loop stops the map's task before the map's own link fires

    async def reason_when_stopped(call_token: CancelToken) -> str | None:
        running.set()
        await call_token.wait()
        return call_token.reason

    token.on_cancel(scope_first)  # registered before the map links to the token
    runner: ConcurrentMap[Any] = ConcurrentMap([reason_when_stopped], token=token, grace=5)

    async def press() -> None:
        await running.wait()
        await anyio.to_thread.run_sync(token.cancel, "stop button")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(press)
            with outer:
                await runner.run()
    assert outer.cancelled_caught
    [outcome] = runner.outcomes
    assert outcome.value == "stop button"


async def test_a_native_task_cancel_of_the_map_keeps_completed_outcomes_and_re_raises(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("Task.cancel() is asyncio's own cancellation")
    started = Started(3)
    finalised: list[str] = []
    runner: ConcurrentMap[Any] = ConcurrentMap(_outer_cancel_calls(started, finalised), grace=0.1)
    after: list[str] = []

    async def awaiting() -> None:
        await runner.run()
        after.append("run returned")  # never

    task = asyncio.get_running_loop().create_task(awaiting())
    with anyio.fail_after(5):
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert task.cancelled()
    assert after == []
    _assert_outer_cancel_outcomes(runner, finalised)


async def test_an_outer_cancellation_during_the_grace_still_waits_for_partial_results() -> None:
    token = CancelToken()
    started = Started(1)
    grace_started = anyio.Event()

    async def slow_to_stop(call_token: CancelToken) -> str:
        started.mark()
        await call_token.wait()
        grace_started.set()
        await anyio.sleep(0.05)  # needs a moment to wrap up
        return "partial"

    runner: ConcurrentMap[Any] = ConcurrentMap([slow_to_stop], token=token, grace=5)

    async def cancel_both(scope: anyio.CancelScope) -> None:
        await cancel_when(started, token)
        await grace_started.wait()
        scope.cancel()  # the caller gives up too, during the grace

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as outer:
                group.start_soon(cancel_both, outer)
                await runner.run()
                pytest.fail("the outer cancellation was swallowed")

    assert outer.cancelled_caught
    assert [(o.status, o.value) for o in runner.outcomes] == [("interrupted", "partial")]


async def test_a_call_whose_own_token_is_cancelled_gets_its_grace_then_is_abandoned_alone() -> None:
    release = threading.Event()

    def ignores_its_deadline(token: CancelToken) -> str:
        release.wait(10)
        return "too late"

    async def sibling(token: CancelToken) -> str:
        await anyio.sleep(0.3)
        return "sibling done"

    def with_deadline(token: CancelToken) -> str:
        token.cancel_after(0.05, reason="call deadline")
        return ignores_its_deadline(token)

    runner: ConcurrentMap[str] = ConcurrentMap([with_deadline, sibling], grace=0.05)
    try:
        with anyio.fail_after(5):
            outcomes = await runner.run()
    finally:
        release.set()
    assert [o.status for o in outcomes] == ["abandoned", "ok"]
    assert outcomes[1].value == "sibling done"
    assert not runner.group_token.cancelled


async def test_calls_that_cannot_see_their_token_get_no_grace() -> None:
    """A call in ``no_grace`` has nothing to return early with: on a stop it is cancelled hard
    (a thread abandoned) at once, while the others still get their grace to return partial
    output. Before, every call waited out the whole grace."""
    release = threading.Event()

    async def deaf(token: CancelToken) -> str:
        await anyio.sleep(60)  # never looks at its token
        return "never"

    def deaf_thread(token: CancelToken) -> str:
        release.wait(60)
        return "late"

    async def cooperative(token: CancelToken) -> str:
        await token.wait()
        await anyio.sleep(0.05)  # uses some of its grace
        return "partial"

    token = CancelToken()
    stopped = ConcurrentMap(
        [deaf, deaf_thread, cooperative], token=token, grace=20, no_grace=[0, 1]
    )
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(stopped.run)
        await anyio.sleep(0.1)
        token.cancel("stop")
    took = time.monotonic() - started
    release.set()
    assert [o.status for o in stopped.outcomes] == ["cancelled", "abandoned", "interrupted"]
    assert stopped.outcomes[2].value == "partial"
    assert took < 10  # the bug: waiting out the 20 s grace for calls that could not use it


async def test_a_call_without_grace_stops_at_once_when_its_own_token_is_cancelled() -> None:
    async def deaf(token: CancelToken) -> str:
        token.cancel_after(0.05, "its own timeout")
        await anyio.sleep(60)
        return "never"

    alone = ConcurrentMap([deaf], grace=20, no_grace=[0])
    with anyio.fail_after(10):  # the bug: the 20 s grace
        await alone.run()
    assert alone.outcomes[0].status == "cancelled"


async def test_an_outer_cancel_while_a_slot_is_handed_over_never_starts_the_call() -> None:
    """The limiter hands a slot over in a shielded checkpoint; an outer cancellation that lands
    while it yields must still keep the call from starting (trio orders a batch at random, so
    each cancel point is tried many times)."""

    class Watch:
        cancelled = False
        late = 0

        async def call(self, token: CancelToken) -> None:
            if self.cancelled:
                self.late += 1
            await anyio.lowlevel.checkpoint()

    for ticks in range(6):
        for _ in range(40):
            watch = Watch()
            stopped = ConcurrentMap([watch.call] * 3, limit=3, grace=1)
            with anyio.CancelScope() as outer:
                async with anyio.create_task_group() as group:
                    group.start_soon(stopped.run)
                    for _ in range(ticks):
                        await anyio.lowlevel.checkpoint()
                    outer.cancel()
                    watch.cancelled = True
            assert watch.late == 0, f"{watch.late} call(s) started after the cancel (tick {ticks})"
