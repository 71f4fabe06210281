"""ToolContext: what a running tool knows about its call.

Invariants:
* A tool sees its call's own token, never the run's: cancelling it (a stop, a failed sibling, the
  tool's timeout) asks this call alone to stop; a tool cannot cancel the run through it.
* Every field has a default, so a tool can be unit-tested with ``ToolContext()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cancel import CancelToken, Cause

__all__ = ["ToolContext"]


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a running tool knows about its call; injected into a parameter annotated with it.

    ``token`` is this call's own token: cancelled when the run is cancelled, when a sibling fails
    (if the worker is set so), or when the tool's timeout passes. Poll ``cancelled`` (sync tools)
    or ``await ctx.token.wait()`` (async tools) and return partial output. Every field has a
    default so that users can unit-test a tool with ``ToolContext()``.
    """

    token: CancelToken = field(default_factory=CancelToken)
    call_id: str = ""
    tool_name: str = ""
    turn: int = 0
    deps: Any = None
    progress: Callable[[float, float | None, str | None], None] | None = field(
        default=None, repr=False
    )

    @property
    def cancelled(self) -> bool:
        """True once this call should stop."""
        return self.token.cancelled

    @property
    def cause(self) -> Cause | None:
        """Why this call should stop (``cause.kind == "deadline"`` for a timeout), or None."""
        return self.token.cause

    def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Tell the run's listeners how far this call got (a `ToolProgress` event); never blocks."""
        if self.progress is not None:
            self.progress(progress, total, message)

    def raise_if_cancelled(self) -> None:
        """Raise `Interrupted` if this call should stop; for tools that would rather not return."""
        self.token.raise_if_cancelled()
