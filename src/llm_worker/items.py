"""History items: what was said and done, provider-neutral and serialisable.

A history is a ``list[Item]``. It round-trips through JSON losslessly (`dump_history` /
`load_history`), including interrupted assistant messages, reasoning that a provider needs back
verbatim (signatures, encrypted content) and synthetic results for calls that never ran.

Every text field is `Text`: made valid Unicode when the item is built.

Items are frozen, slotted pydantic dataclasses rather than `BaseModel`s: validated alike, but a
history item costs a few hundred bytes instead of a kilobyte (no per-instance ``__dict__`` or
fields-set). Copy one with changes through `dataclasses.replace` (it validates again).

Invariant kept by the worker: every `ToolCall` in a history is followed, before the next
`AssistantMessage` or `UserMessage`, by exactly one `ToolResult` with its ``call_id``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass

from ._text import valid_text

# Text as it enters the history: always encodable (lone surrogates replaced), so a stray byte from
# a stream, a file name or a terminal can never make a later request or a session write fail.
Text = Annotated[str, AfterValidator(valid_text)]

_id_prefix = os.urandom(6).hex()  # unique per process; the counter makes it unique per item
_id_counter = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(6).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed_ids)


def _new_id() -> str:
    """A unique item id, cheaper than a uuid4 (no system call per item)."""
    return f"{_id_prefix}{next(_id_counter):x}"


def _now() -> datetime:
    return datetime.now(UTC)


# Schemas are built at first use, not at import: a command that never meets a kind of item never
# pays for it (start-up of the command line), and the first use costs what import would have.
_STRICT = ConfigDict(extra="forbid", defer_build=True)
_T = TypeVar("_T")


def replace(item: _T, **changes: Any) -> _T:
    """A copy of ``item`` (an item or a part) with ``changes``, validated like a new one."""
    return dataclasses.replace(item, **changes)  # type: ignore[type-var]


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class _Item:
    id: str = Field(default_factory=_new_id)
    created_at: datetime = Field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class TextPart:
    """Visible text of an assistant message (or more text of a user message)."""

    type: Literal["text"] = "text"
    text: Text


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class ImagePart:
    """An image the user sends: by ``url``, or as ``data`` (base64) with its ``media_type``.

    In a session store the bytes live once in its blob table, by content hash: an item read
    back has them again (``data``); ``blob`` is that hash while the item is stored.
    """

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    blob: str | None = None

    def __post_init__(self) -> None:
        _check_source(self.url, self.data, self.blob, self.media_type)


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class DocumentPart:
    """A document (a PDF, plain text) the user sends: by ``url``, or as ``data`` (base64) with
    its ``media_type``; ``name`` is its file name. Stored like `ImagePart`."""

    type: Literal["document"] = "document"
    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    name: Text | None = None
    blob: str | None = None

    def __post_init__(self) -> None:
        _check_source(self.url, self.data, self.blob, self.media_type)


def _check_source(url: str | None, data: str | None, blob: str | None, media: str | None) -> None:
    if (url is None) == (data is None and blob is None):
        raise ValueError("an attachment has either a url or data (base64), not both or neither")
    if url is None and not media:
        raise ValueError("an attachment given as data needs its media_type")


UserPart = Annotated[TextPart | ImagePart | DocumentPart, Field(discriminator="type")]


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class UserMessage(_Item):
    """Input from the user: ``text``, then ``parts`` (attachments: images, documents, more
    text), in order."""

    type: Literal["user"] = "user"
    text: Text
    parts: tuple[UserPart, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class ReasoningPart:
    """The model's reasoning, with whatever its provider needs to accept it back.

    ``signature`` (Anthropic thinking), ``redacted_data`` (Anthropic redacted thinking),
    ``encrypted_content`` and ``provider_id`` (OpenAI Responses reasoning items) are opaque and
    sent back only to the provider that produced them (``provider``).
    """

    type: Literal["reasoning"] = "reasoning"
    text: Text = ""
    signature: str | None = None
    redacted_data: str | None = None
    encrypted_content: str | None = None
    provider_id: str | None = None
    provider: str | None = None


AssistantPart = Annotated[TextPart | ReasoningPart, Field(discriminator="type")]


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class Usage:
    """Token counts reported by a provider; None where it reported nothing (unknown, not zero).

    Adding two usages adds each count; a count one side does not know is taken from the other,
    and stays None only when neither knows it (an increment that says nothing about a count
    leaves it as it was).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_read_tokens: int | None = None

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=_add_counts(self.input_tokens, other.input_tokens),
            output_tokens=_add_counts(self.output_tokens, other.output_tokens),
            reasoning_tokens=_add_counts(self.reasoning_tokens, other.reasoning_tokens),
            cache_read_tokens=_add_counts(self.cache_read_tokens, other.cache_read_tokens),
        )

    @property
    def known(self) -> bool:
        """Whether the provider reported any count at all."""
        return any(
            count is not None
            for count in (
                self.input_tokens,
                self.output_tokens,
                self.reasoning_tokens,
                self.cache_read_tokens,
            )
        )


