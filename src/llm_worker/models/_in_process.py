"""What the in-process models (offline, scripted) share: closing their stream, counting words.

Invariants: `closing_stream` closes its generator in the task that entered it, before the
``async with`` is left, whatever ended it; word counts are a pure function of the text (the
offline models' stand-in for tokens, so usage is deterministic).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

from ..cancel import shielded
from ..events import StreamEvent
from ..items import AssistantMessage, Item, ToolCall, ToolResult
from ._base import ModelRequest

# Closing a generator does no I/O; the bound only guards against a misbehaving subclass.


@asynccontextmanager
async def closing_stream(
    events: AsyncGenerator[StreamEvent, None], *, what: str
) -> AsyncGenerator[AsyncIterator[StreamEvent], None]:
    """Hand out ``events`` and ``aclose()`` it on exit, in this task, shielded and bounded.

    Shared by the in-process models (offline, scripted): closing here, not in a garbage
    collector hook, runs the generator's clean-up before the ``async with`` is left, whatever
    ended it. Iterate in the task that entered the block.
    """
    try:
        yield events
    finally:
        # A generator a cancellation went through has finished already: nothing to close.
        if getattr(events, "ag_frame", events) is not None:
            with shielded(None, what):  # the generators here never await while closing
                await events.aclose()


def count_words(text: str) -> int:
    """Words in ``text``: the offline models' stand-in for tokens."""
    return len(text.split())


def request_words(request: ModelRequest) -> int:
    """Words in everything a request sends: system prompt, history, tool names and descriptions."""
    total = count_words(request.system or "")
    for item in request.history:
        total += count_words(_item_text(item))
    for spec in request.tools:
        total += 1 + count_words(spec.description)
    return total


def _item_text(item: Item) -> str:
    if isinstance(item, AssistantMessage):
        return " ".join(part.text for part in item.parts)
    if isinstance(item, ToolCall):
        return f"{item.name} {item.raw_arguments}"
    if isinstance(item, ToolResult):
        return item.content
    return item.text
