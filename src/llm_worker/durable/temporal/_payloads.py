"""What crosses Temporal: requests, cancel requests, outcomes and events, as plain JSON values.

Invariants:
* Every payload is a dataclass of JSON values (str, int, float, bool, None, lists and dicts of
  them), so Temporal's default data converter carries it and the workflow sandbox never needs
  pydantic or the worker to read one: it never looks inside.
* ``encode_*`` and ``decode_*`` are inverse up to exception identity: a decoded `RunError` has
  the same class, message, ``cause`` (kinds, reasons, origins, tree shape), ``partial`` (items
  equal to the originals) and cleanup errors; an exception inside a cause (a tool's error, a
  provider's) comes back as a `RemoteError` naming its type, because its class may not exist in
  the receiving process.
* A run's items travel inline, or by reference to the session store when they would not fit in
  one Temporal payload (`ItemsRef`, resolved by the caller's loader); a history never travels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..._error_base import LLMWorkerError
from ...cancel import INTERRUPT_KINDS, Cause
from ...errors import Aborted, Cancelled, HookFailed, ModelError, RunError, ToolFailed
from ...items import Item, Usage, dump_history, load_history
from ...result import RunResult

__all__ = [
    "ActivitySettings",
    "CancelRequest",
    "EventBatch",
    "ItemsRef",
    "RemoteError",
    "RunOutcome",
    "RunRequest",
    "decode_error",
    "decode_outcome",
    "decode_result",
    "encode_error",
    "encode_result",
]

_ERROR_TYPES: dict[str, type[RunError]] = {
    cls.__name__: cls for cls in (RunError, Cancelled, Aborted, ModelError, ToolFailed, HookFailed)
}


class RemoteError(LLMWorkerError):
    """An exception raised in another process (a tool's, a provider's), carried by name and text.

    ``type_name`` is the original class name; ``str()`` is its message.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"RemoteError({self.type_name}: {self})"


@dataclass
class RunRequest:
    """One run for the agent activity. ``input`` None resumes the session without new input."""

    agent: str
    input: str | None
    session: str
    run_key: str = ""  # set by the workflow: unique per run, stable across activity attempts
    deadline: float | None = None  # POSIX time after which the run is cancelled (kind deadline)
    timeout: float | None = None  # the duration the deadline came from, for the reason text
    events: bool = True  # publish events for followers


@dataclass
class ActivitySettings:
    """How the workflow schedules the agent activity (see `RunOptions`), in seconds."""

    task_queue: str
    heartbeat_timeout: float
    start_to_close_timeout: float | None
    retry_initial_interval: float
    retry_maximum_interval: float
    retry_maximum_attempts: int


@dataclass
class CancelRequest:
    """Who stopped a run and why: recorded by the workflow before it cancels the activity."""

    reason: str | None = None
    kind: str = "explicit"


@dataclass
class RunOutcome:
    """How a run ended: ``result`` (an encoded `RunResult`) or ``error`` (an encoded `RunError`)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass
class EventBatch:
    """Events ``first``, ``first + 1``, … of a run, each as JSON text; ``done``: no more follow."""

    first: int = 0
    events: list[str] = field(default_factory=list)
    done: bool = False


@dataclass(frozen=True)
class ItemsRef:
    """Items kept in the session store instead of the payload: positions ``start:stop``."""

    session: str
    start: int
    stop: int


ItemsLoader = Callable[[ItemsRef], list[Item]]


# -- results ------------------------------------------------------------------------------------


def encode_result(result: RunResult, *, items_ref: ItemsRef | None = None) -> dict[str, Any]:
    """A `RunResult` as JSON values; its items inline, or ``items_ref`` when given."""
    encoded: dict[str, Any] = {
        "status": result.status,
        "usage": dataclasses.asdict(result.usage),
        "turns": result.turns,
        "run_id": result.run_id,
        "reason": result.reason,
    }
    if items_ref is not None:
        encoded["items_ref"] = [items_ref.session, items_ref.start, items_ref.stop]
    else:
        encoded["items"] = dump_history(list(result.items))
    return encoded


def decode_result(data: dict[str, Any], load_items: ItemsLoader | None = None) -> RunResult:
    """The `RunResult` `encode_result` encoded; ``load_items`` resolves items kept by reference."""
    if "items_ref" in data:
        session, start, stop = data["items_ref"]
        if load_items is None:
            raise LLMWorkerError(
                f"the run's items are kept by reference in session {session!r} (too large for "
                "a Temporal payload): pass store= to TemporalRuns to read them"
            )
        items = load_items(ItemsRef(session, int(start), int(stop)))
    else:
        items = load_history(data["items"])
    return RunResult(
        status=data["status"],
        items=tuple(items),
        usage=Usage(**data["usage"]),
        turns=int(data["turns"]),
        run_id=str(data["run_id"]),
        reason=data["reason"],
    )


# -- causes and errors --------------------------------------------------------------------------


def encode_cause(cause: Cause) -> dict[str, Any]:
    """A `Cause` tree as JSON values; a failure's exception by type name and message."""
    encoded: dict[str, Any] = {"tag": cause.tag}
    if cause.interrupt_kind is not None:
        encoded["kind"] = cause.interrupt_kind
    if cause.reason is not None:
        encoded["reason"] = cause.reason
    if cause.origin is not None:
        encoded["origin"] = cause.origin
    if cause.error is not None:
        encoded["error"] = _encode_exception(cause.error)
    if cause.parts:
        encoded["parts"] = [encode_cause(part) for part in cause.parts]
    return encoded


