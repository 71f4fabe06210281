"""`RunStream`: a run as an async iterator of events, for UIs; created by `Worker.stream`.

Invariants:
* Events are buffered without bound while the consumer is busy, so emitting never blocks or
  awaits inside the run; a consumer that went away simply stops receiving.
* Leaving the block before the run ended cancels the run and waits for its clean-up: ``explicit``
  when the block ended normally or raised, ``external`` when the consuming task was cancelled.
* After the block, ``result`` and ``error`` say how the run ended, whatever ended it: an outer
  cancellation leaves the worker's `Cancelled` (with everything kept) in ``error``.
* An exception raised in the block comes out as itself, never wrapped in an exception group.
* A handle that is never entered never holds the worker: dropping it releases the run.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._runs import Run
from .events import Event
from .result import RunResult


class RunStream:
    """A run in progress: ``async with worker.stream("hi") as run: async for event in run: ...``"""

    def __init__(
        self,
        run: Run,
        start: Callable[[], Coroutine[Any, Any, RunResult]],
        release: Callable[[], None],
    ) -> None:
        self._run = run
        self._start = start
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._group = anyio.create_task_group()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._finished = False
        weakref.finalize(self, _release_if_unstarted, run, release)

    @property
    def run_id(self) -> str:
        return self._run.id

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel this run (any thread); False if it already ended or was cancelled."""
        if self._run.done.is_set():
            return False
        return self._run.token.cancel(reason)

    @property
    def result(self) -> RunResult:
        """The run's result; raises its `RunError` if it did not finish, RuntimeError if going."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the run has not finished yet")
        return self._result

    @property
    def error(self) -> BaseException | None:
        """How the run ended when it did not return a result (a `RunError`), else None."""
        return self._error

    async def __aenter__(self) -> RunStream:
        self._send, self._receive = anyio.create_memory_object_stream[Event](math.inf)
        send = self._send

        def emit(event: Event) -> None:
            with contextlib.suppress(anyio.ClosedResourceError):  # the consumer went away
                send.send_nowait(event)

        self._run.emit = emit
        await self._group.__aenter__()
        self._group.start_soon(self._drive)
        return self

    async def _drive(self) -> None:
        try:
            self._result = await self._start()
        except Exception as exc:
            self._error = exc
        except BaseException:
            # An outer cancellation or Ctrl-C: the worker recorded what was kept before it let
            # the framework's exception out.
            self._error = self._run.error
            raise
        finally:
            self._finished = True
            self._send.close()

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        """The next event. Cancellation: safe; no event is lost (they are buffered).

        A buffered event is handed out without a trip through the loop (a cancellation is still
        noticed first); the loop is entered only to wait for the next one.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Cancellation: waits for the run's clean-up, shielded by the run's own clean-up rules."""
        if not self._finished:
            token = self._run.token
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                token.cancel("the task consuming the event stream was cancelled", kind="external")
            elif exc is not None:
                token.cancel(f"the event stream's block raised {type(exc).__name__}")
            else:
                token.cancel("the event stream was closed before the run ended")
        unwrapped: BaseException | None = None
        try:
            return await self._group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # anyio wraps the block's own exception in a group; the caller's ``except`` expects it
            # as itself (the run's task never raises into the group: _drive keeps its outcome).
            if exc is None or group.exceptions != (exc,):
                raise
            unwrapped = exc
        finally:
            self._receive.close()
        raise unwrapped


def _release_if_unstarted(run: Run, release: Callable[[], None]) -> None:
    if not run.started:
        release()
