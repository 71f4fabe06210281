"""Token trees of any depth are cancelled completely, whatever the stack and whatever callbacks do.

``cancel()`` used to reach each child through a callback that called the child's ``cancel()``, a
few frames per level: a chain of a few hundred tokens, or a cancel from deep in a stack, hit a
RecursionError that the callback guard logged and swallowed, leaving the rest uncancelled.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from llm_worker.cancel import CancelToken
from llm_worker.cancel._token import _cancel_followers, _run_batches

from ._helpers import inject_at_each_opcode, registrations


def chain(root: CancelToken, length: int) -> list[CancelToken]:
    """``length`` tokens, each a child of the one before, the first a child of ``root``."""
    tokens, parent = [], root
    for _ in range(length):
        parent = parent.child()
        tokens.append(parent)
    return tokens


def call_with_little_stack_left(fn: Callable[[], Any], frames_left: int = 50) -> Any:
    """Call ``fn`` from so deep in a recursion that only ``frames_left`` frames remain."""
    frame, depth = sys._getframe(), 0
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    target = sys.getrecursionlimit() - frames_left

    def descend(level: int) -> Any:
        if level >= target:
            return fn()
        return descend(level + 1)

    return descend(depth + 1)


def test_cancelling_the_root_of_a_chain_of_ten_thousand_children_cancels_the_leaf() -> None:
    root = CancelToken("root")
    tokens = chain(root, 10_000)
    leaf_callback = threading.Event()
    tokens[-1].on_cancel(leaf_callback.set)

    assert root.cancel("stop") is True

    assert all(token.cancelled for token in tokens)
    assert leaf_callback.is_set()
    leaf_cause = tokens[-1].cause
    assert leaf_cause is not None
    assert (leaf_cause.kind, leaf_cause.reason) == ("parent", "stop")
    assert registrations(root) == 0


def test_cancelling_the_root_of_a_chain_of_ten_thousand_links_cancels_the_last() -> None:
    root = CancelToken("root")
    token = root
    for _ in range(10_000):
        token = CancelToken.linked(token, CancelToken())
    root.cancel("stop")

    assert token.cancelled
    assert token.cause is root.cause  # a link keeps its source's cause


def test_cancel_with_almost_no_stack_left_still_cancels_every_descendant() -> None:
    root = CancelToken("root")
    deep = chain(root, 500)
    wide = [root.child() for _ in range(200)] + [deep[250].child() for _ in range(200)]
    ran: list[CancelToken] = []
    for token in [*deep, *wide]:
        token.on_cancel(functools.partial(ran.append, token))

    assert call_with_little_stack_left(lambda: root.cancel("from deep down")) is True

    assert all(token.cancelled for token in [*deep, *wide])
    assert len(ran) == len(deep) + len(wide)  # every callback ran, each once


def test_a_child_made_with_almost_no_stack_left_of_a_cancelled_deep_chain_is_born_cancelled() -> (
    None
):
    root = CancelToken("root")
    leaf = chain(root, 1000)[-1]
    root.cancel()

    child = call_with_little_stack_left(leaf.child)

    assert child.cancelled


def test_callbacks_that_cancel_the_next_token_do_not_nest() -> None:
    # A user-made chain (each callback cancels the next token) no longer runs callback inside
    # callback: the outermost cancel() of the thread runs them one after the other.
    tokens = [CancelToken(f"t{i}") for i in range(5000)]
    for token, following in itertools.pairwise(tokens):
        token.on_cancel(functools.partial(following.cancel, "passed on"))

    tokens[0].cancel()

    assert all(token.cancelled for token in tokens)


def test_a_callback_that_fails_with_recursion_error_leaves_the_tree_fully_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = CancelToken("root")
    ran: list[str] = []

    def overflows() -> None:
        raise RecursionError("maximum recursion depth exceeded")

    root.on_cancel(overflows)  # registered before any child: it runs first
    tokens = chain(root, 300)
    root.on_cancel(lambda: ran.append("root, after"))
    tokens[-1].on_cancel(lambda: ran.append("leaf"))

    with caplog.at_level(logging.ERROR, logger="llm_worker.cancel"):
        assert root.cancel() is True

    assert all(token.cancelled for token in tokens)
    assert ran == ["root, after", "leaf"]
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RecursionError)


def test_the_whole_tree_is_cancelled_before_any_callback_runs() -> None:
    root = CancelToken("root")
    seen: list[bool] = []
    root.on_cancel(lambda: seen.append(leaf.cancelled and grandchild.cancelled))
    leaf = chain(root, 3)[-1]
    grandchild = root.child().child()

    root.cancel()

    assert seen == [True]


def test_callbacks_run_token_by_token_in_registration_order() -> None:
    root = CancelToken("root")
    order: list[str] = []
    root.on_cancel(lambda: order.append("root 1"))
    child = root.child()
    child.on_cancel(lambda: order.append("child 1"))
    root.on_cancel(lambda: order.append("root 2"))
    child.on_cancel(lambda: order.append("child 2"))
    grandchild = child.child()
    grandchild.on_cancel(lambda: order.append("grandchild"))

    root.cancel()

    assert order == ["root 1", "root 2", "child 1", "child 2", "grandchild"]


def test_a_cancel_from_a_callback_cancels_its_tree_at_once_and_its_callbacks_before_the_outer_returns() -> (  # noqa: E501
    None
):
    outer, inner = CancelToken("outer"), CancelToken("inner")
    inner_child = inner.child()
    order: list[str] = []

    def cancel_inner() -> None:
        inner.cancel("from a callback")
        order.append(f"inner child cancelled on return: {inner_child.cancelled}")

    outer.on_cancel(cancel_inner)
    outer.on_cancel(lambda: order.append("outer 2"))
    inner.on_cancel(lambda: order.append("inner"))

    outer.cancel()

    assert order == ["inner child cancelled on return: True", "outer 2", "inner"]


def test_a_callback_raising_keyboard_interrupt_lets_the_others_run_then_propagates() -> None:
    root = CancelToken("root")
    child = root.child()
    ran: list[str] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    root.on_cancel(interrupted)
    root.on_cancel(lambda: ran.append("root"))
    child.on_cancel(lambda: ran.append("child"))

    with pytest.raises(KeyboardInterrupt):
        root.cancel()

    assert ran == ["root", "child"]
    assert child.cancelled
    other = CancelToken()
    other.on_cancel(lambda: ran.append("next cancel in this thread"))
    other.cancel()  # the thread is not left "draining" forever
    assert ran[-1] == "next cancel in this thread"


def test_overlapping_cancels_from_many_threads_run_every_callback_exactly_once() -> None:
    for _ in range(20):
        root = CancelToken("root")
        tokens = chain(root, 50) + [root.child() for _ in range(50)]
        counts = [0] * len(tokens)
        lock = threading.Lock()
        for i, token in enumerate(tokens):

            def count(i: int = i, counts: list[int] = counts, lock: threading.Lock = lock) -> None:
                with lock:
                    counts[i] += 1

            token.on_cancel(count)
        barrier = threading.Barrier(5)

        def cancel(targets: list[CancelToken], barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for target in targets:
                target.cancel()

        threads = [threading.Thread(target=cancel, args=([root],))]
        threads += [threading.Thread(target=cancel, args=(tokens[k::4],)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        assert counts == [1] * len(tokens)


# -- re-entrancy (a signal handler or a finalizer in the cancelling thread) -----------------------

# Every opcode of these runs once per injection point, in loops too: room for all of them.
MAX_POINTS = 1000


@pytest.mark.parametrize(
    "method",
    [CancelToken._register, CancelToken._follow],
    ids=["_register", "_follow"],
)
def test_a_parent_cancelled_reentrantly_at_any_point_of_making_a_child_cancels_it_once(
    method: Any,
) -> None:
    roots: list[CancelToken] = []
    children: list[CancelToken] = []
    calls: list[str] = []

    def action() -> None:
        roots.append(CancelToken("root"))
        children.clear()
        calls.clear()
        child = roots[-1].child()
        children.append(child)
        child.on_cancel(lambda: calls.append("child"))

    def check() -> None:
        roots[-1].cancel()  # a no-op if the injected cancel already did it
        assert children[-1].cancelled
        assert calls == ["child"]
        assert registrations(roots[-1]) == 0

    points = inject_at_each_opcode(
        method, lambda: roots[-1].cancel("signal"), action, check, MAX_POINTS
    )
    assert 5 < points < MAX_POINTS


@pytest.mark.parametrize(
    "method",
    [CancelToken._fire, _cancel_followers, _run_batches],
    ids=["_fire", "_cancel_followers", "_run_batches"],
)
def test_a_reentrant_cancel_at_any_point_of_a_cancel_runs_every_callback_exactly_once(
    method: Any,
) -> None:
    roots: list[CancelToken] = []
    others: list[CancelToken] = []
    kept: list[CancelToken] = []  # children live as long as their test run
    calls: list[str] = []

    def action() -> None:
        roots.append(CancelToken("root"))
        others.append(CancelToken("other"))
        calls.clear()
        kept.clear()
        roots[-1].on_cancel(lambda: calls.append("root"))
        kept.append(roots[-1].child())
        kept[-1].on_cancel(lambda: calls.append("child"))
        others[-1].on_cancel(lambda: calls.append("other"))
        kept.append(others[-1].child())
        kept[-1].on_cancel(lambda: calls.append("other child"))
        roots[-1].cancel("stop")

    def check() -> None:
        others[-1].cancel()  # a no-op if the injected cancel already did it
        assert sorted(calls) == ["child", "other", "other child", "root"]

    points = inject_at_each_opcode(
        method, lambda: others[-1].cancel("signal"), action, check, MAX_POINTS
    )
    assert 5 < points < MAX_POINTS


@pytest.mark.parametrize(
    "method",
    [CancelToken._fire, _cancel_followers, _run_batches],
    ids=["_fire", "_cancel_followers", "_run_batches"],
)
def test_a_child_made_reentrantly_at_any_point_of_a_cancel_is_cancelled_once(
    method: Any,
) -> None:
    roots: list[CancelToken] = []
    children: list[CancelToken] = []
    calls: list[str] = []

    kept: list[CancelToken] = []  # the first child lives as long as its test run

    def make_child() -> None:
        child = roots[-1].child()
        child.on_cancel(lambda: calls.append("reentrant child"))
        children.append(child)

    def action() -> None:
        roots.append(CancelToken("root"))
        children.clear()
        calls.clear()
        kept[:] = [roots[-1].child()]
        kept[-1].on_cancel(lambda: calls.append("child"))
        roots[-1].cancel("stop")

    def check() -> None:
        assert [child.cancelled for child in children] == [True]
        assert sorted(calls) == ["child", "reentrant child"]
        assert registrations(roots[-1]) == 0

    points = inject_at_each_opcode(method, make_child, action, check, MAX_POINTS)
    assert 5 < points < MAX_POINTS


# -- on an event loop ----------------------------------------------------------------------


async def test_a_task_waiting_on_the_leaf_of_a_deep_chain_wakes_when_a_thread_cancels_it() -> None:
    root = CancelToken("root")
    leaf = chain(root, 5000)[-1]

    async def cancel_from_a_thread() -> None:
        await anyio.to_thread.run_sync(lambda: root.cancel("from a thread"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_from_a_thread)
            cause = await leaf.wait()

    assert (cause.kind, cause.reason) == ("parent", "from a thread")


async def test_cancelling_a_deep_chain_from_a_task_with_little_stack_left_wakes_the_leaf() -> None:
    root = CancelToken("root")
    leaf = chain(root, 2000)[-1]
    woken = anyio.Event()

    async def waiter() -> None:
        await leaf.wait()
        woken.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert call_with_little_stack_left(lambda: root.cancel("deep")) is True
            await woken.wait()
