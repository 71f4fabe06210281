"""Running turns: the event-loop thread, Ctrl-C and SIGTERM, and the terminal's echo.

Invariants:
* The event loop (asyncio, or trio with ``LLM_WORKER_ASYNC_BACKEND=trio``) runs in a helper
  thread behind an anyio blocking portal. The main thread parses flags, reads chat input and
  runs the signal handlers (Python runs them only there); it blocks in ``portal.call`` while a
  turn runs, and the loop thread runs the worker and the view.
* Every turn gets its own `CancelToken`, made in the main thread *before* the turn is handed to
  the loop, so a Ctrl-C at any moment of the turn has a token to cancel and is never lost.
  Cancelling is thread-safe and never blocks, which is all a signal handler may do.
* What a signal does depends on when it lands:
  - no turn running (start-up, the chat prompt): SIGINT raises `KeyboardInterrupt` in the main
    thread (the chat quits; ``main`` exits 130), SIGTERM exits 143. That first signal decides:
    more that land while the command leaves are dropped (the third quits at once), so a quick
    second Ctrl-C cannot turn the chat's clean exit into an interrupted one;
  - during a turn, the first: cancels that turn's token (kind ``keyboard_interrupt``; SIGTERM:
    ``explicit``), the run stops at its next await and returns what it kept;
  - the second while the turn is still stopping: quit once it has stopped;
  - the third: leave at once (``os._exit``); what was committed is on disk already.
  A turn's token is dropped when the turn ends, so a late Ctrl-C never hits the next turn.
* Starting and stopping the loop thread happen with SIGINT and SIGTERM *deferred*
  (`signals_deferred`): a signal that lands there is acted on once the portal is up or gone, so
  the main thread never leaves a loop thread it started running behind it (which would hang the
  process at exit). The same holds while leaving (`leaving`): once a command has decided to end,
  a further Ctrl-C cannot skip its last lines; only a third one quits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from signal import SIGINT, SIGTERM
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._common import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    PROG,
    SIGTERM_REASON,
    CLIError,
)

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from ..cancel import CancelToken
    from ..errors import RunError
    from ..items import Usage
    from ..models import Model
    from ..result import RunResult
    from ..worker import Worker
    from ._views import View


@dataclass
class Interrupts:
    """Signal state, touched only in the main thread (where Python runs signal handlers)."""

    token: CancelToken | None = None
    count: int = 0
    idle_signals: int = 0  # signals with no turn running; the first one decided to leave
    quit_after_turn: bool = False
    previous: dict[int, Any] = field(default_factory=dict)
    restore_terminal: Callable[[], None] = lambda: None  # before quitting at once

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    @contextlib.contextmanager
    def turn(self, token: CancelToken) -> Iterator[None]:
        """Route signals to ``token`` for the duration of one turn."""
        self.token, self.count = token, 0
        try:
            yield
        finally:
            self.token = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        token = self.token
        if token is None:  # idle (the chat prompt, start-up, between turns): leave
            self.idle_signals += 1
            if self.idle_signals == 1:
                if signum == signal.SIGTERM:
                    raise SystemExit(EXIT_TERMINATED)
                raise KeyboardInterrupt
            if self.idle_signals >= 3:
                self.restore_terminal()
                exit_now(signum)
            return  # already leaving on the first one: it ends as that one decided
        self.count += 1
        if self.count == 1:
            if signum == signal.SIGTERM:
                token.cancel(SIGTERM_REASON, kind="explicit")
            else:
                token.cancel("interrupted by Ctrl-C", kind="keyboard_interrupt")
        elif self.count == 2:
            self.quit_after_turn = True
            _raw_stderr(f"\n{PROG}: still stopping… press Ctrl-C again to quit at once\n")
        else:  # what was committed is on disk already; the block in flight is given up
            self.restore_terminal()
            _raw_stderr(f"\n{PROG}: quit at once\n")
            os._exit(EXIT_INTERRUPTED)


def _raw_stderr(text: str) -> None:
    """Write from a signal handler: no Python-level locks, so it cannot deadlock."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def exit_now(signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
    """A signal handler for moments with nothing to keep (start-up, the very end): leave at
    once and quietly with the signal's status."""
    os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)


