"""The OpenAI Responses API (``POST /v1/responses``, streamed), through the official SDK.

One request in, one stream of normalised events out; nothing else. The worker's history is sent
statelessly every turn (``store=False``), and reasoning comes back as encrypted content that is
carried into the next request, so no server-side state is ever needed.

Invariants:
* `convert_history` is pure and only translates a repaired history (`history.repair`, applied by
  the worker before every request): each call is a ``function_call`` answered by its
  ``function_call_output``; a ``reasoning`` item is sent only when this provider produced it with
  encrypted content, and only if the item it preceded (text or a function call) is sent whole
  after it — reasoning whose follower was cut off is dropped.
* Stream conversion is lean: the body is read by the shared `SSEResponseStream` (plain dicts, no
  per-event SDK model: ``responses.create(stream=True)`` builds one per event, 70–115 µs per text
  delta end to end); a delta costs one dict lookup and one event object. A payload of the wrong
  shape, a ``response.failed`` / ``error`` event (or a bare ``{"error": ...}`` payload), or a stream
  that ends before its terminal event (``response.completed`` / ``incomplete`` / ``failed``, or an
  ``error`` event) is a typed `ModelError` (or `StreamError`), never another exception; after the
  terminal event the rest of the body is read and ignored, and a connection that breaks then is no
  error — the response is whole. Unknown event types are ignored. Whatever a server leaves out is
  taken from where else it says it: arguments only in ``function_call_arguments.done`` or only in
  ``output_item.done``, text or a reasoning summary only in its item's ``done`` event, calls never
  closed by ``output_item.done`` (closed by ``response.completed``), and a whole ``response`` object
  (a server that answered ``application/json`` despite ``stream``).
* Cancellation and clean-up come from the shared skeleton (`HTTPModel`, `provider_stream`): the
  SDK's retries are off for every request (``max_retries=0``, even on a client passed in),
  retries are ours, and the HTTP response is closed in a shielded, bounded block whatever ends
  the stream. This module only translates (`request_params`, `convert_tools`,
  `convert_history`, `StreamTranslation`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import openai

from ..errors import ModelError
from ..events import (
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StopReason,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)
from ..items import (
    AssistantMessage,
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
from ._attachments import data_url, file_name
from ._base import ModelRequest
from ._client import HTTPModel
from ._errors import transient_error
from ._request import Group, convert_all, group_turns
from ._sse import MAX_EVENT_BYTES
from ._translate import (
    MalformedStream,
    given_call_id,
    token_count,
    tool_arguments,
    translate,
)
from ._transport import RetryPolicy, Timeouts

__all__ = [
    "PROVIDER",
    "OpenAIResponsesModel",
    "StreamTranslation",
    "convert_history",
    "convert_tools",
    "is_reasoning_model",
    "translate_stream",
]

PROVIDER = "openai-responses"


#: The ``*.done`` events that repeat a part's whole text, and the field that holds it.
_PART_DONE = {
    "response.output_text.done": "text",
    "response.refusal.done": "refusal",
    "response.reasoning_summary_text.done": "text",
    "response.reasoning_text.done": "text",
}
_INCOMPLETE_REASONS = {"max_output_tokens": "max_tokens", "max_tokens": "max_tokens"}
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


class OpenAIResponsesModel(HTTPModel):
    """A `Model` for the OpenAI Responses API (and servers that speak it).

    ``reasoning`` is sent as the request's ``reasoning`` (e.g. ``{"effort": "low", "summary":
    "auto"}``). Encrypted reasoning is requested (``include=["reasoning.encrypted_content"]``)
    for reasoning models only — o-series, gpt-5 (not gpt-5-chat), codex, gpt-oss — or whenever
    ``reasoning`` is given, because OpenAI rejects it for other models with HTTP 400 ("Encrypted
    content is not supported with this model"); ``include_encrypted_reasoning`` overrides that
    guess. A ``client`` passed in is used as it is, except that our retries replace its own.

    ``max_event_bytes`` caps one stream event, one line of it, or a whole JSON body
    (`EventTooLarge`). Error texts never carry the client's key (`Redactor`); a client built
    here also knows an HTTP error whose body was cut from an unreachable server (`note_status`).

    Cancellation: see `provider_stream` — any await of the stream may be cancelled; the HTTP
    response is then closed (shielded, bounded) and the cancellation propagates.
    """

    provider = PROVIDER
    path = "/responses"
    history_key = "input"
    stream_class = openai.AsyncStream
    sdk_client = openai.AsyncOpenAI
    sdk_http_client = openai.DefaultAsyncHttpxClient
    key_variable = "OPENAI_API_KEY"
    base_url_variable = "OPENAI_BASE_URL"
    # Error events become `StreamError`s that UIs see: `StreamTranslation` reports them.
    _sse_options: ClassVar[dict[str, Any]] = {"raise_errors": False}

    def __init__(
        self,
        model: str,
        *,
        client: openai.AsyncOpenAI | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so sharing is safe
        timeouts: Timeouts = Timeouts(),  # noqa: B008
        reasoning: dict[str, Any] | None = None,
        include_encrypted_reasoning: bool | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.reasoning = dict(reasoning) if reasoning is not None else None
        if include_encrypted_reasoning is None:
            include_encrypted_reasoning = reasoning is not None or is_reasoning_model(model)
        self.include_encrypted_reasoning = include_encrypted_reasoning
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
        return f"OpenAIResponsesModel({self.model!r}, base_url={str(self.client.base_url)!r})"

    def request_options(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of ``POST /responses`` but its ``input``."""
        options: dict[str, Any] = {"model": self.model, "stream": True, "store": False}
        if request.system:
            options["instructions"] = request.system
        if request.tools:
            options["tools"] = convert_tools(request.tools)
        if self.include_encrypted_reasoning:
            options["include"] = ["reasoning.encrypted_content"]
        if self.reasoning is not None:
            options["reasoning"] = self.reasoning
        settings = request.settings
        if settings.max_tokens is not None:
            options["max_output_tokens"] = settings.max_tokens
        if settings.temperature is not None:
            options["temperature"] = settings.temperature
        return options

    native_output = True

    def output_options(self, options: dict[str, Any], output: OutputSpec) -> dict[str, Any]:
        """``text.format: json_schema`` (``strict`` when the schema allows it)."""
        if output.mode != "native":
            return options
        format: dict[str, Any] = {"type": "json_schema", "name": output.name}
        if output.description:
            format["description"] = output.description
        format["schema"] = output.schema
        format["strict"] = output.strict
        text = {**options.get("text", {}), "format": format}
        return {**options, "text": text}

    def conversion(self, request: ModelRequest) -> ResponsesHistory:
        return RESPONSES_HISTORY

    def _translate(self, payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
        return translate_stream(payloads)


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` (its last path segment) names a model family that reasons."""
    name = model.rsplit("/", 1)[-1].lower()
    if name.startswith("gpt-5") and "chat" in name:
        return False
    return name.startswith(("o1", "o3", "o4", "gpt-5", "codex", "gpt-oss"))


def convert_tools(specs: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as the Responses API wants them (flat ``function`` tools)."""
    return [
        {
            "type": "function",
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
            "strict": spec.strict,
        }
        for spec in specs
    ]


# -- history → input ------------------------------------------------------------------------------


def convert_history(history: Sequence[Item]) -> list[dict[str, Any]]:
    """The Responses ``input`` for a repaired ``history`` (see `ResponsesHistory`)."""
    return convert_all(history, RESPONSES_HISTORY)


class ResponsesHistory:
    """The Responses API's `HistoryConversion`: a history repaired by `history.repair`.

    User messages and notes are user messages; an assistant message becomes its (encrypted)
    reasoning items and one assistant message with its text — interrupted text is sent as what
    was said — grouped with the calls after it (whether its reasoning goes depends on them);
    tool calls become ``function_call`` items and results ``function_call_output``s.
    """

    def groups(self, history: Sequence[Item], start: int = 0) -> Iterator[tuple[int, Group]]:
        return group_turns(history, start, AssistantMessage)

    def convert(self, group: Group) -> list[dict[str, Any]]:
        first = group[0]
        if isinstance(first, AssistantMessage):
            calls = [item for item in group if isinstance(item, ToolCall)]
            return [*_assistant_items(first, calls), *map(_function_call, calls)]
        if isinstance(first, ToolCall):
            return [_function_call(first)]
        if isinstance(first, ToolResult):
            return [
                {"type": "function_call_output", "call_id": first.call_id, "output": first.content}
            ]
        if isinstance(first, UserMessage) and first.parts:
            text = {"type": "input_text", "text": first.text}
            return [{"role": "user", "content": [text, *_input_parts(first)]}]
        if isinstance(first, UserMessage | Note):
            return [{"role": "user", "content": first.text}]
        return []

    def opening(self, first: Group | None) -> list[dict[str, Any]]:
        return []


RESPONSES_HISTORY = ResponsesHistory()


def _input_parts(message: UserMessage) -> list[dict[str, Any]]:
    """A user message's attachments as Responses input content: ``input_image`` (a URL or a
    data URL) and ``input_file`` (``file_url``, or the bytes as ``file_data``)."""
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            parts.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ImagePart):
            parts.append({"type": "input_image", "image_url": data_url(part), "detail": "auto"})
        elif part.url is not None:
            parts.append({"type": "input_file", "file_url": part.url})
        else:
            parts.append(
                {"type": "input_file", "filename": file_name(part), "file_data": data_url(part)}
            )
    return parts


def _function_call(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call.call_id,
        "name": call.name,
        "arguments": tool_arguments(call),
    }


def _assistant_items(message: AssistantMessage, calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Reasoning items then the text of one assistant message (its calls come after it).

    A reasoning item must be followed by the item it preceded: the next text part, or, for
    reasoning after the last text, the message's first tool call. It is dropped when that item
    is missing or was cut off: a call whose arguments never finished, or — when no call was cut
    off — the last part of an interrupted message.
    """
    parts = message.parts
    text = "".join(part.text for part in parts if isinstance(part, TextPart))
    # What was open when the stream was cut: a call whose arguments never finished, else
    # (output items stream one after another) maybe the last part.
    cut_call = any(not call.complete for call in calls)
    cut = parts[-1] if message.interrupted and parts and not cut_call else None
    out: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        if not isinstance(part, ReasoningPart) or not _ours(part):
            continue
        rest = parts[index + 1 :]
        follower = next((p for p in rest if isinstance(p, TextPart) and p.text), None)
        # Without text after it, it preceded the first call (or nothing that was kept).
        whole = (follower is not cut) if follower else (bool(calls) and calls[0].complete)
        if whole:
            out.append(_reasoning_item(part))
    if text:
        out.append({"role": "assistant", "content": [{"type": "output_text", "text": text}]})
    return out


def _ours(part: ReasoningPart) -> bool:
    return part.provider == PROVIDER and bool(part.encrypted_content)


def _reasoning_item(part: ReasoningPart) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning"}
    if part.provider_id:
        item["id"] = part.provider_id
    item["summary"] = [{"type": "summary_text", "text": part.text}] if part.text else []
    item["encrypted_content"] = part.encrypted_content
    return item


# -- stream → events ------------------------------------------------------------------------------


def translate_stream(payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
    """Map the decoded SSE payloads (dicts) to normalised `StreamEvent`s (`StreamTranslation`).

    Raises `ModelError` for a payload of the wrong shape or a stream that ends before its
    terminal event. Cancellation: nothing is held here; the caller closes the HTTP stream.
    """
    return translate(payloads, StreamTranslation())


class StreamTranslation:
    """One response's Responses stream payloads as `StreamEvent`s, one payload at a time.

    It remembers what the translation needs between events; a ``call_id`` repeated within the
    response is made unique, so every call runs and is answered. After the terminal event
    (`complete`) every payload is ignored.
    """

    __slots__ = (
        "args_sent",
        "calls",
        "complete",
        "from_done",
        "refused",
        "streamed",
        "summary_parts",
    )

    def __init__(self) -> None:
        self.args_sent: dict[int, int] = {}  # output_index -> argument characters sent
        self.calls = 0
        self.refused = False
        self.streamed = False  # the current text/reasoning item sent a delta
        self.from_done = False  # ... or sent its text by the parts' ``*.done`` events
        self.summary_parts = 0  # summary parts seen in the current reasoning item
        self.complete = False  # completed, incomplete or failed arrived (or an error event)

    def feed(self, data: Any) -> Sequence[StreamEvent]:
        """The events of one payload (the three hot deltas inline: one dict lookup, one event)."""
        if self.complete:
            return ()  # nothing counts after the response's last word
        try:
            kind = data.get("type")
            if kind == "response.output_text.delta":
                self.streamed = True
                return (TextDelta(text=data["delta"]),)
            if kind == "response.function_call_arguments.delta":
                index = data["output_index"]
                delta = data["delta"]
                event = ToolCallDelta(index=index, arguments=delta)
                self.args_sent[index] = self.args_sent.get(index, 0) + len(delta)
                return (event,)
            if (
                kind == "response.reasoning_summary_text.delta"
                or kind == "response.reasoning_text.delta"
            ):
                event_ = ReasoningDelta(text=data["delta"])
                self.streamed = True
                return (event_,)
            return self.handle(kind, data) if kind else self.untyped(data)
        except _MALFORMED as exc:
            raise _malformed(data, exc) from exc

    def finish(self) -> Sequence[StreamEvent]:
        """The body ended: nothing is owed after the terminal event; before it, it was cut."""
        if not self.complete:
            raise ModelError(
                f"{PROVIDER}: the stream ended before the response was complete (no "
                "response.completed, incomplete or failed event): it was cut off",
                retryable=True,
            )
        return ()

    def handle(self, kind: str, data: dict[str, Any]) -> tuple[StreamEvent, ...]:
        """Events for anything but the three hot deltas (handled inline by `feed`)."""
        if kind == "response.output_item.added":
            return self._added(data["output_index"], data["item"])
        if kind == "response.output_item.done":
            return self._done(data["output_index"], data["item"])
        if kind == "response.reasoning_summary_part.added":
            self.summary_parts += 1
            if self.summary_parts > 1:  # keep the summaries apart, as paragraphs
                return (ReasoningDelta(text="\n\n"),)
            return ()
        if kind in _PART_DONE:  # text a server sent only whole, with no deltas before it
            text = data.get(_PART_DONE[kind])
            if self.streamed or not isinstance(text, str) or not text:
                return ()
            self.from_done = True
            if kind == "response.refusal.done":
                self.refused = True
            if kind in ("response.output_text.done", "response.refusal.done"):
                return (TextDelta(text=text),)
            return (ReasoningDelta(text=text),)
        if kind == "response.function_call_arguments.done":
            return self._arguments_done(data["output_index"], data.get("arguments"))
        if kind == "response.refusal.delta":
            self.refused = self.streamed = True
            return (TextDelta(text=data["delta"]),)
        if kind == "response.completed":
            self.complete = True
            response = data["response"]
            reason = "tool_use" if self.calls else "refusal" if self.refused else "end_turn"
            return (*self._close_calls(response), *_usage(response), StopReason(reason=reason))
        if kind == "response.incomplete":
            self.complete = True
            response = data["response"]
            details = response.get("incomplete_details") or {}
            why = details.get("reason") or "incomplete"
            reason = _INCOMPLETE_REASONS.get(why, str(why))
            return (*_usage(response), StopReason(reason=reason))
        if kind == "response.failed":
            self.complete = True
            response = data["response"]
            error = response.get("error") or {}
            return (*_usage(response), _stream_error(error, "the response failed"))
        if kind == "error":
            self.complete = True
            nested = data.get("error")
            error = nested if isinstance(nested, dict) else data
            return (_stream_error(error, "the provider reported an error"),)
        return ()  # created, in_progress, content parts, *.done echoes, unknown types

    def untyped(self, data: dict[str, Any]) -> tuple[StreamEvent, ...]:
        """A payload with no ``type``: a bare error object (compatible servers and proxies),
        or a whole ``response`` object — the events its stream would have carried."""
        error = data.get("error")
        if error:
            self.complete = True
            if not isinstance(error, dict):
                error = {"message": str(error)}
            return (_stream_error(error, "the provider reported an error"),)
        if "output" not in data:
            raise KeyError("type")
        events: list[StreamEvent] = []
        for index, item in enumerate(data["output"] or ()):
            events.extend(self._added(index, item))
            events.extend(self._done(index, item))
        status = data.get("status") or "completed"
        if status not in ("completed", "incomplete", "failed"):
            raise ValueError(f"a whole response whose status is {status!r}")
        events.extend(self.handle(f"response.{status}", {"response": data}))
        return tuple(events)

    def _arguments_done(self, index: int, arguments: Any) -> tuple[StreamEvent, ...]:
        """The whole arguments of call ``index``: send what its deltas did not (if open)."""
        sent = self.args_sent.get(index)
        if sent is None or not isinstance(arguments, str) or len(arguments) <= sent:
            return ()
        self.args_sent[index] = len(arguments)
        return (ToolCallDelta(index=index, arguments=arguments[sent:]),)

    def _close_calls(self, response: dict[str, Any]) -> tuple[StreamEvent, ...]:
        """End the calls a completed response left open (no ``output_item.done`` for them),
        with the arguments its ``output`` lists for them that were not sent yet."""
        if not self.args_sent:
            return ()
        output = response.get("output") or ()
        events: list[StreamEvent] = []
        for index in list(self.args_sent):
            item = output[index] if 0 <= index < len(output) else {}
            arguments = item.get("arguments") if isinstance(item, dict) else None
            events.extend(self._arguments_done(index, arguments))
            del self.args_sent[index]
            events.append(ToolCallEnd(index=index))
        return tuple(events)

    def _added(self, index: int, item: dict[str, Any]) -> tuple[StreamEvent, ...]:
        kind = item["type"]
        self.streamed = self.from_done = False
        if kind == "function_call":
            self.calls += 1
            start = ToolCallStart(
                index=index,
                call_id=given_call_id(item.get("call_id")),
                name=item["name"],
                provider_id=item.get("id"),
            )
            arguments = item.get("arguments") or ""
            self.args_sent[index] = len(arguments)
            if arguments:  # a server that sends the call whole, with no deltas
                return (start, ToolCallDelta(index=index, arguments=arguments))
            return (start,)
        if kind == "reasoning":
            self.summary_parts = 0
            return (ReasoningStart(provider=PROVIDER, provider_id=item.get("id")),)
        return ()

    def _done(self, index: int, item: dict[str, Any]) -> tuple[StreamEvent, ...]:
        kind = item["type"]
        if kind == "function_call":
            arguments = item.get("arguments") or ""
            sent = self.args_sent.pop(index, 0)
            if len(arguments) > sent:  # arguments the deltas did not carry
                rest = arguments[sent:]
                return (ToolCallDelta(index=index, arguments=rest), ToolCallEnd(index=index))
            return (ToolCallEnd(index=index),)
        if kind == "reasoning":
            end = ReasoningEnd(encrypted_content=item.get("encrypted_content"))
            if not (self.streamed or self.from_done):  # the summary only with the whole item
                summary = "\n\n".join(part["text"] for part in item.get("summary") or ())
                if summary:
                    return (ReasoningDelta(text=summary), end)
            return (end,)
        if kind == "message" and not (self.streamed or self.from_done):
            text = "".join(
                part.get("text") or part.get("refusal") or "" for part in item.get("content") or ()
            )
            if text:
                return (TextDelta(text=text),)
        return ()


def _usage(response: dict[str, Any]) -> tuple[StreamEvent, ...]:
    usage = response.get("usage")
    if not usage:
        return ()
    output_details = usage.get("output_tokens_details") or {}
    input_details = usage.get("input_tokens_details") or {}
    return (
        UsageUpdate(
            usage=Usage(
                input_tokens=token_count(usage.get("input_tokens")),
                output_tokens=token_count(usage.get("output_tokens")),
                reasoning_tokens=token_count(output_details.get("reasoning_tokens")),
                cache_read_tokens=token_count(input_details.get("cached_tokens")),
            )
        ),
    )


def _stream_error(error: dict[str, Any], fallback: str) -> StreamError:
    code = error.get("code") or error.get("type")
    message = error.get("message") or fallback
    return StreamError(
        message=f"{PROVIDER}: {message}" + (f" ({code})" if code else ""),
        code=str(code) if code is not None else None,
        retryable=transient_error(error),
    )


def _malformed(data: object, exc: BaseException) -> MalformedStream:
    shown = repr(data)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return MalformedStream(
        f"{PROVIDER}: malformed stream event ({type(exc).__name__}: {exc}): {shown}"
    )
