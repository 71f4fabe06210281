"""Anthropic Messages API: the worker's history in, Anthropic's stream out as `StreamEvent`s.

Invariants:
* The request is a pure function of the history (`convert_history`) and is valid after every
  kind of interruption: messages alternate user/assistant and start with a user message; every
  ``tool_use`` is answered by a ``tool_result`` in the immediately next user message, where
  ``tool_result`` blocks come first — given a repaired history (`history.repair`, applied by the
  worker before every request; this module translates, it does not repair); an assistant
  message is thinking blocks, then text, then ``tool_use`` blocks — never text after a
  ``tool_use``; no text block is empty or only whitespace, and assistant text has no trailing
  whitespace; tool-use ids are of the allowed characters and stay distinct.
* Thinking goes back only as Anthropic signed it: a thinking block without a signature (cut off
  by an interruption) or from another provider is dropped — the API rejects unsigned thinking,
  and it strips earlier turns' thinking from the context anyway. Redacted thinking goes back as
  it came.
* Stream translation (`StreamTranslation`) never crashes on what the server sends: block, delta and
  event types it does not know (server tool use and results, citations, ``ping``) are ignored; an
  event that breaks the protocol is a `ModelError`, and so is a body that ends before the server
  stated the answer's end — ``message_stop``, or a ``message_delta`` with its ``stop_reason`` —
  (``retryable``: a cut connection); once it did, a connection that breaks is no error, and events
  after ``message_stop`` are ignored; an ``error`` event is a `ModelError` that is ``retryable``
  when its type is transient (``overloaded_error``), and retried while no content has been streamed
  (`provider_stream`). A whole ``Message`` object (a compatible server that answered
  ``application/json`` despite ``stream: true``) is read as the events its stream would have
  carried.
* Retries, timeouts and leak-free closing are `provider_stream`'s; the SDK's own retries are off
  for every request (`HTTPModel`). Cancellation: at any await the HTTP response is closed (shielded,
  bounded) and the cancellation propagates; nothing else is held.

The SDK builds and sends the request (auth, headers, HTTP errors as its typed exceptions); the
body is read by the shared `SSEResponseStream` (`HTTPModel.stream`), not by the SDK's
``AsyncStream``, which builds a pydantic object per event and leaves its readers to the garbage
collector. Measured (CPU time
per event, a 22k-event stream over an in-memory transport): the SDK's ``AsyncStream`` iteration
alone 17 µs; this module's whole path (parse, convert, retry wrapper) 5.6 µs; the
``MessageStream`` helper 43 µs (it also re-parses the whole partial JSON of a tool call on each
of its deltas: quadratic), and the worker assembles messages in its timeline anyway.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic

from ..errors import ModelError
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
from ..history import CONVERSATION_START, EMPTY_USER_TEXT
from ..items import (
    AssistantMessage,
    DocumentPart,
    ImagePart,
    Item,
    Note,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from ..output import OutputSpec
from ..tools import ToolSpec
from ._attachments import base64_data
from ._base import ModelRequest
from ._client import HTTPModel
from ._request import Group, alternating_groups, convert_all
from ._sse import MAX_EVENT_BYTES
from ._translate import (
    MalformedStream,
    UsageTotals,
    given_call_id,
    token_count,
    translate,
)
from ._transport import RetryPolicy, Timeouts

__all__ = [
    "AnthropicModel",
    "StreamTranslation",
    "convert_history",
    "convert_tools",
    "translate_stream",
]

PROVIDER = "anthropic"

#: Stop reasons whose meaning another provider's name says better; the rest pass unchanged
#: (``end_turn``, ``tool_use``, ``max_tokens``, ``stop_sequence``, ``refusal``, ``pause_turn``).
_STOP_REASONS = {"model_context_window_exceeded": "max_tokens"}


_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class AnthropicModel(HTTPModel):
    """A `Model` for the Anthropic Messages API (streaming), through the official SDK.

    ``client``: a configured ``anthropic.AsyncAnthropic``, used with its retries off (our
    retries run instead; see `HTTPModel`) and never closed here; otherwise one is built from
    ``api_key`` / ``ANTHROPIC_API_KEY`` and ``base_url`` / ``ANTHROPIC_BASE_URL``, with
    ``timeouts``' connect and idle limits. ``max_tokens`` is always sent (the API requires it;
    a request's ``settings.max_tokens`` wins). ``thinking`` is passed as the API's ``thinking``
    parameter, e.g. ``{"type": "enabled", "budget_tokens": 2048}``.

    Raises `MissingCredentials` at construction when no client and no key is given.

    ``max_event_bytes`` caps one stream event, one line of it, or a whole JSON body
    (`EventTooLarge`). Error texts never carry the client's key (`Redactor`); a client built
    here also knows an HTTP error whose body was cut from an unreachable server (`note_status`).
    """

    provider = PROVIDER
    path = "/v1/messages"
    history_key = "messages"
    stream_class = anthropic.AsyncStream
    sdk_client = anthropic.AsyncAnthropic
    sdk_http_client = anthropic.DefaultAsyncHttpxClient
    key_variable = "ANTHROPIC_API_KEY"
    base_url_variable = "ANTHROPIC_BASE_URL"

    def __init__(
        self,
        model: str,
        *,
        client: anthropic.AsyncAnthropic | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclasses, never mutated
        timeouts: Timeouts = Timeouts(),  # noqa: B008
        max_tokens: int = 4096,
        thinking: dict[str, Any] | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.thinking = thinking
        super().__init__(
            model,
            client=client,
            base_url=base_url,
            api_key=api_key,
            retry=retry,
            timeouts=timeouts,
            max_event_bytes=max_event_bytes,
        )

    def __repr__(self) -> str:
        return f"AnthropicModel({self.model!r}, base_url={str(self.client.base_url)!r})"

    def request_options(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of ``POST /v1/messages`` but its ``messages``."""
        settings = request.settings
        options: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_tokens or self.max_tokens,
            "stream": True,
        }
        if request.system:
            options["system"] = request.system
        if request.tools:
            options["tools"] = convert_tools(request.tools)
        if self.thinking is not None:
            options["thinking"] = self.thinking
        if settings.temperature is not None:
            options["temperature"] = settings.temperature
        return options

    def output_options(self, options: dict[str, Any], output: OutputSpec) -> dict[str, Any]:
        """Tool forcing: ``tool_choice: any`` makes the model end with a tool call, so the
        final-answer tool is its answer (tools it needs first stay callable). Extended thinking
        refuses a forced tool choice: with ``thinking`` on, the choice stays the model's, and an
        answer in plain text is validated as it is (or sent back)."""
        if output.mode != "tool" or self.thinking is not None:
            return options
        return {**options, "tool_choice": {"type": "any"}}

    def conversion(self, request: ModelRequest) -> AnthropicHistory:
        return ANTHROPIC_HISTORY

    def _translate(self, payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
        return translate_stream(payloads)


# -- the stream -----------------------------------------------------------------------------------


# Kinds of open content blocks, by the block's stream index.
_TEXT = "text"
_THINKING = "thinking"
_REDACTED = "redacted_thinking"
_TOOL = "tool_use"
_IGNORED = "ignored"  # server tool use, search results, anything newer than this module

_NOTHING: tuple[StreamEvent, ...] = ()
_PARAGRAPH = TextDelta(text="\n\n")


def translate_stream(payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
    """Map Anthropic's stream payloads (parsed JSON) to `StreamEvent`s (`StreamTranslation`).

    Raises `ModelError` for an event that breaks the protocol, or a body that ends before the
    server stated the answer's end. Cancellation: safe at every await (it only reads
    ``payloads``).
    """
    return translate(payloads, StreamTranslation())


class StreamTranslation:
    """One response's Anthropic stream payloads as `StreamEvent`s, one payload at a time.

    A dictionary lookup and a few item reads per event; nothing is accumulated but the signature
    of an open thinking block, the usage totals and the tool-use ids (one repeated within the
    message is made unique, so every call runs and is answered). Blocks of unknown types are
    ignored with their deltas; text blocks split by such blocks (a server tool's call and
    result) are joined with a blank line. `feed` raises `MalformedStream` for an event that
    breaks the protocol.
    """

    __slots__ = (
        "_blocks",
        "_gap",
        "_signatures",
        "_stopped",
        "_text_seen",
        "_totals",
        "complete",
    )

    def __init__(self) -> None:
        self._blocks: dict[int, str] = {}  # open content blocks: index -> kind
        self._signatures: dict[int, str] = {}
        self._totals = UsageTotals()
        self._text_seen = self._gap = False  # some text was sent; an ignored block came after
        self._stopped = False  # message_stop came: nothing after it counts
        #: The server stated the end: ``message_stop``, or a ``stop_reason``.
        self.complete = False

    def feed(self, payload: Any) -> Sequence[StreamEvent]:
        """The events of one payload (see the class docstring)."""
        if self._stopped:
            return _NOTHING  # the rest of the body is read (the connection is reused), not used
        try:
            return self._events(payload)
        except (_MalformedEvent, AttributeError, KeyError, TypeError, ValueError) as exc:
            kind = payload.get("type") if isinstance(payload, dict) else None
            what = f"a {kind!r} event" if isinstance(kind, str) else f"event {payload!r:.80}"
            raise MalformedStream(f"{PROVIDER} sent a malformed stream: {what}: {exc!r}") from exc

    def finish(self) -> Sequence[StreamEvent]:
        """The body ended: nothing is owed if the server stated the end; else it was cut."""
        if not self.complete:
            raise ModelError(
                f"{PROVIDER}: the stream ended before message_stop (and before any "
                "stop_reason): it was cut off",
                retryable=True,
            )
        return _NOTHING

    def _events(self, payload: Any) -> Sequence[StreamEvent]:
        kind = payload["type"]
        blocks = self._blocks
        if kind == "content_block_delta":
            index = payload["index"]
            block = blocks.get(index)
            delta = payload["delta"]
            if block == _TEXT:
                if delta["type"] == "text_delta" and (text := delta["text"]):
                    self._text_seen = True
                    if self._gap:
                        self._gap = False
                        return (_PARAGRAPH, TextDelta(text=text))
                    return (TextDelta(text=text),)
            elif block == _TOOL:
                if delta["type"] == "input_json_delta" and (arguments := delta["partial_json"]):
                    return (ToolCallDelta(index=index, arguments=arguments),)
            elif block == _THINKING:
                delta_type = delta["type"]
                if delta_type == "thinking_delta":
                    if thinking := delta["thinking"]:
                        return (ReasoningDelta(text=thinking),)
                elif delta_type == "signature_delta":
                    signatures = self._signatures
                    signatures[index] = signatures.get(index, "") + delta["signature"]
            elif block is None:
                raise _MalformedEvent(f"a delta for content block {index}, which is not open")
            return _NOTHING
        if kind == "content_block_start":
            index = payload["index"]
            if not isinstance(index, int) or index in blocks:
                raise _MalformedEvent(f"content block {index!r} started twice or unnumbered")
            started = _block_start(index, payload["content_block"], blocks, self._signatures)
            if blocks[index] == _IGNORED:
                self._gap = self._text_seen
            events: list[StreamEvent] = []
            for event in started:
                if self._gap and isinstance(event, TextDelta):
                    self._gap = False
                    events.append(_PARAGRAPH)
                events.append(event)
            return events
        if kind == "content_block_stop":
            index = payload["index"]
            block = blocks.pop(index, None)
            if block == _TOOL:
                return (ToolCallEnd(index=index),)
            if block == _THINKING:
                return (ReasoningEnd(signature=self._signatures.pop(index, None) or None),)
            if block == _REDACTED:
                return (ReasoningEnd(),)
            if block is None:
                raise _MalformedEvent(f"the end of content block {index}, which is not open")
            return _NOTHING
        if kind == "message_delta":
            out: list[StreamEvent] = []
            reason = payload["delta"].get("stop_reason")
            if reason:
                self.complete = True
                out.append(StopReason(reason=_STOP_REASONS.get(reason, reason)))
            if update := _update(self._totals, payload.get("usage")):
                out.append(update)
            return out
        if kind == "message_start":
            update = _update(self._totals, payload["message"].get("usage"))
            return (update,) if update else _NOTHING
        if kind == "message_stop":
            self._stopped = self.complete = True
            return _NOTHING
        if kind == "message" and not blocks:  # a whole Message: the server did not stream
            whole = _whole_message(payload, self._totals)
            self._stopped = self.complete = True
            return whole
        return _NOTHING  # ping and event types newer than this module carry nothing for us


class _MalformedEvent(ValueError):
    """An event that breaks the protocol (a delta for a block that was never started, …)."""


def _whole_message(message: dict[str, Any], totals: UsageTotals) -> list[StreamEvent]:
    """The events of a complete (non-streamed) Message: what its stream would have said."""
    events: list[StreamEvent] = []
    if update := _update(totals, message.get("usage")):
        events.append(update)
    blocks: dict[int, str] = {}
    signatures: dict[int, str] = {}
    for index, block in enumerate(message.get("content") or ()):
        events.extend(_block_start(index, block, blocks, signatures))
        kind = blocks.pop(index)
        if kind == _TOOL:
            events.append(ToolCallEnd(index=index))
        elif kind == _THINKING:
            events.append(ReasoningEnd(signature=signatures.pop(index, None) or None))
        elif kind == _REDACTED:
            events.append(ReasoningEnd())
    if reason := message.get("stop_reason"):
        events.append(StopReason(reason=_STOP_REASONS.get(reason, reason)))
    return events


def _block_start(
    index: int,
    block: dict[str, Any],
    blocks: dict[int, str],
    signatures: dict[int, str],
) -> list[StreamEvent]:
    """Open block ``index``; the events its start carries (streamed blocks start empty)."""
    block_type = block["type"]
    if block_type == "text":
        blocks[index] = _TEXT
        return [TextDelta(text=text)] if (text := block.get("text")) else []
    if block_type == "tool_use":
        blocks[index] = _TOOL
        out: list[StreamEvent] = [
            ToolCallStart(index=index, call_id=given_call_id(block.get("id")), name=block["name"])
        ]
        if arguments := block.get("input"):  # streamed calls start with {}, then deltas
            out.append(ToolCallDelta(index=index, arguments=json.dumps(arguments)))
        return out
    if block_type == "thinking":
        blocks[index] = _THINKING
        if signature := block.get("signature"):
            signatures[index] = signature
        out = [ReasoningStart(provider=PROVIDER)]
        if thinking := block.get("thinking"):
            out.append(ReasoningDelta(text=thinking))
        return out
    if block_type == "redacted_thinking":
        blocks[index] = _REDACTED
        return [ReasoningStart(provider=PROVIDER, redacted_data=block["data"])]
    blocks[index] = _IGNORED
    return []


def _update(totals: UsageTotals, usage: dict[str, Any] | None) -> UsageUpdate | None:
    """Anthropic's running totals as what they add (`UsageTotals`). ``input_tokens`` counts
    cached prompt tokens too (as OpenAI's do); a count the server never gave stays unknown."""
    if not usage:
        return None
    prompt_parts = [
        token_count(usage.get(key))
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ]
    known = [part for part in prompt_parts if part is not None]
    details = usage.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return totals.update(
        Usage(
            input_tokens=sum(known) if known else None,  # None: a delta that repeats no input
            output_tokens=token_count(usage.get("output_tokens")),
            reasoning_tokens=token_count(thinking),
            cache_read_tokens=prompt_parts[1],
        )
    )


# -- the request ----------------------------------------------------------------------------------


def convert_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tool definitions in the Messages API's shape."""
    return [
        {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}
        for spec in tools
    ]


@dataclass(eq=False)
class _AssistantTurn:
    """One assistant message, collected from consecutive assistant-side items."""

    reasoning: list[dict[str, Any]] = field(default_factory=list)
    texts: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def content(self) -> list[dict[str, Any]]:
        return [*self.reasoning, *self.texts, *self.calls]


def convert_history(history: Sequence[Item]) -> list[dict[str, Any]]:
    """The Messages API ``messages`` for a repaired ``history`` (see `AnthropicHistory`)."""
    return convert_all(history, ANTHROPIC_HISTORY)


class AnthropicHistory:
    """The Messages API's `HistoryConversion`: a history repaired by `history.repair`.

    An assistant message and the tool calls after it become one assistant message; the results,
    user messages and notes after it one user message, results first (repair puts them right
    after their calls). Items that would send nothing (a blank note, an assistant message with
    only unsigned thinking) are left out, and what they separated merges: assistant messages
    with nothing said in between become one, thinking first. A history that starts with the
    model gets a first user message (`CONVERSATION_START`).
    """

    def groups(self, history: Sequence[Item], start: int = 0) -> Iterator[tuple[int, Group]]:
        return alternating_groups(history, start, _says_something)

    def convert(self, group: Group) -> list[dict[str, Any]]:
        if not isinstance(group[0], AssistantMessage | ToolCall):
            return [{"role": "user", "content": [b for item in group for b in _user_blocks(item)]}]
        turn = _AssistantTurn()
        for item in group:
            if isinstance(item, ToolCall):
                turn.calls.append(_tool_use(item))
            elif isinstance(item, AssistantMessage):
                _add_assistant_parts(turn, item)
        return [{"role": "assistant", "content": turn.content()}]

    def opening(self, first: Group | None) -> list[dict[str, Any]]:
        if first and isinstance(first[0], AssistantMessage | ToolCall):
            return [{"role": "user", "content": [{"type": "text", "text": CONVERSATION_START}]}]
        return []


ANTHROPIC_HISTORY = AnthropicHistory()


def _says_something(item: Item) -> bool:
    """True if an assistant-side item sends a block: a call, text, or signed thinking."""
    if isinstance(item, ToolCall):
        return True
    assert isinstance(item, AssistantMessage)
    return any(
        (isinstance(part, TextPart) and bool(part.text.strip()))
        or (
            isinstance(part, ReasoningPart)
            and part.provider == PROVIDER
            and bool(part.redacted_data or part.signature)
        )
        for part in item.parts
    )


def _user_blocks(item: Item) -> list[dict[str, Any]]:
    """An item's user content blocks: a user message's attachments follow its text (``image``
    and ``document`` blocks, by ``base64`` or ``url`` source)."""
    first = _user_block(item)
    if not isinstance(item, UserMessage) or not item.parts:
        return [first]
    blocks = [first]
    for part in item.parts:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
            continue
        kind = "image" if isinstance(part, ImagePart) else "document"
        if part.url is not None:
            source: dict[str, Any] = {"type": "url", "url": part.url}
        else:
            data = base64_data(part)
            source = {"type": "base64", "media_type": part.media_type, "data": data}
        block: dict[str, Any] = {"type": kind, "source": source}
        if isinstance(part, DocumentPart) and part.name:
            block["title"] = part.name
        blocks.append(block)
    return blocks


def _user_block(item: Item) -> dict[str, Any]:
    if isinstance(item, ToolResult):
        return _tool_result(item)
    assert isinstance(item, UserMessage | Note)
    return {"type": "text", "text": item.text if item.text.strip() else EMPTY_USER_TEXT}


def _add_assistant_parts(turn: _AssistantTurn, message: AssistantMessage) -> None:
    for part in message.parts:
        if isinstance(part, TextPart):
            text = part.text.rstrip()
            if text:
                turn.texts.append({"type": "text", "text": text})
        elif isinstance(part, ReasoningPart) and part.provider == PROVIDER:
            if part.redacted_data:
                turn.reasoning.append({"type": "redacted_thinking", "data": part.redacted_data})
            elif part.signature:
                turn.reasoning.append(
                    {"type": "thinking", "thinking": part.text, "signature": part.signature}
                )
            # Unsigned thinking (cut off before its signature arrived) would be rejected.


def _tool_use(call: ToolCall) -> dict[str, Any]:
    arguments = call.arguments if call.arguments is not None else {}
    return {
        "type": "tool_use",
        "id": _tool_use_id(call.call_id),
        "name": call.name,
        "input": arguments,
    }


def _tool_use_id(call_id: str) -> str:
    """``call_id`` in the characters the API allows; an id that needs changing gets a digest of
    the original, so distinct ids stay distinct (repair made them unique)."""
    if _SAFE_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:12]
    return f"{_UNSAFE_ID_CHARS.sub('_', call_id) or 'call'}_{digest}"


def _tool_result(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_use_id(result.call_id)}
    if result.content.strip():
        block["content"] = result.content
    if result.status != "ok":
        block["is_error"] = True
    return block
