"""`RunResult`: what one run produced, whole (finished, paused, limit reached) or partial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .items import AssistantMessage, Item, Usage

RunStatus = Literal["finished", "paused", "limit_reached", "interrupted"]


@dataclass(frozen=True)
class RunResult:
    """The outcome of ``Worker.run`` / ``resume``.

    ``status`` is ``finished``, ``paused`` or ``limit_reached`` for a run that returned, and
    ``interrupted`` for the partial result carried by a `RunError` (``error.partial``). ``items``
    are the history items this run added, in order; nothing said or done is missing from them.
    ``reason`` says why a run paused (the hook's `Pause` reason) or hit the turn limit.
    ``output_value`` is the validated answer of a run with an ``output_type`` (on a partial
    result: the object validated from what was streamed before the stop, or None).
    """

    status: RunStatus
    items: tuple[Item, ...] = ()
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    run_id: str = ""
    reason: str | None = None
    output_value: Any = None

    @property
    def output(self) -> str:
        """The text of the last assistant message of this run (partial if interrupted), or ""."""
        for item in reversed(self.items):
            if isinstance(item, AssistantMessage) and item.text:
                return item.text
        return ""

    @property
    def usage_known(self) -> bool:
        """Whether every response of this run reported its input and output tokens: when
        False, ``usage`` counts only what was reported (a provider that reports usage at the
        end of a stream says nothing for a response cut off before it)."""
        return all(
            item.usage is not None
            and item.usage.input_tokens is not None
            and item.usage.output_tokens is not None
            for item in self.items
            if isinstance(item, AssistantMessage)
        )
