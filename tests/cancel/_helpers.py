"""Small helpers shared by the cancellation tests."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from llm_worker.cancel import CancelToken


def registrations(token: CancelToken) -> int:
    """How many callbacks are registered on ``token`` (white box: the leak we look for)."""
    return len(token._callbacks)


def finishes_in_thread(fn: Callable[[], object], timeout: float = 5.0) -> bool:
    """Run ``fn`` in a daemon thread; False if it is still running after ``timeout`` (deadlock).

    A deadlocked thread is left behind (it is a daemon); the test that called this fails.
    Exceptions raised by ``fn`` are re-raised here.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="deadlock-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    return not thread.is_alive()


def inject_at_each_opcode(
    method: Any, injected: Any, action: Any, check: Any, max_points: int = 200
) -> int:
    """Run ``action()`` once per opcode of ``method``, each time running ``injected()`` reentrantly
    at that opcode (as a signal handler or a finalizer would); call ``check()`` after each run.
    Returns the number of injection points tried.
    """
    code = method.__code__
    for point in range(max_points):
        state = {"count": 0, "fired": False}

        def tracer(
            frame: FrameType, event: str, arg: object, state: Any = state, point: int = point
        ) -> Any:
            if frame.f_code is not code:
                return None
            frame.f_trace_opcodes = True

            def local(frame: FrameType, event: str, arg: object) -> Any:
                frame.f_trace_opcodes = True  # 3.12+ honours it only when set from here
                if event == "opcode" and not state["fired"]:
                    if state["count"] == point:
                        state["fired"] = True
                        injected()
                    state["count"] += 1
                return local

            return local

        def traced(tracer: Any = tracer) -> None:
            sys.settrace(tracer)
            try:
                action()
            finally:
                sys.settrace(None)

        assert finishes_in_thread(traced, timeout=2), f"deadlock when interrupted at opcode {point}"
        if not state["fired"]:  # ran past the last opcode: every point was tried
            return point
        check()
    return max_points
