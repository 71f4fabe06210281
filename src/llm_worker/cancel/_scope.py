"""Scopes: run a block until a token is cancelled, and clean up in a shielded, bounded region.

Invariants:
* A `TokenScope` turns its token's cancellation into an anyio cancellation of *its own* cancel
  scope, delivered through the loop's thread-safe call; it never cancels the task itself, so an
  outer cancellation (an enclosing scope, or the awaiting task cancelled by its framework) is never
  mistaken for the token's and still propagates.
* A token cancelled before the scope is entered takes effect at the block's first await.
* The block counts as interrupted whenever the token was cancelled by the time it ends, even if
  user code swallowed the cancellation and returned normally: cancellation never succeeds silently.
* `shielded` regions cannot be cut short by any outer cancellation, only by their own bound, and
  they report (``overran``) rather than hang when the bound is hit.
"""

from __future__ import annotations

import logging
from types import TracebackType

import anyio
import anyio.lowlevel

from ._cause import Cause
from ._duration import checked_duration
from ._loop import current_waker
from ._token import CancelToken, Interrupted, _noop

logger = logging.getLogger("llm_worker.cancel")


class TokenScope:
    """A block that ``token``'s cancellation interrupts at its next await.

    Use `move_on_cancel` or `fail_on_cancel` to make one. After the block, ``interrupted`` says
    whether the token was cancelled before the block ended and ``cause`` says why.
    """

    __slots__ = ("_raise", "_scope", "_unregister", "cause", "interrupted", "token")

    def __init__(self, token: CancelToken, *, raise_interrupted: bool) -> None:
        self.token = token
        self.interrupted = False
        self.cause: Cause | None = None
        self._raise = raise_interrupted
        self._scope = anyio.CancelScope()
        self._unregister = _noop

    def __enter__(self) -> TokenScope:
        scope = self._scope
        scope.__enter__()
        if self.token.cancelled:
            scope.cancel(self.token.reason)
        else:
            wake = current_waker()
            self._unregister = self.token.on_cancel(lambda: wake.soon(scope.cancel))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._unregister()
        try:
            swallowed = self._scope.__exit__(exc_type, exc, tb)
        finally:
            if self.token.cancelled:
                self.interrupted = True
                self.cause = self.token.cause
        body_ended_quietly = exc is None or swallowed
        if self.interrupted and self._raise and body_ended_quietly:
            assert self.cause is not None
            raise Interrupted(self.cause)
        return bool(swallowed)


def move_on_cancel(token: CancelToken) -> TokenScope:
    """``with move_on_cancel(token) as scope:`` runs the block until ``token`` is cancelled.

    Cancellation: when the token is cancelled the block gets the framework's cancellation at its
    next await, and execution resumes after the ``with`` with ``scope.interrupted`` set. An outer
    cancellation propagates as usual.
    """
    return TokenScope(token, raise_interrupted=False)


def fail_on_cancel(token: CancelToken) -> TokenScope:
    """Like `move_on_cancel`, but leaving an interrupted block raises `Interrupted` with the cause.

    Cancellation: an outer cancellation that arrives as well still wins and propagates unchanged;
    an exception raised by the block itself is not replaced.
    """
    return TokenScope(token, raise_interrupted=True)


class Shielded:
    """A clean-up region that outer cancellation cannot cut, bounded by ``timeout`` seconds.

    ``overran`` is True after the block if the bound was hit (the block was then cancelled at its
    next await, or swallowed that cancellation); this is logged as a warning naming ``what``.

    Limitation on asyncio: a native ``Task.cancel()`` that lands *inside* the region (a second
    one; the first is what usually starts the clean-up) is not stopped by any anyio shield and
    cuts the block at its next await. anyio cancel scopes, task groups and trio are shielded.
    """

    __slots__ = ("_scope", "overran", "timeout", "what")

    def __init__(self, timeout: float | None, what: str) -> None:
        timeout = checked_duration(timeout, f"the time bound of {what}")
        self.timeout = timeout
        self.what = what
        self.overran = False
        self._scope = (
            anyio.CancelScope(shield=True)
            if timeout is None
            else anyio.move_on_after(timeout, shield=True)
        )

    def __enter__(self) -> Shielded:
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        swallowed = self._scope.__exit__(exc_type, exc, tb)
        # ``cancel_called`` as well: a block that swallowed its own deadline still overran.
        if self._scope.cancelled_caught or self._scope.cancel_called:
            self.overran = True
            logger.warning("%s overran its %gs bound and was cut short", self.what, self.timeout)
        return bool(swallowed)


def shielded(timeout: float | None, what: str = "clean-up") -> Shielded:
    """``with shielded(2.0, "closing the stream") as region:`` — clean-up that must finish.

    Cancellation: no outer cancellation reaches the block; after ``timeout`` seconds the block is
    cancelled at its next await and ``region.overran`` is set. A pending outer cancellation is
    delivered at the first await after the block. ``timeout=None`` (or ``inf``) sets no bound (and
    no timer): only for blocks whose awaits cannot block, such as closing an in-process generator.
    ``timeout`` is checked here (`checked_duration`): a negative, NaN or non-number raises.
    """
    return Shielded(timeout, what)
