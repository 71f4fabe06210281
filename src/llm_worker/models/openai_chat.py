"""OpenAI Chat Completions — and every server that speaks it (Ollama, vLLM, llama.cpp, LM Studio,
OpenRouter, Groq, …) — through the official ``openai`` SDK.

This module only translates: the worker's history into ``messages`` (`convert_history`), tool
specs into ``tools`` (`convert_tools`), and the stream's chunks into `StreamEvent`s
(`StreamTranslation`). The SDK builds, authenticates and sends the request and raises its typed
HTTP errors; the client, reading SSE, opening, retrying, timeouts and closing are the shared
skeleton's (`HTTPModel`, ``_client.py``).

Invariants:
* `convert_history` is pure and only translates: given a repaired history (`history.repair`,
  applied by the worker before every request) it returns messages the API accepts; no assistant
  message is sent with neither content nor tool calls. Reasoning is not sent: Chat Completions
  has no field for it.
* `StreamTranslation.feed` never awaits and validates nothing beyond building our own event; chunks
  are plain parsed JSON (no SDK object per chunk); unknown fields and ``choices: []`` / ``null``
  chunks are ignored (Azure's prompt-filter chunk, usage-only chunks), and reasoning deltas of
  compatible servers (``reasoning`` / ``reasoning_content``) become `ReasoningDelta`s. Tool-call
  deltas are assembled however compatible servers number and split them (see `StreamTranslation`).
  A tool call is announced (`ToolCallStart`) once its name is known, and ended (`ToolCallEnd`)
  only when the response is complete — its ``finish_reason`` arrived.
* A stream is complete when, and only when, a ``finish_reason`` came (``[DONE]`` after it is
  optional: some servers leave it out). ``[DONE]`` alone is not enough: llama.cpp's server ends
  an answer that a newer request cut off with ``[DONE]`` and no ``finish_reason``. A body that
  ends (with or without ``[DONE]``) before a ``finish_reason`` is a retryable `ModelError` —
  retried if nothing had streamed, else the worker keeps the partial text as interrupted and
  the calls cut off stay incomplete (never executed). Once a ``finish_reason`` came, a
  connection that breaks is no error: the answer is whole. A whole ``chat.completion`` object
  (a server that ignored ``stream: true``) is read as one chunk.
* Refusals (``delta.refusal``) are streamed as visible text — that *is* what the model said to
  the user, and it is sent back as the assistant's content — and the stop reason becomes
  ``"refusal"``.
* Usage is reported as increments: servers that repeat cumulative usage on several chunks are
  not double counted; a count the server does not give is unknown (None), never zero.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import openai
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.shared_params import FunctionDefinition

from ..errors import ModelError
from ..events import (
    ReasoningDelta,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from ..items import (
    AssistantMessage,
    ImagePart,
    Item,
    Note,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from ..output import OutputSpec
from ..tools import ToolSpec
from ._attachments import data_url, file_name, refuse
from ._base import ModelRequest
from ._client import HTTPModel
from ._request import Group, convert_all, group_turns
from ._sse import MAX_EVENT_BYTES, SSE_DONE
from ._translate import UsageTotals, token_count, tool_arguments, translate
from ._transport import RetryPolicy, Timeouts

__all__ = [
    "STOP_REASONS",
    "OpenAIChatModel",
    "StreamTranslation",
    "convert_history",
    "convert_tools",
    "translate_stream",
]

#: ``finish_reason`` → the worker's stop reason; anything else passes through unchanged.
STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}

_NOTHING: tuple[StreamEvent, ...] = ()
_EMPTY: dict[str, Any] = {}


class OpenAIChatModel(HTTPModel):
    """A `Model` for the Chat Completions API (``POST /chat/completions``, streamed).

    The key comes from ``api_key`` or ``OPENAI_API_KEY``, the endpoint from ``base_url`` or
    ``OPENAI_BASE_URL`` (the SDK's own defaults). Requests go out with the SDK's retries off
    (``max_retries=0``, on a ``client`` you pass too; see `HTTPModel`): `provider_stream`
    retries instead. A ``client`` you pass is not closed by `aclose`.

    ``max_event_bytes`` caps one stream event, one line of it, or a whole JSON body
    (`EventTooLarge`). Error texts never carry the client's key (`Redactor`); a client built
    here also knows an HTTP error whose body was cut from an unreachable server (`note_status`).

    Cancellation: ``stream()`` does no I/O; everything happens while iterating, and leaving the
    ``async with`` closes the HTTP response (shielded, bounded) so the connection is released.
    """

    _sse_options: ClassVar[dict[str, Any]] = {"report_done": True}
    path = "/chat/completions"
    history_key = "messages"
    stream_class = openai.AsyncStream
    sdk_client = openai.AsyncOpenAI
    sdk_http_client = openai.DefaultAsyncHttpxClient
    key_variable = "OPENAI_API_KEY"
    base_url_variable = "OPENAI_BASE_URL"

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
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.provider = provider
        self.extra_body = dict(extra_body) if extra_body else None
        super().__init__(
            model,
            client=client,
            base_url=base_url,
            api_key=api_key,
            retry=retry,
            timeouts=timeouts,
            max_event_bytes=max_event_bytes,
        )

    def _missing_key(self) -> str:
        return (
            "OPENAI_API_KEY is not set; set it or pass api_key=... (local servers such as "
            "Ollama accept any non-empty key)"
        )

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.model!r}, provider={self.provider!r})"

    def request_options(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` but its ``messages``."""
        options: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            options["tools"] = convert_tools(request.tools)
        settings = request.settings
        if settings.max_tokens is not None:
            options["max_tokens"] = settings.max_tokens
        if settings.temperature is not None:
            options["temperature"] = settings.temperature
        if self.extra_body:
            options.update(self.extra_body)
        return options

    native_output = True

    def output_options(self, options: dict[str, Any], output: OutputSpec) -> dict[str, Any]:
        """``response_format: json_schema`` (``strict`` when the schema allows it)."""
        if output.mode != "native":
            return options
        schema: dict[str, Any] = {"name": output.name, "schema": output.schema}
        if output.description:
            schema["description"] = output.description
        schema["strict"] = output.strict
        return {**options, "response_format": {"type": "json_schema", "json_schema": schema}}

    def conversion(self, request: ModelRequest) -> ChatHistory:
        return ChatHistory(request.system)

    def _translate(self, payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
        return translate_stream(payloads)


# -- request -----------------------------------------------------------------------------------


def convert_tools(specs: Iterable[ToolSpec]) -> list[ChatCompletionFunctionToolParam]:
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


def convert_history(
    history: Sequence[Item], system: str | None = None
) -> list[ChatCompletionMessageParam]:
    """The (repaired) history as Chat Completions ``messages`` (see `ChatHistory`)."""
    return cast(list[ChatCompletionMessageParam], convert_all(history, ChatHistory(system)))


@dataclass(frozen=True)
class ChatHistory:
    """Chat Completions' `HistoryConversion`: a history repaired by `history.repair`.

    An `AssistantMessage` and the `ToolCall`s right after it become one assistant message (calls
    with no message before them get one with ``content: null``); an interrupted message is sent
    as what was said; results are ``tool`` messages; `Note`s are user messages; reasoning is
    dropped. An assistant message with neither text nor calls (a turn cut off before it said
    anything) is left out. The system prompt is the first message.
    """

    system: str | None = None

    def groups(self, history: Sequence[Item], start: int = 0) -> Iterator[tuple[int, Group]]:
        return group_turns(history, start, AssistantMessage | ToolCall)

    def convert(self, group: Group) -> list[dict[str, Any]]:
        first = group[0]
        if isinstance(first, ToolResult):
            return [{"role": "tool", "tool_call_id": first.call_id, "content": first.content}]
        if isinstance(first, UserMessage) and first.parts:
            return [{"role": "user", "content": [_text_part(first.text), *_user_parts(first)]}]
        if isinstance(first, UserMessage | Note):
            return [{"role": "user", "content": first.text}]
        text = first.text if isinstance(first, AssistantMessage) else ""
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        calls = [_tool_call(item) for item in group if isinstance(item, ToolCall)]
        if calls:
            message["tool_calls"] = calls
        return [message] if text or calls else []

    def opening(self, first: Group | None) -> list[dict[str, Any]]:
        return [{"role": "system", "content": self.system}] if self.system else []


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _user_parts(message: UserMessage) -> list[dict[str, Any]]:
    """A user message's attachments as content parts: ``image_url`` (a URL or a data URL) and
    ``file`` (a document's bytes as a data URL; Chat Completions takes no file by URL)."""
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            parts.append(_text_part(part.text))
        elif isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": data_url(part)}})
        elif part.url is not None:
            raise refuse("OpenAI Chat Completions", "a document by URL (attach its bytes)")
        else:
            file = {"filename": file_name(part), "file_data": data_url(part)}
            parts.append({"type": "file", "file": file})
    return parts


def _tool_call(call: ToolCall) -> ChatCompletionMessageFunctionToolCallParam:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": tool_arguments(call)},
    }


# -- stream ------------------------------------------------------------------------------------


def translate_stream(payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
    """The events of one response's chunks (see the module invariants on how a stream ends).

    Once a ``finish_reason`` has come the response is complete: a connection that breaks after
    it (before the usage chunk or ``[DONE]``) loses at most the usage, never the answer.
    """
    return translate(payloads, StreamTranslation())


class StreamTranslation:
    """Turns Chat Completions stream chunks (parsed JSON objects) into `StreamEvent`s.

    One instance per response. `feed` returns the events of one chunk; any field may be missing,
    null or unknown; a whole ``chat.completion`` object (a server that ignored ``stream``) is
    read as one chunk whose ``message`` is the delta. It keeps only what a chunk cannot tell on
    its own: which tool calls are open (or waiting for their name), the last usage, whether the
    model refused, whether a ``finish_reason`` came (`complete`), whether ``[DONE]`` came.

    Tool calls get indexes of our own, 0, 1, 2… in order of appearance (the server's when it
    numbers them properly). What compatible servers really send is mapped sensibly:
    * the id, name and ``type`` only on a call's first fragment, or the id first and the name
      later: later fragments continue the call at their index;
    * a whole call in one fragment (Ollama), several calls in one chunk;
    * an index reused for a new call, recognised by its new id (Ollama numbers every call 0);
    * no index at all: a known id continues its call, a new id or a new name (with no id)
      starts a call, a bare fragment continues the latest call; a bare fragment at an index
      never seen continues the latest call too (SGLang numbers a call's first fragment
      differently from the rest);
    * arguments sent as a JSON object rather than a string are serialised; an id missing or
      used twice is left to the timeline, which makes every id in a history unique.
    """

    __slots__ = (
        "_done",
        "_given",
        "_latest",
        "_open",
        "_pending",
        "_refused",
        "_slots",
        "_usage",
        "complete",
    )

    def __init__(self) -> None:
        self._open: dict[int, str] = {}  # our index → call id, for calls started, not ended
        self._pending: dict[int, list[Any]] = {}  # index → [id, name, args] until the name comes
        self._slots: dict[int, int] = {}  # the server's index → ours
        self._given: dict[int, str] = {}  # our index → the id the server gave the call
        self._usage = UsageTotals()
        self._refused = False
        self._latest = -1  # our index of the latest call delta
        self._done = False  # [DONE] came
        #: A ``finish_reason`` arrived: the response is complete even if the stream has no
        #: ``[DONE]`` after it.
        self.complete = False

    def feed(self, chunk: Any) -> Sequence[StreamEvent]:
        """The events in ``chunk`` (most often a single text delta), in stream order."""
        if chunk is SSE_DONE:
            self._done = True
            return _NOTHING
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if not choices:
            return self._usage_update(usage) if usage else _NOTHING
        choice = choices[0]
        delta = choice.get("delta") or choice.get("message") or _EMPTY
        content = delta.get("content")
        finish = choice.get("finish_reason")
        if content and len(delta) == 1 and not finish and not usage:
            return (TextDelta(text=content),)  # the hot path: a plain text chunk
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if reasoning and isinstance(reasoning, str):
            events.append(ReasoningDelta(text=reasoning))
        if content:
            events.append(TextDelta(text=_text(content)))
        refusal = delta.get("refusal")
        if refusal:
            self._refused = True
            events.append(TextDelta(text=_text(refusal)))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            self._tool_calls(tool_calls, events)
        if finish:
            self.complete = True
            events.extend(self._end_calls())
            reason = STOP_REASONS.get(finish, finish)
            if self._refused and reason == "end_turn":
                reason = "refusal"
            events.append(StopReason(reason=reason))
        if usage:
            events.extend(self._usage_update(usage))
        return events

    def finish(self) -> Sequence[StreamEvent]:
        """The body ended: end the calls a server opened after its ``finish_reason``; a body
        that ended before one was cut off (a retryable `ModelError`)."""
        if self.complete:
            return self._end_calls()
        if self._done:
            raise ModelError(
                "the stream ended without a finish reason ([DONE] before any finish_reason): "
                "the server cut the answer off (a request that replaced it, a crash)",
                retryable=True,
            )
        raise ModelError(
            "the stream ended before the model finished (no finish_reason, no [DONE]): the "
            "server or the connection cut it off",
            retryable=True,
        )

    def _end_calls(self) -> list[StreamEvent]:
        """End every open call: the response is complete (its ``finish_reason`` came)."""
        events: list[StreamEvent] = [ToolCallEnd(index=index) for index in self._open]
        self._open.clear()
        return events

    def _tool_calls(self, deltas: Iterable[Any], events: list[StreamEvent]) -> None:
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            function = delta.get("function") or _EMPTY
            given = delta.get("id") or None
            name = function.get("name") or None
            arguments = function.get("arguments")
            if arguments is not None and not isinstance(arguments, str):
                arguments = json.dumps(arguments)  # a server that sends an object
            index = self._slot(delta.get("index"), given, name)
            self._latest = index
            if index in self._open:
                if arguments:
                    events.append(ToolCallDelta(index=index, arguments=arguments))
                continue
            pending = self._pending.setdefault(index, [None, None, ""])
            if pending[0] is None and given is not None:
                pending[0] = self._given[index] = given
            pending[1] = pending[1] or name
            if arguments:
                pending[2] += arguments
            if not pending[1]:
                continue  # wait for the name (some servers send the id first)
            del self._pending[index]
            call_id = pending[0] or ""
            self._open[index] = call_id
            events.append(ToolCallStart(index=index, call_id=call_id, name=pending[1]))
            if pending[2]:
                events.append(ToolCallDelta(index=index, arguments=pending[2]))

    def _slot(self, server_index: Any, given: str | None, name: str | None) -> int:
        """Our index for a call delta (see the class docstring)."""
        if type(server_index) is not int:
            return self._index_of(given, name)
        index = self._slots.get(server_index)
        if index is None:
            if given is None and name is None and self._latest >= 0:
                index = self._latest  # a bare fragment at an index never seen
            else:
                index = self._new_index()
        elif given is not None and self._given.get(index, given) != given:
            index = self._new_index()  # a new call at a reused index
        self._slots[server_index] = index
        return index

    def _index_of(self, given: str | None, name: str | None) -> int:
        """An index for a call delta that came without one (lax servers)."""
        if given is None:
            if self._latest < 0 or (name is not None and self._latest not in self._pending):
                return self._new_index()  # a first call, or a new one (it has a name)
            return self._latest
        for index, known in self._given.items():
            if known == given:
                return index
        return self._new_index()

    def _new_index(self) -> int:
        return max((self._latest, *self._slots.values(), *self._open, *self._pending)) + 1

    def _usage_update(self, usage: dict[str, Any]) -> Sequence[StreamEvent]:
        """A `UsageUpdate` with what ``usage`` adds to the last usage seen (servers that repeat
        cumulative usage are not double counted); a count it leaves out stays unknown."""
        prompt_details = usage.get("prompt_tokens_details") or _EMPTY
        completion_details = usage.get("completion_tokens_details") or _EMPTY
        total = Usage(
            input_tokens=token_count(usage.get("prompt_tokens")),
            output_tokens=token_count(usage.get("completion_tokens")),
            reasoning_tokens=token_count(completion_details.get("reasoning_tokens")),
            cache_read_tokens=token_count(prompt_details.get("cached_tokens")),
        )
        update = self._usage.update(total)
        return _NOTHING if update is None else (update,)


def _text(value: Any) -> str:
    """Content as text: a string, or a list of content parts (``{"type": "text", "text"}``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part.get("text") or "" if isinstance(part, dict) else str(part) for part in value
        )
    return str(value)