def _add_counts(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class AssistantMessage(_Item):
    """What the model said in one turn. ``interrupted`` marks a message cut off mid-stream."""

    type: Literal["assistant"] = "assistant"
    parts: tuple[AssistantPart, ...] = ()
    interrupted: bool = False
    stop_reason: str | None = None
    model: str | None = None
    usage: Usage | None = None

    @property
    def text(self) -> str:
        """The visible text (reasoning excluded)."""
        return "".join(part.text for part in self.parts if isinstance(part, TextPart))

    @property
    def reasoning(self) -> str:
        return "".join(part.text for part in self.parts if isinstance(part, ReasoningPart))


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class ToolCall(_Item):
    """A call the model asked for.

    ``arguments`` is set when ``raw_arguments`` parsed as a JSON object, ``parse_error`` when it
    did not. ``complete`` is False for a call whose arguments never finished streaming: it is
    kept (so history stays lossless and valid) but never executed.
    """

    type: Literal["tool_call"] = "tool_call"
    call_id: Text
    name: Text
    raw_arguments: Text = ""
    arguments: dict[str, Any] | None = None
    parse_error: Text | None = None
    complete: bool = True
    provider_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class Attachment:
    """Content a tool returned besides text: an image, audio, an embedded resource or a link.

    Kept in the history as it came (``data`` is base64, as on the wire), so nothing is lost even
    when a provider cannot send it back to the model yet.
    """

    type: Literal["image", "audio", "resource", "resource_link"]
    mime_type: str | None = None
    data: str | None = None  # base64: images, audio, binary resources
    text: Text | None = None  # a text resource
    uri: str | None = None  # a resource or a link
    name: Text | None = None


ToolResultStatus = Literal["ok", "error", "cancelled", "interrupted", "abandoned", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class ToolResult(_Item):
    """The answer to one `ToolCall`, real or synthetic.

    ``status``: ``ok``; ``error`` (the tool raised, or the model's arguments were invalid);
    ``interrupted`` (the tool returned partial output after cancellation); ``cancelled`` (it was
    stopped, or never ran); ``abandoned`` (a thread that ignored cancellation, or a tool server
    that never answered after it was told to stop); ``skipped`` (a hook skipped it).
    ``attachments`` holds what the tool returned besides text (images, embedded resources).
    """

    type: Literal["tool_result"] = "tool_result"
    call_id: Text
    name: Text
    content: Text
    status: ToolResultStatus = "ok"
    attachments: tuple[Attachment, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.status != "ok"


@dataclass(frozen=True, slots=True, kw_only=True, config=_STRICT)
class Note(_Item):
    """Context the worker adds for the model, e.g. that the previous turn was interrupted.

    Providers send it as a user-role message; it never carries user input.
    """

    type: Literal["note"] = "note"
    kind: Literal["interrupted", "info"] = "info"
    text: Text


Item = Annotated[
    UserMessage | AssistantMessage | ToolCall | ToolResult | Note, Field(discriminator="type")
]


@functools.cache
def _history_adapter() -> TypeAdapter[list[Item]]:
    return TypeAdapter(list[Item])


@functools.cache
def _item_adapter() -> TypeAdapter[Item]:
    return TypeAdapter(Item)


def dump_history(items: list[Item]) -> str:
    """Serialise a history to JSON text."""
    return _history_adapter().dump_json(items).decode()


def load_history(data: str | bytes) -> list[Item]:
    """Parse a history written by `dump_history`; raises `pydantic.ValidationError` if invalid."""
    return _history_adapter().validate_json(data)


def item_to_jsonable(item: Item) -> Any:
    """One item as plain JSON-compatible Python data (what `dump_item` writes, unencoded)."""
    return _item_adapter().dump_python(item, mode="json")


def dump_item(item: Item) -> str:
    """Serialise one item to JSON text (one row of a session store)."""
    return _item_adapter().dump_json(item).decode()


def load_item(data: str | bytes) -> Item:
    """Parse one item written by `dump_item`."""
    return _item_adapter().validate_json(data)


def unanswered_calls(items: list[Item]) -> list[ToolCall]:
    """Tool calls in ``items`` that have no result yet, in order."""
    answered = {item.call_id for item in items if isinstance(item, ToolResult)}
    return [item for item in items if isinstance(item, ToolCall) and item.call_id not in answered]
