"""Small helpers shared by the cancellation tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

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
