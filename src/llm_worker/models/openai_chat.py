"""OpenAI Chat Completions — and every server that speaks it (Ollama, vLLM, llama.cpp, LM Studio,
OpenRouter, Groq, …) — through the official ``openai`` SDK.

This module only translates: the worker's history into ``messages`` (`to_messages`), tool specs
into ``tools`` (`to_tools`), and the stream's chunks into `StreamEvent`s (`ChunkConverter`). The
SDK builds, authenticates and sends the request and raises its typed HTTP errors; the streamed
body is read by `SSEResponseStream`, and opening, retrying, timeouts and closing are
`provider_stream`'s job (``_http.py``).

Invariants:
* `to_messages` is pure and total: for any history the worker can produce — after any kind of
  interruption — it returns messages the API accepts: every assistant ``tool_calls`` entry is
  answered by a ``tool`` message before the next user or assistant message (a synthetic answer if
  the history lacks one; a result whose call is unknown is dropped), and no assistant message is
  sent with neither content nor tool calls. Reasoning is not sent: Chat Completions has no field
  for it.
* `ChunkConverter.feed` never awaits and validates nothing beyond building our own event; chunks
  are plain parsed JSON (no SDK object per chunk); unknown fields and ``choices: []`` chunks are
  ignored, and reasoning deltas of compatible servers (``reasoning`` / ``reasoning_content``)
  become `ReasoningDelta`s. A tool call is announced (`ToolCallStart`) once its id and name are
  known, and ended (`ToolCallEnd`) only when a ``finish_reason`` arrives, so a stream cut short
  leaves its calls incomplete (never executed).
* Refusals (``delta.refusal``) are streamed as visible text — that *is* what the model said to
  the user, and it is sent back as the assistant's content — and the stop reason becomes
  ``"refusal"``.
* Usage is reported as increments: servers that repeat cumulative usage on several chunks are
  not double counted.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.shared_params import FunctionDefinition

from ..events import (
    ReasoningDelta,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)
from ..items import (
    AssistantMessage,
    Item,
    Note,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from ..tools import ToolSpec
from ._base import ModelRequest
from ._http import (
    MissingCredentials,
    RetryPolicy,
    SSEResponseStream,
    Timeouts,
    provider_stream,
    shared_ssl_context,
)

__all__ = ["STOP_REASONS", "ChunkConverter", "OpenAIChatModel", "to_messages", "to_tools"]

#: ``finish_reason`` → the worker's stop reason; anything else passes through unchanged.
STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}

_NO_RESULT = "No result: the call was never answered."
_NOTHING: tuple[StreamEvent, ...] = ()
_EMPTY: dict[str, Any] = {}


class OpenAIChatModel:
    """A `Model` for the Chat Completions API (``POST /chat/completions``, streamed).

    The key comes from ``api_key`` or ``OPENAI_API_KEY``, the endpoint from ``base_url`` or
    ``OPENAI_BASE_URL`` (the SDK's own defaults). The client is created with ``max_retries=0``:
    `provider_stream` retries instead, so that back-off is a cancellation point of the run,
    every retry is reported as a `Retrying` event, and a request is never retried twice over (SDK
    retries nested in ours). A ``client`` you pass is used as it is (its own retry setting
    included) and is not closed by `aclose`.

    Cancellation: ``stream()`` does no I/O; everything happens while iterating, and leaving the
    ``async with`` closes the HTTP response (shielded, bounded) so the connection is released.
    """

    def __init__(
        self,
        model: str,
        *,
        client: openai.AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        provider: str = "openai",
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclass, safe to share
        timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen dataclass, safe to share
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.provider = provider
        self.retry = retry
        self.timeouts = timeouts
        self.extra_body = dict(extra_body) if extra_body else None
        self._owns_client = client is None
        if client is None:
            key = api_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                raise MissingCredentials(
                    "OPENAI_API_KEY is not set; set it or pass api_key=... (local servers such "
                    "as Ollama accept any non-empty key)"
                )
            client = openai.AsyncOpenAI(
                api_key=key,
                base_url=base_url,
                max_retries=0,
                timeout=timeouts.for_httpx(),
                http_client=openai.DefaultAsyncHttpxClient(
                    verify=shared_ssl_context(), timeout=timeouts.for_httpx()
                ),
            )
        self.client = client

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.model!r}, provider={self.provider!r})"

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream one turn (see `Model.stream`); the request body is built now, sent lazily.

        The SDK builds and sends the request and raises its typed errors for an HTTP error
        status; the body is read by `SSEResponseStream` rather than the SDK's ``AsyncStream``
        (which leaves its readers to the garbage collector and costs ~75 µs per chunk).
        """
        params = self.request_params(request)
        create = self.client.chat.completions.with_raw_response.create

        async def open_stream() -> SSEResponseStream:
            raw = await create(**params)  # returns once the response headers arrived
            return SSEResponseStream(raw.http_response)

        return provider_stream(
            open_stream,
            _convert,
            provider=self.provider,
            retry=self.retry,
            timeouts=self.timeouts,
        )

    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments for ``chat.completions.create`` (the JSON body, mostly)."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": to_messages(request.history, request.system),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = to_tools(request.tools)
        settings = request.settings
        if settings.max_tokens is not None:
            params["max_tokens"] = settings.max_tokens
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    async def aclose(self) -> None:
        """Close the HTTP client if this model created it (a client you passed stays open)."""
        if self._owns_client:
            await self.client.close()


# -- request -----------------------------------------------------------------------------------


def to_tools(specs: Iterable[ToolSpec]) -> list[ChatCompletionFunctionToolParam]:
    """Tool specs as Chat Completions ``tools`` (``strict`` only where the spec asks for it)."""
    tools: list[ChatCompletionFunctionToolParam] = []
    for spec in specs:
        function: FunctionDefinition = {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        }
        if spec.strict:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    return tools


def to_messages(
    history: Sequence[Item], system: str | None = None
) -> list[ChatCompletionMessageParam]:
    """The history as Chat Completions ``messages``, valid after any interruption.

    An `AssistantMessage` and the `ToolCall`s right after it become one assistant message (calls
    with no message before them get one with ``content: null``); an interrupted message is sent
    as what was said; `Note`s are user messages; reasoning is dropped. Calls left unanswered get a
    synthetic ``tool`` message, results for unknown calls are dropped, and an assistant message
    with neither text nor calls (a turn cut off before it said anything) is left out.
    """
    messages: list[ChatCompletionMessageParam] = []
    if system:
        messages.append({"role": "system", "content": system})
    current: ChatCompletionAssistantMessageParam | None = None  # the one calls attach to
    open_calls: list[str] = []  # ids of ``current``'s calls not answered yet

    def close_turn() -> None:
        nonlocal current
        for call_id in open_calls:
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _NO_RESULT})
        open_calls.clear()
        current = None

    for item in history:
        if isinstance(item, ToolCall):
            if current is None or (current.get("tool_calls") and not open_calls):
                close_turn()  # a call after results starts a new assistant message
                current = {"role": "assistant", "content": None}
                messages.append(current)
            calls = cast(
                list[ChatCompletionMessageFunctionToolCallParam],
                current.setdefault("tool_calls", []),
            )
            calls.append(
                {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": _arguments(item)},
                }
            )
            open_calls.append(item.call_id)
        elif isinstance(item, ToolResult):
            if item.call_id in open_calls:
                open_calls.remove(item.call_id)
                messages.append(
                    {"role": "tool", "tool_call_id": item.call_id, "content": item.content}
                )
            # else: a result for no call of this turn; the API would reject it
        else:
            close_turn()
            if isinstance(item, AssistantMessage):
                current = {"role": "assistant", "content": item.text or None}
                messages.append(current)
            elif isinstance(item, UserMessage | Note):
                messages.append({"role": "user", "content": item.text})
    close_turn()
    return [
        m for m in messages if m["role"] != "assistant" or m.get("content") or m.get("tool_calls")
    ]


