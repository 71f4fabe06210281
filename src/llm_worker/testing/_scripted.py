"""`ScriptedModel`: a `Model` that answers each request with the next scripted response.

Invariants:
* Responses are used one per ``stream()`` call, in order; the request is recorded at that call
  (with its history copied, so later changes to the caller's list do not rewrite the record).
* Every event is preceded by an await (``anyio.sleep(pace)``, a checkpoint when ``pace`` is 0),
  so a cancellation can land between any two events; if it does, the stream just stops.
* A `Script` is an immutable value: the same one may be served any number of times and serves
  the same events each time, except for what depends on the request (call ids left empty,
  usage), which is filled in per request.
* Like every model: entering the stream does nothing, leaving it closes it (shielded, bounded),
  and the request's history is never mutated.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeAlias

import anyio
import anyio.lowlevel

from .._error_base import LLMWorkerError
from ..events import (
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)
from ..items import Usage
from ..models._base import ModelRequest
from ..models._in_process import closing_stream, count_words, request_words

__all__ = ["Response", "Script", "ScriptExhausted", "ScriptedModel", "ToolCallScript"]

ToolCallScript: TypeAlias = (
    tuple[str, Mapping[str, Any] | str] | tuple[str, Mapping[str, Any] | str, str]
)
"""``(name, arguments)`` or ``(name, arguments, call_id)``; arguments as a dict or raw text."""


@dataclass(frozen=True, slots=True)
class Script:
    """One scripted model response: events to stream, then maybe an error or a hang.

    Build one with `Script.text`, `Script.tool_calls`, `Script.events` or `Script.error`, and
    adjust it with `failing` or `hanging`. ``cut`` is how many events go out before ``exception``
    is raised or the stream hangs (None: all of them); with neither, the stream just ends there,
    as a provider's stream cut off without a stop reason. ``usage`` appends a `UsageUpdate` with
    word counts of the request and of the events.
    """

    stream_events: tuple[StreamEvent, ...] = ()
    exception: BaseException | None = None
    hang: bool = False
    cut: int | None = None
    usage: bool = False

    def __post_init__(self) -> None:
        if self.cut is not None and self.cut < 0:
            raise ValueError(f"cut must be >= 0, got {self.cut}")
        if self.hang and self.exception is not None:
            raise ValueError("a script can hang or raise, not both")

    # -- builders ---------------------------------------------------------------------------

    @classmethod
    def text(
        cls,
        text: str,
        *,
        chunks: int = 1,
        reasoning: str | None = None,
        stop: str = "end_turn",
        then_hang: bool = False,
    ) -> Script:
        """A text answer in ``chunks`` deltas (fewer if the text is shorter), then stop and usage.

        ``reasoning`` adds a reasoning block first. ``then_hang`` blocks forever after the text
        deltas, before the stop reason — a model stalled mid-answer, for cancellation tests.
        """
        events: list[StreamEvent] = []
        if reasoning is not None:
            events.append(ReasoningStart())
            events.extend(ReasoningDelta(text=part) for part in _split(reasoning, 2))
            events.append(ReasoningEnd())
        events.extend(TextDelta(text=part) for part in _split(text, chunks))
        cut = len(events) if then_hang else None
        events.append(StopReason(reason=stop))
        return cls(tuple(events), hang=then_hang, cut=cut, usage=True)

    @classmethod
    def tool_calls(
        cls,
        *calls: ToolCallScript,
        text: str | None = None,
        fragments: int = 2,
        then_hang: bool = False,
    ) -> Script:
        """Parallel tool calls, arguments in ``fragments`` deltas each, then stop and usage.

        Arguments given as a dict are sent as JSON; as a string, verbatim (to test bad JSON). A
        call without an id gets ``call_<request number>_<index>`` when served. ``text`` is said
        before the calls. ``then_hang`` blocks forever after the last call's final fragment,
        before its `ToolCallEnd` — arguments that never finish.
        """
        if not calls:
            raise ValueError("Script.tool_calls needs at least one call")
        events: list[StreamEvent] = []
        if text:
            events.append(TextDelta(text=text))
        for index, call in enumerate(calls):
            name, arguments = call[0], call[1]
            call_id = call[2] if len(call) == 3 else ""
            raw = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
            events.append(ToolCallStart(index=index, call_id=call_id, name=name))
            events.extend(
                ToolCallDelta(index=index, arguments=part) for part in _split_raw(raw, fragments)
            )
            events.append(ToolCallEnd(index=index))
        cut = len(events) - 1 if then_hang else None
        events.append(StopReason(reason="tool_use"))
        return cls(tuple(events), hang=then_hang, cut=cut, usage=True)

    @classmethod
    def events(cls, events: Iterable[StreamEvent], *, then_hang: bool = False) -> Script:
        """Exactly ``events``, nothing added (no usage); ``then_hang`` blocks forever after them."""
        return cls(tuple(events), hang=then_hang)

    @classmethod
    def error(
        cls,
        exception: BaseException,
        *,
        after: int = 0,
        events: Iterable[StreamEvent] | None = None,
    ) -> Script:
        """Raise ``exception`` after ``after`` events: the first of ``events``, or text deltas.

        The instance is raised as is (the same one each time the script is served), as a
        provider's error would surface mid-stream.
        """
        if events is None:
            events = (TextDelta(text=f"partial {n + 1} ") for n in range(after))
        return cls(tuple(events), exception=exception, cut=after)

    # -- adjustments --------------------------------------------------------------------------

    def failing(self, exception: BaseException, *, after: int | None = None) -> Script:
        """This script, raising ``exception`` after ``after`` of its events (default: all)."""
        return dataclasses.replace(self, exception=exception, hang=False, cut=after)

    def hanging(self, *, after: int | None = None) -> Script:
        """This script, blocking forever after ``after`` of its events (default: all)."""
        return dataclasses.replace(self, exception=None, hang=True, cut=after)

    def served(self, request: ModelRequest, number: int) -> list[StreamEvent]:
        """The events this script streams for ``request``, the ``number``-th request (from 1).

        Empty call ids become ``call_<number>_<index>``; with ``usage``, a `UsageUpdate` ends
        the list (and counts toward ``cut``).
        """
        events = [
            event.model_copy(update={"call_id": f"call_{number}_{event.index}"})
            if isinstance(event, ToolCallStart) and not event.call_id
            else event
            for event in self.stream_events
        ]
        if self.usage:
            produced = sum(count_words(_content(event)) for event in events)
            usage = Usage(input_tokens=request_words(request), output_tokens=produced)
            events.append(UsageUpdate(usage=usage))
        return events if self.cut is None else events[: self.cut]


Response: TypeAlias = Script | str | Callable[[ModelRequest], Script | str]
"""A scripted response: a `Script`, a string (``Script.text(string)``), or a function of the
request returning either — for answers that depend on what the model was sent."""


class ScriptExhausted(LLMWorkerError, IndexError):
    """A `ScriptedModel` got more requests than it has responses."""

    def __init__(self, number: int) -> None:
        super().__init__(f"ScriptedModel has no response left for request #{number}")
        self.number = number


class ScriptedModel:
    """A `Model` for tests: request *n* gets the *n*-th response, streamed event by event.

    ``requests`` lists what it received (``stream()`` calls, history copied as a tuple);
    ``pace`` is the pause before each event. More requests than responses make the extra
    stream raise `ScriptExhausted` on its first iteration. ``native_output`` (default True):
    a structured answer is scripted as text; False makes runs with an ``output_type`` offer the
    final-answer tool instead, to script a call to it.

    Cancellation: it can land at the await before any event, or during a scripted hang; the
    stream just stops there, and leaving the ``async with`` closes it.
    """

    def __init__(
        self,
        responses: Iterable[Response] = (),
        *,
        pace: float = 0.0,
        name: str = "scripted",
        native_output: bool = True,
    ) -> None:
        if pace < 0:
            raise ValueError(f"pace must be >= 0, got {pace!r}")
        self._responses: list[Response] = list(responses)
        self._next = 0
        self._lock = threading.Lock()
        self._name = name
        self.pace = pace
        self.native_output = native_output
        self.requests: list[ModelRequest] = []

    def __repr__(self) -> str:
        return f"ScriptedModel({self._name!r}, served={self._next}, left={self.remaining})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def remaining(self) -> int:
        """How many responses are still unused."""
        return len(self._responses) - self._next

    def add(self, *responses: Response) -> None:
        """Append responses to the script, e.g. between two runs of a test."""
        with self._lock:
            self._responses.extend(responses)

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Take the next response for ``request``; its events flow only once iterated.

        Cancellation: see the class; an exhausted script raises on the first iteration, not
        here, the way a provider's refusal surfaces when the stream is opened.
        """
        with self._lock:
            self.requests.append(dataclasses.replace(request, history=tuple(request.history)))
            number = len(self.requests)
            response: Response | None = None
            if self._next < len(self._responses):
                response = self._responses[self._next]
                self._next += 1
        return closing_stream(
            self._serve(request, number, response), what="closing the scripted stream"
        )

    async def _serve(
        self, request: ModelRequest, number: int, response: Response | None
    ) -> AsyncGenerator[StreamEvent, None]:
        await anyio.lowlevel.checkpoint()
        if response is None:
            raise ScriptExhausted(number)
        if callable(response):
            response = response(request)
        script = Script.text(response) if isinstance(response, str) else response
        for event in script.served(request, number):
            await anyio.sleep(self.pace)
            yield event
        if script.hang:
            await anyio.sleep_forever()
        if script.exception is not None:
            raise script.exception


def _content(event: StreamEvent) -> str:
    if isinstance(event, TextDelta | ReasoningDelta):
        return event.text
    if isinstance(event, ToolCallDelta):
        return event.arguments
    return ""


def _split(text: str, parts: int) -> list[str]:
    """``text`` in up to ``parts`` pieces cut at word starts, as evenly as words allow."""
    words = [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]
    if not words:
        return [text] if text else []
    parts = max(1, min(parts, len(words)))
    bounds = [len(words) * i // parts for i in range(parts + 1)]
    return ["".join(words[bounds[i] : bounds[i + 1]]) for i in range(parts)]


def _split_raw(raw: str, parts: int) -> list[str]:
    """``raw`` in ``parts`` non-empty pieces cut at even offsets (fewer if it is shorter)."""
    parts = max(1, min(parts, len(raw)))
    bounds = [len(raw) * i // parts for i in range(parts + 1)]
    return [raw[bounds[i] : bounds[i + 1]] for i in range(parts)] if raw else [""]