def decode_cause(data: dict[str, Any]) -> Cause:
    tag = data["tag"]
    if tag == "interrupt":
        kind = data.get("kind", "explicit")
        return Cause.interrupt(
            kind if kind in INTERRUPT_KINDS else "explicit", data.get("reason"), data.get("origin")
        )
    if tag == "failure":
        error = _decode_exception(data.get("error") or {"type": "Exception", "message": ""})
        # Built directly to keep the original reason ("ValueError: ..."), not the stand-in's.
        return Cause("failure", error=error, origin=data.get("origin"), reason=data.get("reason"))
    parts = [decode_cause(part) for part in data.get("parts", ())]
    if tag == "sequential":
        return Cause.sequential(*parts)
    if tag == "parallel":
        return Cause.parallel(*parts)
    return Cause.empty()


def encode_error(error: RunError, *, items_ref: ItemsRef | None = None) -> dict[str, Any]:
    """A `RunError` as JSON values: class, message, cause, partial result, cleanup errors."""
    # A subclass travels as the nearest class the receiving process is sure to have.
    name = next(cls.__name__ for cls in type(error).__mro__ if cls.__name__ in _ERROR_TYPES)
    encoded: dict[str, Any] = {
        "type": name,
        "message": str(error),
        "cause": encode_cause(error.cause),
        "partial": encode_result(error.partial, items_ref=items_ref),
        "cleanup_errors": [_encode_exception(exc) for exc in error.cleanup_errors],
    }
    if isinstance(error, ModelError):
        encoded["status_code"] = error.status_code
        encoded["retryable"] = error.retryable
    return encoded


def decode_error(data: dict[str, Any], load_items: ItemsLoader | None = None) -> RunError:
    """The `RunError` `encode_error` encoded, of the same class, ready to raise."""
    cls = _ERROR_TYPES.get(data["type"], RunError)
    cause = decode_cause(data["cause"])
    partial = decode_result(data["partial"], load_items)
    error: RunError
    if cls is ModelError:
        error = ModelError(
            data["message"],
            cause=cause,
            partial=partial,
            status_code=data.get("status_code"),
            retryable=bool(data.get("retryable", False)),
        )
    else:
        error = cls(data["message"], cause=cause, partial=partial)
    error.cleanup_errors = [_decode_exception(exc) for exc in data.get("cleanup_errors", ())]
    return error


def decode_outcome(outcome: RunOutcome, load_items: ItemsLoader | None = None) -> RunResult:
    """The run's `RunResult`, or raise its `RunError` — what a local ``worker.run`` gives."""
    if outcome.error is not None:
        raise decode_error(outcome.error, load_items)
    if outcome.result is None:
        raise LLMWorkerError("the run's outcome holds neither a result nor an error")
    return decode_result(outcome.result, load_items)


def _encode_exception(exc: BaseException) -> dict[str, str]:
    type_name = exc.type_name if isinstance(exc, RemoteError) else type(exc).__name__
    return {"type": type_name, "message": str(exc)}


def _decode_exception(data: dict[str, str]) -> RemoteError:
    return RemoteError(data.get("type", "Exception"), data.get("message", ""))