@contextlib.contextmanager
def signals_deferred(*, then_raise: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is over (main thread only).

    A signal that landed meanwhile is acted on at the end, as the handler in place before would
    (``then_raise``), or dropped (``then_raise=False``: the command is leaving anyway). A third
    signal during the block leaves at once (`exit_now`): a block that hangs can still be left.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    landed: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        landed.append(signum)
        if len(landed) >= 3:
            exit_now(signum)

    previous: dict[int, Any] = {
        signum: signal.signal(signum, remember) for signum in (SIGINT, SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if landed and then_raise:
        handler = previous[landed[0]]
        if callable(handler):
            handler(landed[0], None)
        elif handler == signal.SIG_DFL:
            exit_now(landed[0])


@contextlib.contextmanager
def leaving() -> Iterator[None]:
    """The end of a command (closing the model, flushing the session, the last lines): a Ctrl-C
    here is dropped, so the command ends as it decided to; a third one quits at once."""
    with signals_deferred(then_raise=False):
        yield


@contextlib.contextmanager
def event_loop() -> Iterator[BlockingPortal]:
    """The loop thread for the ``with`` block; leaving it stops the loop and joins the thread.

    Left by an exception (a Ctrl-C between turns, e.g. while the model is being closed), it
    cancels whatever still runs in the loop first, so the process never waits on it. Starting
    and stopping run with signals deferred (see the module's invariants): a Ctrl-C there is
    raised once the thread is up (and then stopped) or gone, never while it is half started.
    """
    from anyio.from_thread import start_blocking_portal

    backend = os.environ.get("LLM_WORKER_ASYNC_BACKEND", "asyncio")
    if backend not in ("asyncio", "trio"):
        raise CLIError(f"LLM_WORKER_ASYNC_BACKEND must be asyncio or trio, got {backend!r}", 2)
    portal_cm = start_blocking_portal(backend)
    entered = False
    try:
        with signals_deferred():  # a Ctrl-C meanwhile is raised below, once the thread is up
            try:
                portal = portal_cm.__enter__()
            except ModuleNotFoundError as exc:
                message = f"the {backend} event loop is not installed ({exc})"
                raise CLIError(message, EXIT_USAGE) from None
            entered = True
        yield portal
    except BaseException as exc:
        if entered:
            with signals_deferred(then_raise=False):
                portal_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    with signals_deferred():
        portal_cm.__exit__(None, None, None)


@dataclass
class Turn:
    """What one turn ended with: a result or an error, and how long it took."""

    result: RunResult | None
    error: RunError | None
    seconds: float

    @property
    def usage(self) -> Usage:
        from ..items import Usage

        source = self.result if self.result is not None else (self.error and self.error.partial)
        return source.usage if source else Usage()


def run_turn(
    portal: BlockingPortal,
    interrupts: Interrupts,
    worker: Worker,
    prompt: str | None,
    timeout: float | None,
    view: View,
    attachments: Sequence[Any] = (),
) -> Turn:
    """Run one turn (``prompt=None`` resumes) in the loop thread; call from the main thread.

    Blocks until the run has ended, cleaned up and committed what it kept, however it ended: a
    Ctrl-C, a timeout or a closed stdout cancels its token and comes back as ``Turn.error``.
    """
    from ..cancel import CancelToken

    token = CancelToken("cli-turn")
    view.on_broken_pipe = lambda: token.cancel("the output was closed", kind="explicit")
    with interrupts.turn(token), _no_control_echo(interrupts):
        turn: Turn = portal.call(_drive_turn, worker, prompt, token, timeout, view, attachments)
        return turn


async def _drive_turn(
    worker: Worker,
    prompt: str | None,
    token: CancelToken,
    timeout: float | None,
    view: View,
    attachments: Sequence[Any] = (),
) -> Turn:
    """Stream one run into ``view``; runs in the event-loop thread.

    Cancellation comes through ``token`` (or the deadline), never by cancelling this task: the
    run then stops at its next await, the stream ends with its cancel event, and ``run.result``
    raises the `RunError` that becomes ``Turn.error``.
    """
    from ..errors import RunError

    started = time.monotonic()
    async with worker.stream(prompt, token=token, timeout=timeout, attachments=attachments) as run:
        async for event in run:
            view.event(event)
    seconds = time.monotonic() - started
    try:
        return Turn(run.result, None, seconds)
    except RunError as exc:
        return Turn(None, exc, seconds)


@contextlib.contextmanager
def _no_control_echo(interrupts: Interrupts) -> Iterator[None]:
    """While a turn streams, keep the terminal from echoing ``^C``, or what is typed meanwhile
    (it waits for the next prompt), into the answer's text."""
    try:
        import termios
    except ImportError:  # not a POSIX system
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        changed = list(saved)
        changed[3] &= ~(termios.ECHOCTL | termios.ECHO)
        termios.tcsetattr(fd, termios.TCSANOW, changed)
    except (termios.error, OSError, ValueError, AttributeError):  # stdin is not a terminal
        yield
        return

    def restore() -> None:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, saved)

    interrupts.restore_terminal = restore
    try:
        yield
    finally:
        interrupts.restore_terminal = lambda: None
        restore()


def endpoint(model: Model) -> str | None:
    """The URL an HTTP model sends to (for error lines), or None for an in-process model."""
    client = getattr(model, "client", None)
    url = getattr(client, "base_url", None)
    return str(url).rstrip("/") if url else None


async def close_model(model: Model) -> None:
    """Close the model's HTTP client, if it has one; errors are irrelevant at this point.

    Runs between turns: a Ctrl-C meanwhile is a `KeyboardInterrupt` in the main thread, and
    leaving `event_loop` cancels this close (the process is exiting anyway).
    """
    close = getattr(model, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def close_tool_sources(tools: Sequence[object]) -> None:
    """Stop the MCP servers among ``tools`` (each close is shielded and bounded by the server).

    Runs in the loop thread, where the servers' connections live, after the last turn.
    """
    from ..tools import ToolSource

    for source in tools:
        if isinstance(source, ToolSource):
            with contextlib.suppress(Exception):
                await source.aclose()
