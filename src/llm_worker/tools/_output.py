"""ToolOutput: a tool's answer when plain text is not enough.

Invariants:
* A tool that returns a `ToolOutput` keeps everything in it: its attachments (images, embedded
  resources) reach the `ToolResult` unchanged, whatever the provider can send back.
* ``status`` only says what the tool knows and the runner cannot: that its answer is an error
  (an MCP ``isError`` result). Whether an answer is partial is the runner's call (the call's
  token was cancelled before it returned), never the tool's.
* A bound call that can say what it has so far (`ReportsPartial`) is asked once, after the
  map gave up on it: its partial output is kept and the call is reported ``abandoned`` — or,
  when it says None (it never got to send anything), ``cancelled`` like any stopped call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..items import Attachment

__all__ = ["ReportsPartial", "ToolOutput"]


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """Text for the model, plus attachments kept in the history; ``error`` for a failed call."""

    text: str
    status: Literal["ok", "error"] = "ok"
    attachments: tuple[Attachment, ...] = ()


@runtime_checkable
class ReportsPartial(Protocol):
    """A bound call that can tell, after it was stopped hard, what it had received so far."""

    def partial(self) -> ToolOutput | None: ...
