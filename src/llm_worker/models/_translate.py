"""What every provider's translation shares: the stream-translation loop (`translate`), and
helpers for call ids, token counts, usage increments and a call's arguments.

Invariants:
* Every helper is pure and total (no I/O, no exception for any input the history or a server
  can produce); a count a server did not give is unknown (None), never zero.
* `translate` is the one place that decides how a stream ends: once the translation is
  `complete` (the server stated the response's end) a connection that breaks loses nothing and
  is no error; a body that ends before that is the translation's `finish` to judge (a retryable
  `ModelError`: it was cut off). A payload that breaks the protocol (`MalformedStream`) is an
  error even then.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from ..errors import ModelError
from ..events import StreamEvent, UsageUpdate
from ..items import ToolCall, Usage

logger = logging.getLogger("llm_worker.models")


class MalformedStream(ModelError):
    """A stream payload that breaks the provider's protocol (never retried)."""


class StreamTranslation(Protocol):
    """One response's stream translation: one instance per response, fed in stream order.

    Every provider module has one (``StreamTranslation``); `feed` never awaits.
    """

    @property
    def complete(self) -> bool:
        """The server stated the response's end: nothing after it can change the answer."""
        ...

    def feed(self, payload: Any) -> Sequence[StreamEvent]:
        """The events of one payload (parsed JSON), in stream order; `MalformedStream` for one
        that breaks the protocol."""
        ...

    def finish(self) -> Sequence[StreamEvent]:
        """The body ended: the events still owed, or a retryable `ModelError` if it was cut."""
        ...


async def translate(
    payloads: AsyncIterator[Any], translation: StreamTranslation
) -> AsyncIterator[StreamEvent]:
    """``payloads`` as `StreamEvent`s through ``translation`` (see the module invariants).

    Cancellation: nothing is held here; the caller closes the HTTP stream.
    """
    feed = translation.feed
    try:
        async for payload in payloads:
            for event in feed(payload):
                yield event
    except MalformedStream:
        raise
    except ModelError as exc:
        if not translation.complete:
            raise
        cause = type(exc.__cause__ or exc).__name__
        logger.info("the stream broke (%s) after the response was complete; it stands", cause)
        return
    for event in translation.finish():
        yield event


def given_call_id(value: Any) -> str:
    """The call id a server gave, or "" when it gave none (or not a string): the timeline owns
    making ids unique and inventing missing ones, for every provider alike."""
    return value if isinstance(value, str) else ""


def token_count(value: Any) -> int | None:
    """A token count as a server gave it; None when it gave none (unknown is not zero)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_increment(previous: Usage, total: Usage) -> tuple[Usage | None, Usage]:
    """What the running totals ``total`` add to ``previous``: the increment (None when they add
    nothing), and the running totals to remember. A count ``total`` does not give is unknown
    in the increment and stays as it was; servers that repeat their totals (several usage
    chunks, Anthropic's ``message_delta``) are so never counted twice."""
    increments: dict[str, int | None] = {}
    running: dict[str, int | None] = {}
    for name in _USAGE_FIELDS:
        now, before = getattr(total, name), getattr(previous, name)
        if now is None or now == before:
            increments[name], running[name] = None, before
        else:
            increments[name], running[name] = now - (before or 0), now
    increment = Usage(**increments)
    return (increment if increment.known else None), Usage(**running)


_USAGE_FIELDS = tuple(field.name for field in dataclasses.fields(Usage))


class UsageTotals:
    """The one usage accounting of the providers whose servers report running totals (and
    repeat them): each `update` with the totals so far gives the `UsageUpdate` of what they
    add (None when they add nothing), so the timeline, which adds increments, never counts a
    token twice; a count the server never gave stays unknown (None), never zero."""

    __slots__ = ("running",)

    def __init__(self) -> None:
        self.running = Usage()

    def update(self, total: Usage) -> UsageUpdate | None:
        increment, self.running = usage_increment(self.running, total)
        return None if increment is None else UsageUpdate(usage=increment)


def tool_arguments(call: ToolCall) -> str:
    """The call's raw arguments if they parsed as a JSON object, else ``"{}"`` (the APIs want
    one).

    Never parses again: the timeline already did, safely, and cut-off or hostile text (too deep,
    too long a number) must not make every later request fail to build.
    """
    return call.raw_arguments if call.arguments is not None and call.raw_arguments else "{}"
