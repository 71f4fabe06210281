"""The Gemini API (``streamGenerateContent?alt=sse``): the worker's history in, Gemini's stream
out as `StreamEvent`s.

Invariants:
* The request is a pure function of the history (`convert_history`) and is valid after every
  kind of interruption: contents alternate ``user`` / ``model`` and start with ``user``; every
  ``functionCall`` is answered by a ``functionResponse`` (same name, same id) in the immediately
  next content, responses first — given a repaired history (`history.repair`, applied by the
  worker before every request); no text part is empty; a `Note` is user text.
* Thought signatures go back verbatim, only to Gemini, on the part they came with: a thought
  part's on that thought (`ReasoningPart.signature`); a text part's as a text-less Gemini
  `ReasoningPart` right before the text, sent back on the next text part (or the first call
  without one of its own); a function call's in its `ToolCall.provider_id`, prefixed
  `SIGNATURE_PREFIX` so that no other provider's id is ever taken for one. Thought text without a
  signature (a summary, or cut off) and other providers' reasoning are not sent: the API does
  not need them back.
* Stream translation (`StreamTranslation`) never crashes on what the server sends: parts it does
  not know (inline data, code execution) are ignored; a chunk of the wrong shape is
  `MalformedStream`; a body that ends before a ``finishReason`` is a retryable `ModelError`
  (cut off); a prompt the API blocked (``promptFeedback.blockReason``, no candidate) is
  `PromptBlocked`, never retried; a safety (or recitation, blocklist …) finish keeps what was
  said and stops with ``"refusal"``; an ``error`` object in the stream is a `ModelError`,
  retryable when its ``code`` is (`transient_error`). Each ``functionCall`` part arrives whole, so
  a call is started, given its arguments and ended at once.
* Usage: ``usageMetadata`` holds running totals (`UsageTotals`); output counts thoughts too (as
  OpenAI's and Anthropic's do); a count Gemini does not give stays unknown (None).
* Retries, timeouts and leak-free closing are `provider_stream`'s, through `HTTPModel`.
  Cancellation: at any await the HTTP response is closed (shielded, bounded) and the
  cancellation propagates; nothing else is held.

Why not the official ``google-genai`` SDK on the request path (checked with google-genai 3.6):
its async client does not run on trio — every request looks up ``asyncio.get_running_loop()``
(a connection pool per asyncio loop), its auth lock is an ``asyncio.Lock``, and whenever
``aiohttp`` is importable it sends through aiohttp, which is asyncio-only; it retries on its own
(tenacity), which would nest inside ours; and it has no public way to post a prebuilt body and
read the raw bytes — ``generate_content_stream`` converts and validates the whole history on
every call (not incrementally, see `_request`) and builds a pydantic ``GenerateContentResponse``
per chunk. The wire protocol is small and stable, so a few lines of ``httpx2`` (`GeminiClient`,
the HTTP client the other providers' SDKs use) send it, and the shared skeleton does the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx2

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
)
from ..history import CONVERSATION_START, EMPTY_USER_TEXT
from ..items import (
    AssistantMessage,
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
from ._gemini_client import API_VERSION, GeminiClient
from ._request import Group, alternating_groups, convert_all
from ._sse import MAX_EVENT_BYTES
from ._translate import MalformedStream, UsageTotals, given_call_id, token_count, translate
from ._transport import RetryPolicy, Timeouts

__all__ = [
    "SIGNATURE_PREFIX",
    "STOP_REASONS",
    "GeminiClient",
    "GeminiHistory",
    "GeminiModel",
    "PromptBlocked",
    "StreamTranslation",
    "convert_history",
    "convert_tools",
    "translate_stream",
]

PROVIDER = "gemini"

#: What marks a `ToolCall.provider_id` as a Gemini thought signature (the rest is the signature).
SIGNATURE_PREFIX = "gemini-thought-signature:"

#: Gemini's finish reasons in the names the other providers use; the rest pass lower-cased.
STOP_REASONS = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "refusal",
    "RECITATION": "refusal",
    "LANGUAGE": "refusal",
    "BLOCKLIST": "refusal",
    "PROHIBITED_CONTENT": "refusal",
    "SPII": "refusal",
    "IMAGE_SAFETY": "refusal",
    "IMAGE_PROHIBITED_CONTENT": "refusal",
    "IMAGE_RECITATION": "refusal",
    "MODEL_ARMOR": "refusal",
}

#: The key variables, in the SDK's order of precedence.
KEY_VARIABLES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")


class PromptBlocked(ModelError):
    """Gemini refused the prompt itself (``promptFeedback.blockReason``): nothing was generated.
    Never retried: the same prompt is blocked again. ``block_reason`` is Gemini's
    (``SAFETY``, ``PROHIBITED_CONTENT``, ``BLOCKLIST``, ``OTHER`` …)."""

    def __init__(self, message: str, *, block_reason: str) -> None:
        super().__init__(message, retryable=False)
        self.block_reason = block_reason


class GeminiModel(HTTPModel):
    """A `Model` for the Gemini API (streaming), over ``httpx2`` (see the module docstring).

    ``client``: a `GeminiClient` to use (never closed here); otherwise one is built from
    ``api_key`` / ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY`` and ``base_url`` /
    ``GOOGLE_GEMINI_BASE_URL`` (the SDK's variables), with ``timeouts``' connect and idle limits.
    ``thinking`` is sent as ``generationConfig.thinkingConfig``, e.g. ``{"includeThoughts":
    True, "thinkingBudget": 1024}``; ``generation_config`` adds any other ``generationConfig``
    fields (a request's settings win).

    Raises `MissingCredentials` at construction when no client and no key is given.
    ``max_event_bytes`` caps one stream event (`EventTooLarge`). Error texts never carry the key.
    """

    provider = PROVIDER
    path = f"/{API_VERSION}/models/{{model}}:streamGenerateContent?alt=sse"
    history_key = "contents"
    stream_class = object  # no SDK stream: the body is read by `SSEResponseStream`
    sdk_client = GeminiClient
    sdk_http_client = httpx2.AsyncClient
    key_variable = "GEMINI_API_KEY"
    base_url_variable = "GOOGLE_GEMINI_BASE_URL"

    def __init__(
        self,
        model: str,
        *,
        client: GeminiClient | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclasses, never mutated
        timeouts: Timeouts = Timeouts(),  # noqa: B008
        thinking: dict[str, Any] | None = None,
        generation_config: dict[str, Any] | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.thinking = dict(thinking) if thinking else None
        self.generation_config = dict(generation_config) if generation_config else {}
        if client is None and not api_key:
            api_key = next(filter(None, map(os.environ.get, KEY_VARIABLES)), None)
        super().__init__(
            model.removeprefix("models/"),
            client=client,
            base_url=base_url,
            api_key=api_key,
            retry=retry,
            timeouts=timeouts,
            max_event_bytes=max_event_bytes,
        )

    def __repr__(self) -> str:
        return f"GeminiModel({self.model!r}, base_url={str(self.client.base_url)!r})"

    def _missing_key(self) -> str:
        return (
            f"{self.name} needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) or pass api_key="
        )

    def request_path(self) -> str:
        return self.path.format(model=quote(self.model, safe=""))

    def request_options(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of ``streamGenerateContent`` but its ``contents``."""
        options: dict[str, Any] = {}
        if request.system:
            options["systemInstruction"] = {"role": "user", "parts": [{"text": request.system}]}
        if request.tools:
            options["tools"] = convert_tools(request.tools)
        config = dict(self.generation_config)
        settings = request.settings
        if settings.temperature is not None:
            config["temperature"] = settings.temperature
        if settings.max_tokens is not None:
            config["maxOutputTokens"] = settings.max_tokens
        if self.thinking is not None:
            config["thinkingConfig"] = self.thinking
        options["generationConfig"] = config
        return options

    native_output = True

    def output_options(self, options: dict[str, Any], output: OutputSpec) -> dict[str, Any]:
        """JSON answers constrained by the schema (``responseMimeType`` and
        ``responseJsonSchema`` in ``generationConfig``)."""
        if output.mode != "native":
            return options
        config = {
            **options.get("generationConfig", {}),
            "responseMimeType": "application/json",
            "responseJsonSchema": output.schema,
        }
        return {**options, "generationConfig": config}

    def conversion(self, request: ModelRequest) -> GeminiHistory:
        return GEMINI_HISTORY

    def _translate(self, payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
        return translate_stream(payloads)


# -- the stream -----------------------------------------------------------------------------------

_NOTHING: tuple[StreamEvent, ...] = ()
_EMPTY: dict[str, Any] = {}


def translate_stream(payloads: AsyncIterator[Any]) -> AsyncIterator[StreamEvent]:
    """Map Gemini's stream chunks (parsed JSON) to `StreamEvent`s (`StreamTranslation`).

    Cancellation: safe at every await (it only reads ``payloads``).
    """
    return translate(payloads, StreamTranslation())


class StreamTranslation:
    """One response's ``GenerateContentResponse`` chunks as `StreamEvent`s, one at a time.

    Keeps only whether a thought block is open, how many calls were made (their indexes), the
    usage totals (and the last ``usageMetadata``, so that the repeats Gemini sends with every
    chunk cost one comparison), and whether a ``finishReason`` came (`complete`). Only the
    first candidate is read (the request asks for one).
    """

    __slots__ = ("_calls", "_thinking", "_totals", "_usage_seen", "complete")

    def __init__(self) -> None:
        self._thinking = False  # a thought block is open
        self._usage_seen: Any = None  # the last usageMetadata (repeats are skipped at once)
        self._calls = 0
        self._totals = UsageTotals()
        #: A ``finishReason`` came: the answer is whole.
        self.complete = False

    def feed(self, payload: Any) -> Sequence[StreamEvent]:
        """The events of one chunk; `MalformedStream` for one of the wrong shape."""
        try:
            return self._events(payload)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedStream(
                f"{PROVIDER} sent a malformed stream: chunk {payload!r:.80}: {exc!r}"
            ) from exc

    def finish(self) -> Sequence[StreamEvent]:
        """The body ended: nothing is owed after a ``finishReason``; before one it was cut."""
        if not self.complete:
            raise ModelError(
                f"{PROVIDER}: the stream ended before a finishReason: it was cut off",
                retryable=True,
            )
        return _NOTHING

    def _events(self, payload: dict[str, Any]) -> Sequence[StreamEvent]:
        candidates = payload.get("candidates")
        usage = payload.get("usageMetadata")
        if usage is not None:
            if usage == self._usage_seen:
                usage = None  # the same running totals again (Gemini repeats them per chunk)
            else:
                self._usage_seen = usage
        if candidates:
            candidate = candidates[0]
            parts: Sequence[Any] = (candidate.get("content") or _EMPTY).get("parts") or ()
            if usage is None and len(parts) == 1 and "finishReason" not in candidate:
                part = parts[0]  # the hot path: one plain text part
                if len(part) == 1 and type(text := part.get("text")) is str and not self._thinking:
                    return (TextDelta(text=text),) if text else _NOTHING
        events: list[StreamEvent] = []
        if candidates:
            for part in parts:
                self._part(part, events)
            finish = candidate.get("finishReason")
            if finish and finish != "FINISH_REASON_UNSPECIFIED":
                self._end_thought(events)
                self.complete = True
                events.append(StopReason(reason=self._stop_reason(finish)))
        else:
            feedback = payload.get("promptFeedback") or _EMPTY
            if reason := feedback.get("blockReason"):
                said = feedback.get("blockReasonMessage")
                raise PromptBlocked(
                    f"{PROVIDER} blocked the prompt ({reason})" + (f": {said}" if said else ""),
                    block_reason=str(reason),
                )
        if usage and (update := self._totals.update(_usage(usage))):
            events.append(update)
        return events

    def _part(self, part: dict[str, Any], events: list[StreamEvent]) -> None:
        signature = part.get("thoughtSignature") or None
        call = part.get("functionCall")
        if call is not None:
            self._end_thought(events)
            index, self._calls = self._calls, self._calls + 1
            name = call["name"]
            if not isinstance(name, str) or not name:
                raise ValueError(f"a functionCall without a name: {call!r:.80}")
            arguments = call.get("args")
            events.append(
                ToolCallStart(
                    index=index,
                    call_id=given_call_id(call.get("id")),
                    name=name,
                    provider_id=SIGNATURE_PREFIX + signature if signature else None,
                )
            )
            events.append(
                ToolCallDelta(
                    index=index, arguments=json.dumps(_EMPTY if arguments is None else arguments)
                )
            )
            events.append(ToolCallEnd(index=index))
            return
        text = part.get("text")
        if part.get("thought"):
            if not self._thinking:
                self._thinking = True
                events.append(ReasoningStart(provider=PROVIDER))
            if text:
                events.append(ReasoningDelta(text=text))
            if signature:
                self._thinking = False
                events.append(ReasoningEnd(signature=signature))
            return
        if text is None and signature is None:
            return  # inline data, code execution, …: nothing for the history
        self._end_thought(events)
        if signature:  # the text's signature rides in a text-less reasoning part before it
            events.append(ReasoningStart(provider=PROVIDER))
            events.append(ReasoningEnd(signature=signature))
        if text:
            events.append(TextDelta(text=text))

    def _end_thought(self, events: list[StreamEvent]) -> None:
        if self._thinking:
            self._thinking = False
            events.append(ReasoningEnd())

    def _stop_reason(self, finish: str) -> str:
        if finish == "STOP" and self._calls:
            return "tool_use"  # Gemini says STOP after function calls too
        return STOP_REASONS.get(finish) or str(finish).lower()


def _usage(usage: dict[str, Any]) -> Usage:
    """``usageMetadata`` (running totals) as a `Usage`; output includes thoughts."""
    thoughts = token_count(usage.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=_known_sum(
            token_count(usage.get("promptTokenCount")),
            token_count(usage.get("toolUsePromptTokenCount")),
        ),
        output_tokens=_known_sum(token_count(usage.get("candidatesTokenCount")), thoughts),
        reasoning_tokens=thoughts,
        cache_read_tokens=token_count(usage.get("cachedContentTokenCount")),
    )


def _known_sum(*counts: int | None) -> int | None:
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


# -- the request ----------------------------------------------------------------------------------


def convert_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tool definitions as one Gemini ``tools`` entry of ``functionDeclarations``; the schema
    goes as ``parametersJsonSchema`` (full JSON Schema: ``$defs``, ``additionalProperties`` …
    pass as they are, where ``parameters`` takes only an OpenAPI subset)."""
    declarations = [
        {
            "name": spec.name,
            "description": spec.description,
            "parametersJsonSchema": spec.parameters,
        }
        for spec in tools
    ]
    return [{"functionDeclarations": declarations}] if declarations else []


def convert_history(history: Sequence[Item]) -> list[dict[str, Any]]:
    """The ``contents`` for a repaired ``history`` (see `GeminiHistory`)."""
    return convert_all(history, GEMINI_HISTORY)


class GeminiHistory:
    """The Gemini API's `HistoryConversion`: a history repaired by `history.repair`.

    An assistant message and the calls after it become one ``model`` content; the results, user
    messages and notes after it one ``user`` content, function responses first (repair puts them
    right after their calls). Items that would send nothing (a blank note, an assistant message
    with only unsigned thoughts) are left out, and what they separated merges. A history that
    starts with the model gets a first user content (`CONVERSATION_START`).
    """

    def groups(self, history: Sequence[Item], start: int = 0) -> Iterator[tuple[int, Group]]:
        return alternating_groups(history, start, _says_something)

    def convert(self, group: Group) -> list[dict[str, Any]]:
        if not isinstance(group[0], AssistantMessage | ToolCall):
            responses = [_function_response(i) for i in group if isinstance(i, ToolResult)]
            texts = [
                part for i in group if isinstance(i, UserMessage | Note) for part in _user_parts(i)
            ]
            return [{"role": "user", "parts": [*responses, *texts]}]
        parts: list[dict[str, Any]] = []
        pending: str | None = None  # a text's signature, waiting for its text
        for item in group:
            if isinstance(item, ToolCall):
                part = _function_call(item)
                if pending and "thoughtSignature" not in part:
                    part["thoughtSignature"] = pending
                pending = None
                parts.append(part)
                continue
            assert isinstance(item, AssistantMessage)
            for said in item.parts:
                if isinstance(said, TextPart):
                    if said.text.strip():
                        text: dict[str, Any] = {"text": said.text}
                        if pending:
                            text["thoughtSignature"] = pending
                            pending = None
                        parts.append(text)
                elif _ours(said):
                    if said.text.strip():  # a blank thought sends no text: its signature waits
                        thought = {"text": said.text, "thought": True}
                        parts.append({**thought, "thoughtSignature": said.signature})
                    else:
                        pending = said.signature
        return [{"role": "model", "parts": parts}]

    def opening(self, first: Group | None) -> list[dict[str, Any]]:
        if first and isinstance(first[0], AssistantMessage | ToolCall):
            return [{"role": "user", "parts": [{"text": CONVERSATION_START}]}]
        return []


GEMINI_HISTORY = GeminiHistory()


def _ours(part: object) -> bool:
    """A Gemini reasoning part with a signature: the only reasoning that goes back."""
    return isinstance(part, ReasoningPart) and part.provider == PROVIDER and bool(part.signature)


def _says_something(item: Item) -> bool:
    """True if a model-side item sends a part: a call, text, or a signed thought."""
    if isinstance(item, ToolCall):
        return True
    assert isinstance(item, AssistantMessage)
    return any(
        (isinstance(part, TextPart) and bool(part.text.strip()))
        or (_ours(part) and bool(part.text.strip()))
        for part in item.parts
    )


def _user_parts(item: UserMessage | Note) -> list[dict[str, Any]]:
    """A user message's parts: its text, then its attachments (``inlineData`` for bytes,
    ``fileData`` for a URL), in order."""
    parts = [_user_text(item)]
    if isinstance(item, UserMessage):
        for part in item.parts:
            if isinstance(part, TextPart):
                if part.text.strip():
                    parts.append({"text": part.text})
            elif part.url is not None:
                file_data = {"fileUri": part.url}
                if part.media_type:
                    file_data["mimeType"] = part.media_type
                parts.append({"fileData": file_data})
            else:
                data = base64_data(part)
                parts.append({"inlineData": {"mimeType": part.media_type, "data": data}})
    return parts


def _user_text(item: UserMessage | Note) -> dict[str, Any]:
    return {"text": item.text if item.text.strip() else EMPTY_USER_TEXT}


def _function_call(call: ToolCall) -> dict[str, Any]:
    arguments = call.arguments if call.arguments is not None else {}
    part: dict[str, Any] = {
        "functionCall": {"id": call.call_id, "name": call.name, "args": arguments}
    }
    if call.provider_id and call.provider_id.startswith(SIGNATURE_PREFIX):
        part["thoughtSignature"] = call.provider_id.removeprefix(SIGNATURE_PREFIX)
    return part


def _function_response(result: ToolResult) -> dict[str, Any]:
    """The API's documented keys: ``output`` for a result, ``error`` for a failure."""
    key = "output" if result.status == "ok" else "error"
    return {
        "functionResponse": {
            "id": result.call_id,
            "name": result.name,
            "response": {key: result.content},
        }
    }
