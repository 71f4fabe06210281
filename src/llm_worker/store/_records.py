"""What the store hands out (run markers, listing rows, append timings) and the stored forms.

Invariants:
* Records are plain values: frozen dataclasses built from rows, with no connection, lock or
  worker behind them; reading one never touches the database again.
* Times are stored as ISO 8601 text in UTC with microseconds (`now`) and read back as aware
  `datetime` values; a missing time reads as None.
* Stored text is valid UTF-8: an item holding lone surrogates is stored with U+FFFD in their
  place (`item_data`, logged); anything else that cannot be stored is a `StoreError`, and the
  item stays queued by its `Session`.
* Metadata is a flat mapping of strings, stored as JSON text (or NULL when empty); a stored
  value this code cannot read is logged and read as empty, never an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, overload

from .._text import valid_text
from ..items import Item, dump_item, item_to_jsonable, load_item
from ._errors import StoreError

__all__ = ["AppendStats", "RunRecord", "SessionInfo"]

logger = logging.getLogger("llm_worker.store")

RunOutcome = Literal["finished", "paused", "limit_reached", "cancelled", "failed", "crashed"]

RUN_COLUMNS = "run_id, started_at, ended_at, outcome, kind, reason"
INFO_COLUMNS = (
    "s.name, s.model, s.system, s.created_at, s.updated_at, s.item_count, s.metadata, "
    "r.run_id, r.started_at, r.ended_at, r.outcome, r.kind, r.reason"
)


@dataclass(frozen=True)
class RunRecord:
    """One run's marker: when it started and how it ended (``outcome`` None: never ended)."""

    run_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    kind: str | None = None
    reason: str | None = None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


@dataclass(frozen=True)
class SessionInfo:
    """A row of the session listing."""

    name: str
    model: str | None
    system: str | None
    items: int
    created_at: datetime
    updated_at: datetime
    last_run: RunRecord | None
    in_use_by: int | None  # the pid holding the session open, if any
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """For listings: in use, crashed, interrupted, failed, paused, turn limit, or ""."""
        if self.in_use_by is not None:
            return "in use"
        run = self.last_run
        if run is None or run.outcome == "finished":
            return ""
        if not run.ended or run.outcome == "crashed":
            return "crashed"
        return {
            "cancelled": "interrupted",
            "failed": "failed",
            "paused": "paused",
            "limit_reached": "turn limit",
        }.get(run.outcome or "", run.outcome or "")


@dataclass
class AppendStats:
    """How long history appends took (seconds), for latency checks."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def record(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)


# -- rows → records ---------------------------------------------------------------------------


def now() -> str:
    """The current time as stored."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def run_record(row: Sequence[Any]) -> RunRecord:
    """A `RunRecord` from the ``RUN_COLUMNS`` of a row."""
    run_id, started, ended, outcome, kind, reason = row
    return RunRecord(
        run_id=run_id,
        started_at=parse_time(started) or datetime.now(UTC),
        ended_at=parse_time(ended),
        outcome=outcome,
        kind=kind,
        reason=reason,
    )


def session_info(row: Sequence[Any], in_use_by: int | None) -> SessionInfo:
    """A `SessionInfo` from the ``INFO_COLUMNS`` of a row."""
    name, model, system, created, updated, count, metadata = row[:7]
    last_run = run_record(row[7:]) if row[7] is not None else None
    return SessionInfo(
        name=name,
        model=model,
        system=system,
        items=count,
        created_at=parse_time(created) or datetime.now(UTC),
        updated_at=parse_time(updated) or datetime.now(UTC),
        last_run=last_run,
        in_use_by=in_use_by,
        metadata=load_metadata(metadata, name),
    )


# -- stored text --------------------------------------------------------------------------------


@overload
def stored_text(text: str) -> str: ...
@overload
def stored_text(text: None) -> None: ...
@overload
def stored_text(text: str | None) -> str | None: ...
def stored_text(text: str | None) -> str | None:
    """``text`` as it can be stored: lone surrogates replaced by U+FFFD (`valid_text`)."""
    return None if text is None else valid_text(text)


def item_data(item: Item, session: str) -> str:
    """An item's stored JSON text; always valid UTF-8, always readable by `load_item`.

    An item holding lone surrogates cannot be dumped as it is: it is stored with U+FFFD in
    their place (and logged), so one bad string never blocks every later item. Anything else
    that cannot be dumped is a `StoreError` (the item stays queued).
    """
    try:
        return dump_item(item)
    except ValueError as exc:
        problem = exc
    try:
        text = json.dumps(item_to_jsonable(item), ensure_ascii=False)
        repaired = dump_item(load_item(valid_text(text)))
    except ValueError as exc:
        raise StoreError(
            f"session {session!r}: {item.type} item {item.id} cannot be stored: {problem}"
        ) from exc
    logger.warning(
        "session %r: %s item %s held text that is not valid Unicode (%s); stored with U+FFFD "
        "in its place",
        session,
        item.type,
        item.id,
        problem,
    )
    return repaired


# -- metadata -----------------------------------------------------------------------------------


def check_metadata(metadata: Mapping[str, str | None] | None) -> None:
    if metadata is None:
        return
    for key, value in metadata.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str)):
            raise TypeError("metadata maps strings to strings (or to None, to remove a key)")


def merge_metadata(
    stored: Mapping[str, str], given: Mapping[str, str | None] | None
) -> dict[str, str]:
    """``stored`` updated by ``given``: a None value removes its key."""
    merged = dict(stored)
    for key, value in (given or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def dump_metadata(metadata: Mapping[str, str]) -> str | None:
    return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False) if metadata else None


def load_metadata(text: str | None, name: str) -> dict[str, str]:
    """The stored settings; a value this code cannot read is logged and treated as none."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        logger.warning("session %r: unreadable metadata ignored: %.80r", name, text)
        return {}
    return value
