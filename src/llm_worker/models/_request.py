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
* A remembered body's groups are reused only for items it shares, by identity, with the start of
  the new history (the new history continues it, or parts from it near the end: a run retried
  or superseded with other input), and only groups followed by a shared item. Items are
  immutable, so equal identities mean equal JSON.
* Converting yields to the event loop every `_SLICE_SECONDS` (a quarter of a millisecond), so
  other runs go on while a long history is converted the first time, and a cancel lands within
  about that. Cancellation: any checkpoint may raise; nothing is remembered from a build that did
  not end.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Any, Protocol

import anyio.lowlevel

from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, UserMessage

Group = tuple[Item, ...]

#: Converting yields to the loop after this long (a Stop waits at most about this, plus the
#: clean-up; other runs on the loop stall no longer).
_SLICE_SECONDS = 0.000_25
#: How far from the end two histories may part and still share their start here.
_PARTING_WINDOW = 8


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


def _shared_start(old: Sequence[Item], new: Sequence[Item]) -> int:
    """How many items ``old`` and ``new`` share from the start, by identity.

    Either one continues the other, or they part near the end (a run retried or superseded
    with other input): the parting is looked for among the last `_PARTING_WINDOW` items, and
    the shared part checked at C speed. Histories that part earlier share nothing here (a
    conversation edited in the middle is converted again).
    """
    if not old or not new or old[0] is not new[0]:  # another conversation: one comparison
        return 0
    length = min(len(old), len(new))
    shared = length
    while shared > 0 and old[shared - 1] is not new[shared - 1]:
        shared -= 1
        if length - shared > _PARTING_WINDOW:
            return 0
    if all(map(operator.is_, itertools.islice(old, shared), itertools.islice(new, shared))):
        return shared
    return 0


def _settled_groups(base: _Body, shared: int) -> int:
    """How many of ``base``'s groups a history sharing its first ``shared`` items has too.

    Where a group ends is decided by the items after it (an empty assistant message, which
    converts to nothing, goes with what follows it): a history that continues ``base`` may
    extend its last group, and one that parts from it may regroup the last group before the
    parting too. Those are converted again.
    """
    before = bisect.bisect_left(base.starts, shared)  # groups starting in the shared part
    return before - 1 if shared == len(base.items) else before - 2


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
        starts lands before anything is built or sent, however short the history) and at the
        ones while converting; nothing is remembered then.
        """
        await anyio.lowlevel.checkpoint()
        history = tuple(history)
        base, shared = self._longest_shared(history)
        kept = _settled_groups(base, shared) if base is not None else 0
        if base is not None and kept > 0:
            starts, fragments, first = base.starts[:kept], base.fragments[:kept], base.first
            resume = base.starts[kept]
        else:
            starts, fragments, first, resume = [], [], None, 0
        slice_ends = time.perf_counter() + _SLICE_SECONDS
        for start, group in conversion.groups(history, resume):
            first = first or group
            starts.append(start)
            fragments.append(b",".join(map(encode, conversion.convert(group))))
            if time.perf_counter() >= slice_ends:
                await anyio.lowlevel.checkpoint()
                slice_ends = time.perf_counter() + _SLICE_SECONDS
        self._remember(_Body(history, first, starts, fragments), replacing=base)
        messages = [*map(encode, conversion.opening(first)), *filter(None, fragments)]
        head = encode(params)
        separator = b"," if len(head) > 2 else b""
        return b"".join(
            (head[:-1], separator, encode(history_key), b":[", b",".join(messages), b"]}")
        )

    def _longest_shared(self, history: tuple[Item, ...]) -> tuple[_Body | None, int]:
        """The remembered body sharing the longest start with ``history`` (the same objects),
        and how many items they share; the most recent wins a tie."""
        best, best_shared = None, 0
        for body in reversed(self._bodies):
            shared = _shared_start(body.items, history)
            if shared > best_shared:
                best, best_shared = body, shared
                if shared == len(body.items):  # all of it: nothing remembered shares more
                    break
        return best, best_shared

    def _remember(self, body: _Body, replacing: _Body | None) -> None:
        if replacing is not None:
            self._bodies.remove(replacing)
        self._bodies.append(body)
        del self._bodies[: -self.keep]
