"""`CancelToken`: thread-safe, level-triggered, with callbacks, children, links and deadlines."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
import weakref
from types import FrameType
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio import wait_all_tasks_blocked

from llm_worker.cancel import CancelToken, Cause, Interrupted

from ._helpers import finishes_in_thread, inject_at_each_opcode, registrations

# -- state ------------------------------------------------------------------------------------


def test_a_new_token_is_not_cancelled() -> None:
    token = CancelToken("job")

    assert not token.cancelled
    assert token.cause is None
    assert token.reason is None
    token.raise_if_cancelled()  # does not raise
    assert "job" in repr(token)
    assert "active" in repr(token)


def test_cancel_records_reason_kind_and_origin() -> None:
    token = CancelToken()

    assert token.cancel("user pressed Stop", kind="superseded") is True

    assert token.cancelled
    assert token.reason == "user pressed Stop"
    assert token.cause is not None
    assert token.cause.kind == "superseded"
    assert token.cause.origin == f"thread {threading.current_thread().name}"
    assert "user pressed Stop" in repr(token)


async def test_cancel_from_a_task_names_the_task_in_the_origin() -> None:
    token = CancelToken()

    async def stop_button() -> None:
        token.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(stop_button, name="stop-button")

    assert token.cause is not None
    assert token.cause.origin is not None
    assert "task stop-button" in token.cause.origin


def test_cancel_with_an_explicit_cause_keeps_that_cause() -> None:
    token = CancelToken()
    cause = Cause.failure(RuntimeError("tool exploded"))

    token.cancel(cause=cause)

    assert token.cause is cause
    assert token.cause.kind == "failure"


def test_cancel_with_an_unknown_kind_raises_and_leaves_the_token_active() -> None:
    token = CancelToken()

    with pytest.raises(ValueError, match="unknown interrupt kind"):
        token.cancel(kind="stopped")  # type: ignore[arg-type]

    assert not token.cancelled


def test_once_cancelled_a_token_stays_cancelled_with_its_first_cause() -> None:
    token = CancelToken()
    token.cancel("first")

    assert token.cancel("second", kind="deadline") is False

    assert token.cancelled
    assert token.reason == "first"
    assert token.cause is not None
    assert token.cause.kind == "explicit"


def test_raise_if_cancelled_raises_interrupted_with_the_cause() -> None:
    token = CancelToken()
    token.cancel("enough")

    with pytest.raises(Interrupted) as info:
        token.raise_if_cancelled()

    assert info.value.cause is token.cause
    assert "enough" in str(info.value)


def test_concurrent_cancels_from_many_threads_cancel_exactly_once() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("callback"))
    barrier = threading.Barrier(16)
    results: list[bool] = []

    def racer(i: int) -> None:
        barrier.wait()
        results.append(token.cancel(f"racer {i}"))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] * 15 + [True]
    assert calls == ["callback"]
    assert token.reason is not None
    assert token.reason.startswith("racer ")


# -- callbacks -------------------------------------------------------------------------------


def test_callbacks_run_once_in_registration_order_and_see_the_cause() -> None:
    token = CancelToken()
    seen: list[tuple[int, str | None]] = []
    for i in range(3):
        token.on_cancel(lambda i=i: seen.append((i, token.reason)))

    token.cancel("stop")
    token.cancel("again")

    assert seen == [(0, "stop"), (1, "stop"), (2, "stop")]


def test_on_cancel_of_a_cancelled_token_runs_the_callback_at_once() -> None:
    token = CancelToken()
    token.cancel()
    calls: list[int] = []

    unregister = token.on_cancel(lambda: calls.append(1))

    assert calls == [1]
    unregister()  # harmless
    assert calls == [1]


def test_an_unregistered_callback_never_runs() -> None:
    token = CancelToken()
    calls: list[str] = []
    unregister = token.on_cancel(lambda: calls.append("unregistered"))
    token.on_cancel(lambda: calls.append("kept"))

    unregister()
    unregister()  # twice is harmless
    token.cancel()

    assert calls == ["kept"]
    assert registrations(token) == 0


def test_unregistering_after_the_callback_ran_is_harmless() -> None:
    token = CancelToken()
    calls: list[int] = []
    unregister = token.on_cancel(lambda: calls.append(1))
    token.cancel()

    unregister()

    assert calls == [1]


def test_a_raising_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelToken()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("callback bug")

    token.on_cancel(lambda: calls.append("before"))
    token.on_cancel(broken)
    token.on_cancel(lambda: calls.append("after"))

    with caplog.at_level(logging.ERROR, logger="llm_worker.cancel"):
        assert token.cancel() is True

    assert calls == ["before", "after"]
    assert token.cancelled
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_a_raising_callback_registered_late_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelToken()
    token.cancel()

    def broken() -> None:
        raise RuntimeError("late callback bug")

    with caplog.at_level(logging.ERROR, logger="llm_worker.cancel"):
        token.on_cancel(broken)

    assert "late callback bug" in caplog.text


def test_a_callback_may_register_on_and_cancel_tokens_including_its_own() -> None:
    token, other = CancelToken(), CancelToken()
    calls: list[str] = []

    def reentrant() -> None:
        token.on_cancel(lambda: calls.append("registered from a callback"))
        token.cancel("again")
        other.cancel("from a callback")

    token.on_cancel(reentrant)

    assert finishes_in_thread(token.cancel)
    assert calls == ["registered from a callback"]
    assert other.reason == "from a callback"


# -- waiting ---------------------------------------------------------------------------------


async def test_wait_returns_the_cause_at_once_when_already_cancelled() -> None:
    token = CancelToken()
    token.cancel("done")

    with anyio.fail_after(1):
        cause = await token.wait()

    assert cause is token.cause


async def test_wait_wakes_every_waiter_when_a_task_cancels() -> None:
    token = CancelToken()
    causes: list[Cause] = []

    async def waiter() -> None:
        causes.append(await token.wait())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(waiter)
            await wait_all_tasks_blocked()
            token.cancel("go")

    assert len(causes) == 5
    assert all(cause is token.cause for cause in causes)
    assert registrations(token) == 0


async def test_cancel_from_another_thread_wakes_the_loop_blocked_in_an_await() -> None:
    token = CancelToken()
    go = threading.Event()

    def gui_thread() -> None:
        go.wait()
        token.cancel("Stop button")

    thread = threading.Thread(target=gui_thread, name="gui")
    thread.start()
    try:
        started = time.monotonic()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(token.wait)
                await wait_all_tasks_blocked()
                assert registrations(token) == 1  # the loop is really waiting on the token
                go.set()
                cause = await token.wait()  # nothing but the token can wake the loop now
        assert time.monotonic() - started < 2
    finally:
        go.set()
        await anyio.to_thread.run_sync(thread.join)

    assert cause.reason == "Stop button"
    assert cause.origin == "thread gui"


async def test_cancel_from_a_worker_thread_reaches_the_loop() -> None:
    token = CancelToken()

    async with anyio.create_task_group() as group:
        group.start_soon(token.wait)
        await wait_all_tasks_blocked()
        await anyio.to_thread.run_sync(token.cancel, "from a thread")

    assert token.reason == "from a thread"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cancel_from_a_signal_handler_wakes_the_loop() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")
    token = CancelToken()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        token.cancel("SIGUSR1", kind="keyboard_interrupt")

    def send_signal() -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(token.wait)
                await wait_all_tasks_blocked()
                threading.Thread(target=send_signal).start()
                cause = await token.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert cause.kind == "keyboard_interrupt"


async def test_a_cancelled_wait_removes_its_registration_and_leaves_the_token_alone() -> None:
    token = CancelToken()

    async with anyio.create_task_group() as group:
        group.start_soon(token.wait)
        await wait_all_tasks_blocked()
        assert registrations(token) == 1
        group.cancel_scope.cancel()

    assert registrations(token) == 0
    assert not token.cancelled


# -- children and links ----------------------------------------------------------------------


def test_cancelling_the_parent_cancels_the_child_with_kind_parent() -> None:
    parent = CancelToken("run")
    child = parent.child("tool")

    parent.cancel("user stop")

    assert child.cancelled
    assert child.cause is not None
    assert child.cause.kind == "parent"
    assert child.reason == "user stop"
    assert child.cause.origin == "parent run"


def test_cancelling_the_child_never_cancels_the_parent() -> None:
    parent = CancelToken()
    child = parent.child()
    sibling = parent.child()

    child.cancel("only me")

    assert child.cancelled
    assert not parent.cancelled
    assert not sibling.cancelled


def test_a_child_of_a_cancelled_parent_is_born_cancelled() -> None:
    parent = CancelToken()
    parent.cancel("too late")

    child = parent.child()

    assert child.cancelled
    assert child.reason == "too late"
    assert child.cause is not None
    assert child.cause.kind == "parent"


def test_cancellation_cascades_to_grandchildren() -> None:
    root = CancelToken()
    grandchild = root.child().child()

    root.cancel("stop all")

    assert grandchild.cancelled
    assert grandchild.reason == "stop all"


def test_a_cancelled_child_releases_its_registration_on_the_parent() -> None:
    parent = CancelToken()
    child = parent.child()
    assert registrations(parent) == 1

    child.cancel()

    assert registrations(parent) == 0


def test_a_detached_child_releases_its_registration_and_stops_following() -> None:
    parent = CancelToken()
    child = parent.child()

    child.detach()
    child.detach()  # idempotent
    parent.cancel()

    assert registrations(parent) == 0
    assert not child.cancelled


def test_a_garbage_collected_child_releases_its_registration_on_the_parent() -> None:
    parent = CancelToken()
    child = parent.child()
    child_ref = weakref.ref(child)
    assert registrations(parent) == 1

    del child
    gc.collect()

    assert child_ref() is None  # the parent does not keep its child alive
    assert registrations(parent) == 0


def test_many_dropped_children_leave_no_registration_on_the_parent() -> None:
    parent = CancelToken()

    for _ in range(1000):
        parent.child()

    assert registrations(parent) == 0


def test_unregistering_a_callback_that_holds_the_last_reference_to_a_child_does_not_deadlock() -> (
    None
):
    parent = CancelToken()

    def register() -> Any:
        child = parent.child()
        return parent.on_cancel(lambda: child.cancel())  # the lambda holds the only reference

    unregister = register()

    assert finishes_in_thread(unregister), "deadlock: child released under the parent's lock"
    assert registrations(parent) == 0


def test_children_collected_by_the_garbage_collector_at_any_moment_do_not_deadlock() -> None:
    parent = CancelToken()

    class Holder:
        pass

    def churn() -> None:
        threshold = gc.get_threshold()
        gc.set_threshold(1, 1, 1)  # collect at (almost) every allocation, even under a lock
        try:
            for i in range(2000):
                holder = Holder()
                holder.child = parent.child()  # type: ignore[attr-defined]
                holder.cycle = holder  # type: ignore[attr-defined]  # only gc can free it
                del holder
                _padding = [[] for _ in range(i % 3)]  # vary where collections happen
                parent.on_cancel(lambda: None)()
                if i % 100 == 0:
                    parent.child().cancel()
        finally:
            gc.set_threshold(*threshold)

    assert finishes_in_thread(churn, timeout=20), "deadlock: gc released a child under a lock"
    gc.collect()
    assert registrations(parent) == 0


def test_a_reentrant_cancel_at_any_point_of_on_cancel_runs_the_callback_exactly_once() -> None:
    # A signal handler (or a finalizer) in the registering thread may cancel the token while that
    # thread is half-way through on_cancel: no deadlock, no lost and no doubled callback.
    tokens: list[CancelToken] = []
    calls: list[int] = []

    def action() -> None:
        tokens.append(CancelToken())
        calls.clear()
        tokens[-1].on_cancel(lambda: calls.append(1))

    def check() -> None:
        tokens[-1].cancel()
        assert calls == [1]

    points = inject_at_each_opcode(
        CancelToken.on_cancel, lambda: tokens[-1].cancel("signal"), action, check
    )
    assert points > 5


def test_a_reentrant_registration_at_any_point_of_cancel_runs_exactly_once() -> None:
    tokens: list[CancelToken] = []
    calls: list[str] = []

    def action() -> None:
        tokens.append(CancelToken())
        calls.clear()
        tokens[-1].on_cancel(lambda: calls.append("early"))
        tokens[-1].cancel("stop")

    def check() -> None:
        assert sorted(calls) == ["early", "reentrant"]

    points = inject_at_each_opcode(
        CancelToken.cancel,
        lambda: tokens[-1].on_cancel(lambda: calls.append("reentrant")),
        action,
        check,
    )
    assert points > 5


def test_a_linked_token_is_cancelled_by_any_source_with_that_source_s_cause() -> None:
    user, deadline = CancelToken("user"), CancelToken("deadline")
    linked = CancelToken.linked(user, deadline)

    deadline.cancel("5s", kind="deadline")

    assert linked.cancelled
    assert linked.cause is deadline.cause
    assert not user.cancelled
    assert registrations(user) == 0  # a fired link releases every source
    assert registrations(deadline) == 0


def test_a_linked_token_never_cancels_its_sources() -> None:
    a, b = CancelToken(), CancelToken()
    linked = CancelToken.linked(a, b)

    linked.cancel()

    assert not a.cancelled
    assert not b.cancelled
    assert registrations(a) == registrations(b) == 0


def test_a_link_to_a_cancelled_source_is_born_cancelled() -> None:
    a, b = CancelToken(), CancelToken()
    b.cancel("earlier")

    linked = CancelToken.linked(a, b)

    assert linked.cause is b.cause
    assert registrations(a) == 0


def test_a_garbage_collected_link_releases_every_source() -> None:
    a, b = CancelToken(), CancelToken()
    linked = CancelToken.linked(a, b)
    assert registrations(a) == registrations(b) == 1

    del linked
    gc.collect()

    assert registrations(a) == registrations(b) == 0


# -- deadlines -------------------------------------------------------------------------------


async def test_cancel_after_cancels_with_kind_deadline() -> None:
    token = CancelToken("job")
    token.cancel_after(0.01)

    with anyio.fail_after(5):
        cause = await token.wait()

    assert cause.kind == "deadline"
    assert cause.reason == "deadline of 0.01s passed"
    assert cause.origin == "job deadline"


def test_a_deadline_fires_without_any_event_loop() -> None:
    token = CancelToken()
    fired = threading.Event()
    token.on_cancel(fired.set)

    token.cancel_after(0.01, reason="too slow")

    assert fired.wait(5)
    assert token.reason == "too slow"


async def test_a_deadline_reaches_a_sync_call_polling_in_a_thread() -> None:
    token = CancelToken()

    def poll() -> str:
        while True:
            try:
                token.raise_if_cancelled()
            except Interrupted as exc:
                return exc.cause.kind
            time.sleep(0.001)

    token.cancel_after(0.02)
    with anyio.fail_after(5):
        assert await anyio.to_thread.run_sync(poll) == "deadline"


async def test_a_disarmed_deadline_never_fires() -> None:
    disarmed, later = CancelToken(), CancelToken()
    disarm = disarmed.cancel_after(0.01)
    later.cancel_after(0.05)

    disarm()
    disarm()  # idempotent
    with anyio.fail_after(5):
        await later.wait()  # the deadline thread fires in time order: 0.01 would be first

    assert not disarmed.cancelled


def test_deadlines_fire_in_time_order() -> None:
    order: list[str] = []
    done = threading.Event()
    for name, delay in [("c", 0.06), ("a", 0.02), ("b", 0.04)]:
        token = CancelToken(name)
        token.on_cancel(lambda name=name: order.append(name))
        token.cancel_after(delay)
        if name == "c":
            token.on_cancel(done.set)

    assert done.wait(5)
    assert order == ["a", "b", "c"]


def test_a_deadline_does_not_replace_an_earlier_cause() -> None:
    token = CancelToken()
    fired = threading.Event()
    token.cancel("explicit first")
    other = CancelToken()
    other.on_cancel(fired.set)

    token.cancel_after(0.01)
    other.cancel_after(0.03)

    assert fired.wait(5)
    assert token.reason == "explicit first"
    assert token.cause is not None
    assert token.cause.kind == "explicit"


def test_a_disarmed_deadline_does_not_keep_its_token_alive() -> None:
    token = CancelToken()
    token_ref = weakref.ref(token)
    disarm = token.cancel_after(3600)

    disarm()
    del token, disarm
    gc.collect()

    assert token_ref() is None  # the deadline thread let go of it


def test_a_token_cancelled_otherwise_does_not_stay_in_the_deadline_thread() -> None:
    token = CancelToken()
    token_ref = weakref.ref(token)
    token.cancel_after(3600)

    token.cancel("finished early")
    del token
    gc.collect()

    assert token_ref() is None
