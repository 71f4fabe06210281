"""Request bodies built incrementally: each turn converts only what was added since the last.

A provider's history conversion is split in two: `HistoryConversion.groups` says which items
become one message (an assistant message and its calls, say) and ``convert`` turns one group into
its messages. `BodyBuilder` keeps the JSON of every group of the last bodies it built; the next
body over the same conversation — the same items, and more — reuses them and converts only the
new groups (and the last one, which new items may extend). A turn costs one identity comparison
of the items it shares with the last body (C speed), the conversion of what is new, and one join
of bytes — not a conversion of the whole conversation, which through the official SDKs' per-message
transform froze the event loop for ~300 ms at 1,000 items.

Invariants:
* The body is exactly the JSON of the provider's `request_params` (a test checks it for any
  history): what is remembered changes the cost of a body, never the body.
* A remembered body is reused only if its items are, by identity, a prefix of the new history.
  Items are immutable, so equal identities mean equal JSON.
* Converting yields to the event loop every `_YIELD_EVERY` groups, so other runs go on while a
  long history is converted the first time, and a cancel lands within about a millisecond.
  Cancellation: any checkpoint may raise; nothing is remembered from a build that did not end.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Any, Protocol

import anyio.lowlevel

from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, UserMessage

Group = tuple[Item, ...]

_YIELD_EVERY = 64


class HistoryConversion(Protocol):
    """How one provider turns a (repaired) history into its list of messages."""

    def groups(self, history: Sequence[Item], start: int = 0) -> Iterable[tuple[int, Group]]:
        """``history[start:]`` as groups that each become one or more messages (or none), with
        the position of each group's first item. ``start`` is always a position where a group
        began when the whole history was grouped."""
        ...

    def convert(self, group: Group) -> list[dict[str, Any]]:
        """The messages (or input items) of one group."""
        ...

    def opening(self, first: Group | None) -> list[dict[str, Any]]:
        """Messages before the history's (a system message; a first user message), given the
        history's first group."""
        ...


def convert_all(history: Sequence[Item], conversion: HistoryConversion) -> list[dict[str, Any]]:
    """The whole list of messages for ``history``, built directly: what a body holds."""
    groups = [group for _, group in conversion.groups(history)]
    messages = conversion.opening(groups[0] if groups else None)
    for group in groups:
        messages.extend(conversion.convert(group))
    return messages


def group_turns(
    history: Sequence[Item], start: int, opens: type | UnionType
) -> Iterator[tuple[int, Group]]:
    """Groups for APIs where an item of type ``opens`` and the tool calls right after it make
    one group (an assistant message and its calls) and every other item is a group of its own."""
    turn: list[Item] = []
    turn_start = start
    for position, item in enumerate(itertools.islice(history, start, None), start):
        if turn and isinstance(item, ToolCall):
            turn.append(item)
            continue
        if turn:
            yield turn_start, tuple(turn)
            turn = []
        if isinstance(item, opens):
            turn, turn_start = [item], position
        else:
            yield position, (item,)
    if turn:
        yield turn_start, tuple(turn)


def alternating_groups(
    history: Sequence[Item],
    start: int,
    says_something: Callable[[Item], bool],
) -> Iterator[tuple[int, Group]]:
    """Groups for APIs whose turns alternate user / model: each run of model-side items (messages
    and calls) is one group, each run of user-side items another. A blank note is left out, and
    so is a model run in which nothing ``says_something``: the user runs around it merge."""
    runs: list[tuple[bool, int, list[Item]]] = []  # (model side?, start, items)
    for position, item in enumerate(itertools.islice(history, start, None), start):
        model_side = isinstance(item, AssistantMessage | ToolCall)
        if not (model_side or _sends_user_content(item)):
            continue
        if runs and runs[-1][0] == model_side:
            runs[-1][2].append(item)
        else:
            runs.append((model_side, position, [item]))
    groups: list[tuple[bool, int, list[Item]]] = []
    for model_side, first, items in runs:
        if model_side and not any(map(says_something, items)):
            continue  # nothing to send: the user runs around it merge
        if groups and groups[-1][0] == model_side:
            groups[-1][2].extend(items)
        else:
            groups.append((model_side, first, items))
    return ((first, tuple(items)) for _, first, items in groups)


def _sends_user_content(item: Item) -> bool:
    return isinstance(item, ToolResult | UserMessage) or (
        isinstance(item, Note) and bool(item.text.strip())
    )


def encode(value: Any) -> bytes:
    """Compact JSON as UTF-8 (every text in an item is valid Unicode: `items.Text`)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, eq=False)
class _Body:
    """What a built body remembers: its items, and each group's position and JSON."""

    items: Sequence[Item]
    first: Group | None
    starts: list[int]
    fragments: list[bytes]


class BodyBuilder:
    """Builds request bodies, remembering the last ``keep`` (one per conversation in use)."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._bodies: list[_Body] = []  # most recent last

    async def build(
        self,
        params: dict[str, Any],
        history_key: str,
        history: Sequence[Item],
        conversion: HistoryConversion,
    ) -> bytes:
        """``params`` with ``history_key`` set to the converted ``history``, as JSON bytes.

        ``params`` must not hold ``history_key`` (it goes last).
        Cancellation: may raise at the checkpoint it starts with (so a Stop due as the request
        starts lands before anything is built or sent, however short the history) and at one
        between groups; nothing is remembered then.
        """
        await anyio.lowlevel.checkpoint()
        base = self._prefix_of(history)
        history = tuple(history)
        if base is not None and base.starts:  # the last group may grow: convert it again
            starts, fragments, resume = base.starts[:-1], base.fragments[:-1], base.starts[-1]
            first = base.first if starts else None
        else:
            starts, fragments, first, resume = [], [], None, 0
        for converted, (start, group) in enumerate(conversion.groups(history, resume), 1):
            first = first or group
            starts.append(start)
            fragments.append(b",".join(map(encode, conversion.convert(group))))
            if converted % _YIELD_EVERY == 0:
                await anyio.lowlevel.checkpoint()
        self._remember(_Body(history, first, starts, fragments), replacing=base)
        messages = [*map(encode, conversion.opening(first)), *filter(None, fragments)]
        head = encode(params)
        separator = b"," if len(head) > 2 else b""
        return b"".join(
            (head[:-1], separator, encode(history_key), b":[", b",".join(messages), b"]}")
        )

    def _prefix_of(self, history: Sequence[Item]) -> _Body | None:
        """A remembered body whose items start ``history`` (the same objects), if any."""
        for body in reversed(self._bodies):
            size = len(body.items)
            if (
                size <= len(history)
                and (size == 0 or history[size - 1] is body.items[-1])
                and all(map(operator.is_, body.items, history[:size]))
            ):
                return body
        return None

    def _remember(self, body: _Body, replacing: _Body | None) -> None:
        if replacing is not None:
            self._bodies.remove(replacing)
        self._bodies.append(body)
        del self._bodies[: -self.keep]
