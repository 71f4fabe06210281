"""`RunResult`: what one run produced, whole (finished, paused, limit reached) or partial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .items import AssistantMessage, Item, Usage

RunStatus = Literal["finished", "paused", "limit_reached", "interrupted"]


@dataclass(frozen=True)
class RunResult:
    """The outcome of ``Worker.run`` / ``resume``.

    ``status`` is ``finished``, ``paused`` or ``limit_reached`` for a run that returned, and
    ``interrupted`` for the partial result carried by a `RunError` (``error.partial``). ``items``
    are the history items this run added, in order; nothing said or done is missing from them.
    ``reason`` says why a run paused (the hook's `Pause` reason) or hit the turn limit.
    """

    status: RunStatus
    items: tuple[Item, ...] = ()
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    run_id: str = ""
    reason: str | None = None

    @property
    def output(self) -> str:
        """The text of the last assistant message of this run (partial if interrupted), or ""."""
        for item in reversed(self.items):
            if isinstance(item, AssistantMessage) and item.text:
                return item.text
        return ""