def _arguments(call: ToolCall) -> str:
    """The call's raw arguments if they are a JSON object, else ``"{}"`` (the API wants JSON)."""
    if call.arguments is not None:
        return call.raw_arguments or "{}"
    try:
        parsed = json.loads(call.raw_arguments)
    except ValueError:
        return "{}"
    return call.raw_arguments if isinstance(parsed, dict) else "{}"


# -- stream ------------------------------------------------------------------------------------


async def _convert(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[StreamEvent]:
    feed = ChunkConverter().feed
    async for chunk in chunks:
        for event in feed(chunk):
            yield event


class ChunkConverter:
    """Turns Chat Completions stream chunks (parsed JSON objects) into `StreamEvent`s.

    One instance per response. `feed` returns the events of one chunk; any field may be missing,
    null or unknown. It keeps only what a chunk cannot tell on its own: which tool-call indexes are
    open (or waiting for their name), the last usage, whether the model refused.
    """

    __slots__ = ("_latest", "_open", "_pending", "_refused", "_usage")

    def __init__(self) -> None:
        self._open: dict[int, str] = {}  # stream index → call id, for calls started, not ended
        self._pending: dict[int, list[Any]] = {}  # index → [id, name, args] until the name comes
        self._usage = Usage()
        self._refused = False
        self._latest = -1  # the index of the latest call delta

    def feed(self, chunk: dict[str, Any]) -> Sequence[StreamEvent]:
        """The events in ``chunk`` (most often a single text delta), in stream order."""
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if not choices:
            return self._usage_update(usage) if usage else _NOTHING
        choice = choices[0]
        delta = choice.get("delta") or _EMPTY
        content = delta.get("content")
        finish = choice.get("finish_reason")
        if content and len(delta) == 1 and not finish and not usage:
            return (TextDelta(text=content),)  # the hot path: a plain text chunk
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if reasoning:
            events.append(ReasoningDelta(text=reasoning))
        if content:
            events.append(TextDelta(text=content))
        refusal = delta.get("refusal")
        if refusal:
            self._refused = True
            events.append(TextDelta(text=refusal))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            self._tool_calls(tool_calls, events)
        if finish:
            events.extend(ToolCallEnd(index=index) for index in self._open)
            self._open.clear()
            reason = STOP_REASONS.get(finish, finish)
            if self._refused and reason == "end_turn":
                reason = "refusal"
            events.append(StopReason(reason=reason))
        if usage:
            events.extend(self._usage_update(usage))
        return events

    def _tool_calls(self, deltas: Iterable[dict[str, Any]], events: list[StreamEvent]) -> None:
        for delta in deltas:
            index = delta.get("index")
            if type(index) is not int:
                index = self._index_of(delta.get("id"))
            self._latest = index
            function = delta.get("function") or _EMPTY
            arguments = function.get("arguments")
            if index in self._open:
                if arguments:
                    events.append(ToolCallDelta(index=index, arguments=arguments))
                continue
            pending = self._pending.setdefault(index, [None, None, ""])
            pending[0] = pending[0] or delta.get("id")
            pending[1] = pending[1] or function.get("name")
            if arguments:
                pending[2] += arguments
            if not pending[1]:
                continue  # wait for the name (some servers send the id first)
            del self._pending[index]
            call_id = pending[0] or f"call_{uuid.uuid4().hex[:24]}"
            self._open[index] = call_id
            events.append(ToolCallStart(index=index, call_id=call_id, name=pending[1]))
            if pending[2]:
                events.append(ToolCallDelta(index=index, arguments=pending[2]))

    def _index_of(self, call_id: str | None) -> int:
        """An index for a call delta that came without one (lax servers): a known id keeps its
        index, a new id is a new call, no id continues the latest call."""
        if call_id is None:
            return max(self._latest, 0)
        for index, known in self._open.items():
            if known == call_id:
                return index
        for index, pending in self._pending.items():
            if pending[0] == call_id:
                return index
        return max(self._latest, *self._open, *self._pending) + 1

    def _usage_update(self, usage: dict[str, Any]) -> list[StreamEvent]:
        """A `UsageUpdate` with what ``usage`` adds to the last usage seen (servers that repeat
        cumulative usage are not double counted)."""
        prompt_details = usage.get("prompt_tokens_details") or _EMPTY
        completion_details = usage.get("completion_tokens_details") or _EMPTY
        total = Usage(
            input_tokens=usage.get("prompt_tokens") or 0,
            output_tokens=usage.get("completion_tokens") or 0,
            reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
            cache_read_tokens=prompt_details.get("cached_tokens") or 0,
        )
        previous, self._usage = self._usage, total
        increment = Usage(
            input_tokens=total.input_tokens - previous.input_tokens,
            output_tokens=total.output_tokens - previous.output_tokens,
            reasoning_tokens=total.reasoning_tokens - previous.reasoning_tokens,
            cache_read_tokens=total.cache_read_tokens - previous.cache_read_tokens,
        )
        return [UsageUpdate(usage=increment)]
