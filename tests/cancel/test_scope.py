"""Token scopes interrupt a block and say why; outer cancellation always wins; shielded clean-up."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from llm_worker.cancel import (
    CancelToken,
    Interrupted,
    fail_on_cancel,
    move_on_cancel,
    shielded,
)

from ._helpers import registrations

# -- token scopes ----------------------------------------------------------------------------


async def test_a_block_runs_to_the_end_when_the_token_is_not_cancelled() -> None:
    token = CancelToken()

    with move_on_cancel(token) as scope:
        await checkpoint()
        finished = True

    assert finished
    assert not scope.interrupted
    assert scope.cause is None
    assert registrations(token) == 0


async def test_cancelling_the_token_interrupts_the_block_blocked_in_an_await() -> None:
    token = CancelToken()
    steps: list[str] = []

    async def block() -> None:
        with move_on_cancel(token) as scope:
            steps.append("started")
            await anyio.sleep_forever()
            steps.append("after the await")  # never
        steps.append("after the block")
        assert scope.interrupted
        assert scope.cause is token.cause

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(block)
            await wait_all_tasks_blocked()
            token.cancel("user stop")

    assert steps == ["started", "after the block"]
    assert token.reason == "user stop"
    assert registrations(token) == 0


async def test_a_token_cancelled_before_the_scope_is_entered_stops_the_block_at_its_first_await() -> (  # noqa: E501
    None
):
    token = CancelToken()
    token.cancel("too early")
    steps: list[str] = []

    with anyio.fail_after(5), move_on_cancel(token) as scope:
        steps.append("before the first await")
        await checkpoint()
        steps.append("after the first await")  # never

    assert steps == ["before the first await"]
    assert scope.interrupted
    assert scope.cause is not None
    assert scope.cause.reason == "too early"


async def test_a_block_that_cancels_its_own_token_is_interrupted_at_its_next_blocking_await() -> (
    None
):
    token = CancelToken()

    with anyio.fail_after(5), move_on_cancel(token) as scope:
        token.cancel("changed my mind")
        await anyio.sleep_forever()

    assert scope.interrupted


async def test_cancel_from_another_thread_interrupts_a_block_blocked_in_an_await() -> None:
    token = CancelToken()
    go = threading.Event()

    def gui_thread() -> None:
        go.wait()
        token.cancel("Stop button")

    thread = threading.Thread(target=gui_thread, name="gui")
    thread.start()
    started = time.monotonic()
    try:
        with anyio.fail_after(5), move_on_cancel(token) as scope:
            go.set()
            await anyio.sleep_forever()  # only the other thread can end this
    finally:
        go.set()
        await anyio.to_thread.run_sync(thread.join)

    assert time.monotonic() - started < 2
    assert scope.interrupted
    assert scope.cause is not None
    assert scope.cause.origin == "thread gui"


async def test_fail_on_cancel_raises_interrupted_with_the_cause() -> None:
    token = CancelToken()
    steps: list[str] = []

    async def stop_when_blocked() -> None:
        await wait_all_tasks_blocked()
        token.cancel("stop", kind="superseded")

    async def block() -> None:
        with fail_on_cancel(token):
            await anyio.sleep_forever()
        steps.append("after the block")  # never

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(stop_when_blocked)
            with pytest.raises(Interrupted) as info:
                await block()

    assert info.value.cause is token.cause
    assert info.value.cause.kind == "superseded"
    assert steps == []


async def test_fail_on_cancel_does_not_replace_the_block_s_own_exception() -> None:
    token = CancelToken()

    def block() -> None:
        with fail_on_cancel(token):
            token.cancel()
            raise KeyError("the block's own error")

    with pytest.raises(KeyError):
        block()


async def test_a_swallowed_cancellation_still_counts_as_interrupted() -> None:
    token = CancelToken()
    token.cancel("stop")

    with move_on_cancel(token) as scope:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass  # user code that swallows the cancellation and returns normally

    assert scope.interrupted
    assert scope.cause is token.cause


async def test_a_swallowed_cancellation_does_not_let_fail_on_cancel_succeed() -> None:
    token = CancelToken()
    token.cancel("stop")
    steps: list[str] = []

    async def block() -> None:
        with fail_on_cancel(token):
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                steps.append("swallowed")
        steps.append("after the block")  # never

    with pytest.raises(Interrupted):
        await block()

    assert steps == ["swallowed"]


async def test_a_swallowed_cancellation_is_delivered_again_at_the_next_await() -> None:
    token = CancelToken()
    token.cancel()
    steps: list[str] = []

    with anyio.fail_after(5), move_on_cancel(token) as scope:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            steps.append("swallowed")
        await anyio.sleep_forever()  # level-triggered: cancelled again
        steps.append("never")

    assert steps == ["swallowed"]
    assert scope.interrupted


async def test_a_token_cancelled_after_the_last_await_still_marks_the_block_interrupted() -> None:
    token = CancelToken()

    async def block() -> None:
        with fail_on_cancel(token):
            await checkpoint()
            token.cancel("at the very end")

    with pytest.raises(Interrupted):
        await block()


async def test_a_token_cancelled_after_the_block_has_no_effect_on_later_code() -> None:
    token = CancelToken()

    with move_on_cancel(token) as scope:
        await checkpoint()
    token.cancel()
    await anyio.sleep(0.01)  # not cancelled
    await checkpoint()

    assert not scope.interrupted
    assert registrations(token) == 0


async def test_nested_token_scopes_each_catch_only_their_own_token() -> None:
    outer_token, inner_token = CancelToken("outer"), CancelToken("inner")
    steps: list[str] = []

    with anyio.fail_after(5), move_on_cancel(outer_token) as outer:
        with move_on_cancel(inner_token) as inner:
            inner_token.cancel()
            await anyio.sleep_forever()
        steps.append("after inner")
        with move_on_cancel(CancelToken("second inner")) as second_inner:
            outer_token.cancel()
            await anyio.sleep_forever()
        steps.append("after second inner")  # never: the outer token's cancellation propagates

    assert steps == ["after inner"]
    assert inner.interrupted
    assert not second_inner.interrupted
    assert second_inner.cause is None
    assert outer.interrupted


async def test_a_block_running_tasks_is_interrupted_with_all_its_tasks() -> None:
    token = CancelToken()
    stopped: list[int] = []

    async def worker(i: int) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append(i)

    with anyio.fail_after(5), move_on_cancel(token) as scope:
        async with anyio.create_task_group() as group:
            for i in range(3):
                group.start_soon(worker, i)
            await wait_all_tasks_blocked()
            token.cancel()

    assert scope.interrupted
    assert sorted(stopped) == [0, 1, 2]


# -- outer cancellation beats the token's ----------------------------------------------------


# Parametrised async tests take ``anyio_backend`` so that anyio's plugin keeps their parameters.


@pytest.mark.parametrize("order", ["token first", "outer first"])
async def test_an_enclosing_cancel_scope_propagates_through_a_cancelled_token_scope(
    anyio_backend: object, order: str
) -> None:
    token = CancelToken()
    steps: list[str] = []

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        with move_on_cancel(token) as scope:
            if order == "token first":
                token.cancel()
                outer.cancel()
            else:
                outer.cancel()
                token.cancel()
            await anyio.sleep_forever()
        steps.append("after the token scope")  # never: the outer cancellation goes on

    assert outer.cancelled_caught
    assert steps == []
    assert scope.interrupted  # the token was cancelled too, and the scope says so


async def test_an_enclosing_cancel_scope_propagates_while_the_token_cancel_is_in_flight() -> None:
    token = CancelToken()

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        with move_on_cancel(token):
            token.cancel()
            try:
                await anyio.sleep_forever()  # the token's cancellation arrives here
            finally:
                outer.cancel()  # and the enclosing scope is cancelled during its unwinding
                await checkpoint()
        pytest.fail("the enclosing cancellation was swallowed")

    assert outer.cancelled_caught


async def test_an_enclosing_cancel_scope_beats_fail_on_cancel() -> None:
    token = CancelToken()

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        with fail_on_cancel(token):
            token.cancel()
            outer.cancel()
            await anyio.sleep_forever()
        pytest.fail("the enclosing cancellation was swallowed")

    assert outer.cancelled_caught  # propagated as a cancellation, not turned into Interrupted


async def test_an_enclosing_cancel_scope_alone_propagates_and_is_not_reported_as_the_token_s() -> (
    None
):
    token = CancelToken()

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        with move_on_cancel(token) as scope:
            outer.cancel()
            await anyio.sleep_forever()
        pytest.fail("the enclosing cancellation was swallowed")

    assert outer.cancelled_caught
    assert not scope.interrupted
    assert scope.cause is None
    assert not token.cancelled


@pytest.mark.parametrize("order", ["token first", "task first", "task only", "token from thread"])
async def test_a_native_task_cancel_propagates_through_a_token_scope(
    anyio_backend_name: str, order: str
) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("Task.cancel() is asyncio's own cancellation")
    token = CancelToken()
    steps: list[str] = []

    async def awaiting() -> None:
        with fail_on_cancel(token):
            steps.append("in the block")
            await anyio.sleep_forever()
        steps.append("after the block")  # never

    task = asyncio.get_running_loop().create_task(awaiting())
    with anyio.fail_after(5):
        await wait_all_tasks_blocked()
        if order == "token first":
            token.cancel()
            task.cancel()
        elif order == "task first":
            task.cancel()
            token.cancel()
        elif order == "token from thread":
            thread = threading.Thread(target=token.cancel)
            thread.start()
            thread.join()  # the token's wake-up is queued on the loop, not yet delivered
            task.cancel()
        else:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert task.cancelled()
    assert steps == ["in the block"]


async def test_a_native_task_cancel_during_a_token_interruption_propagates(
    anyio_backend_name: str,
) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("Task.cancel() is asyncio's own cancellation")
    token = CancelToken()
    steps: list[str] = []

    async def awaiting() -> None:
        task = asyncio.current_task()
        assert task is not None
        with move_on_cancel(token):
            try:
                await anyio.sleep_forever()
            finally:
                task.cancel()  # a native cancel lands while the token's cancellation unwinds
        steps.append("after the block")  # never: the native cancellation must go on
        await anyio.sleep_forever()

    task = asyncio.get_running_loop().create_task(awaiting())
    with anyio.fail_after(5):
        await wait_all_tasks_blocked()
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert steps == []


# -- shielded clean-up -----------------------------------------------------------------------


async def test_shielded_clean_up_survives_outer_cancellations_and_then_lets_them_through() -> None:
    steps: list[str] = []

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        with anyio.CancelScope() as inner:
            inner.cancel()
            with shielded(5, "closing the stream") as region:
                await anyio.sleep(0.01)
                steps.append("first step")
                outer.cancel()  # a second cancellation arrives during the clean-up
                await checkpoint()
                await anyio.sleep(0.01)
                steps.append("second step")
            steps.append("after the region")
            await checkpoint_if_cancelled()
            steps.append("never")

    assert steps == ["first step", "second step", "after the region"]
    assert not region.overran
    assert outer.cancelled_caught


async def test_shielded_clean_up_survives_a_token_cancellation() -> None:
    token = CancelToken()
    steps: list[str] = []

    with anyio.fail_after(5), move_on_cancel(token) as scope:
        token.cancel()
        with shielded(5):
            await anyio.sleep(0.01)
            steps.append("cleaned up")
        await checkpoint()
        steps.append("never")

    assert steps == ["cleaned up"]
    assert scope.interrupted


async def test_shielded_clean_up_survives_a_second_cancel_of_its_task(
    anyio_backend_name: str,
) -> None:
    steps: list[str] = []
    in_clean_up = anyio.Event()

    async def task() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with shielded(5):
                in_clean_up.set()
                await anyio.sleep(0.05)
                steps.append("cleaned up")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(task)
            await wait_all_tasks_blocked()
            group.cancel_scope.cancel()
            await in_clean_up.wait()
            group.cancel_scope.cancel()  # again, while the clean-up runs

    assert steps == ["cleaned up"]


async def test_shielded_clean_up_stops_at_its_bound_and_reports_the_overrun(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps: list[str] = []
    started = time.monotonic()

    with (
        caplog.at_level(logging.WARNING, logger="llm_worker.cancel"),
        anyio.fail_after(5),
        anyio.CancelScope() as outer,
    ):
        outer.cancel()
        with shielded(0.05, "closing a stuck stream") as region:
            await anyio.sleep_forever()
            steps.append("never")
        steps.append("after the region")
        await checkpoint()

    assert time.monotonic() - started < 2
    assert region.overran
    assert steps == ["after the region"]
    assert outer.cancelled_caught  # the outer cancellation was still delivered after the region
    assert "closing a stuck stream overran its 0.05s bound" in caplog.text


async def test_a_shielded_region_that_swallows_its_own_deadline_still_reports_the_overrun() -> None:
    with anyio.fail_after(5), shielded(0.02, "stubborn clean-up") as region:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            pass  # swallowed: the region still ran over its bound

    assert region.overran


async def test_a_quick_shielded_region_does_not_report_an_overrun(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="llm_worker.cancel"), shielded(5) as region:
        await anyio.sleep(0.001)

    assert not region.overran
    assert caplog.text == ""


# -- helpers ---------------------------------------------------------------------------------


async def test_cancelled_exc_class_is_the_running_framework_s(anyio_backend_name: str) -> None:
    if anyio_backend_name == "trio":
        import trio

        assert anyio.get_cancelled_exc_class() is trio.Cancelled
    else:
        assert anyio.get_cancelled_exc_class() is asyncio.CancelledError


async def test_checkpoint_raises_in_a_cancelled_scope() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await checkpoint()
        pytest.fail("checkpoint did not raise")

    assert scope.cancelled_caught


async def test_checkpoint_if_cancelled_continues_when_not_cancelled() -> None:
    await checkpoint_if_cancelled()
