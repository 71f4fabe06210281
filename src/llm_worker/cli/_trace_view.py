"""Rendering a JSON-lines span file (``--trace FILE``) as trees, one per trace, for people.

Invariants:
* Reads only JSON (the SDK's ``ReadableSpan.to_json`` form); needs no OpenTelemetry package.
  A line that is not a span is counted and skipped, never a crash.
* Every string from the file passes through `visible` before it is printed: a span name or
  attribute cannot drive the terminal.
* Children are ordered by start time; a span whose parent is not in the file (a remote parent
  from a ``traceparent`` header) is a root, and says so.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._safe import visible

__all__ = ["read_spans", "render_traces"]


@dataclass
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start: datetime.datetime | None
    end: datetime.datetime | None
    status: str
    description: str | None
    attributes: Mapping[str, Any]
    events: list[Mapping[str, Any]]
    children: list[SpanRecord] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


def read_spans(lines: Iterable[str]) -> tuple[list[SpanRecord], int]:
    """The spans in ``lines``, and how many non-empty lines were not spans."""
    spans: list[SpanRecord] = []
    skipped = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            spans.append(_record(json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
    return spans, skipped


def _record(data: Mapping[str, Any]) -> SpanRecord:
    context = data["context"]
    status = data.get("status") or {}
    return SpanRecord(
        name=str(data["name"]),
        trace_id=str(context["trace_id"]),
        span_id=str(context["span_id"]),
        parent_id=str(data["parent_id"]) if data.get("parent_id") else None,
        start=_time(data.get("start_time")),
        end=_time(data.get("end_time")),
        status=str(status.get("status_code", "UNSET")),
        description=status.get("description"),
        attributes=dict(data.get("attributes") or {}),
        events=list(data.get("events") or []),
    )


def _time(text: object) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.datetime.fromisoformat(text)


def render_traces(spans: list[SpanRecord]) -> Iterator[str]:
    """Lines of text: each trace's spans as a tree, traces in the order they started."""
    by_id = {span.span_id: span for span in spans}
    roots: list[SpanRecord] = []
    for span in spans:
        parent = by_id.get(span.parent_id) if span.parent_id else None
        if parent is not None and parent is not span:
            parent.children.append(span)
        else:
            roots.append(span)
    for span in spans:
        span.children.sort(key=_start_key)
    roots.sort(key=_start_key)
    current_trace = None
    for root in roots:
        if root.trace_id != current_trace:
            current_trace = root.trace_id
            yield f"trace {visible(root.trace_id)}"
        if root.parent_id is not None:
            yield f"  (parent {visible(root.parent_id)} is in another process)"
        yield from _render(root, prefix="", branch="", child_prefix="")


def _start_key(span: SpanRecord) -> datetime.datetime:
    return span.start or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _render(span: SpanRecord, prefix: str, branch: str, child_prefix: str) -> Iterator[str]:
    head = f"{visible(span.name, one_line=True)}  {_duration(span.seconds)}"
    summary = _summary(span)
    if summary:
        head += f"  {summary}"
    yield f"{prefix}{branch}{head}"
    detail_prefix = prefix + child_prefix + ("│  " if span.children else "   ")
    for line in _details(span):
        yield f"{detail_prefix}{line}"
    for index, child in enumerate(span.children):
        last = index == len(span.children) - 1
        yield from _render(
            child,
            prefix=prefix + child_prefix,
            branch="└─ " if last else "├─ ",
            child_prefix="   " if last else "│  ",
        )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "(open)"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.3f} s"


def _summary(span: SpanRecord) -> str:
    """One line after the name: the outcome, or the turn, or the tool's status."""
    a = span.attributes
    parts: list[str] = []
    operation = a.get("gen_ai.operation.name")
    if operation == "invoke_agent":
        parts.append(str(a.get("llm_worker.run.outcome", "?")))
        parts.append(f"model {a.get('gen_ai.system')}:{a.get('gen_ai.request.model')}")
    elif operation == "chat":
        parts.append(f"turn {a.get('llm_worker.turn', '?')}")
        if a.get("llm_worker.turn.interrupted"):
            parts.append("interrupted")
        reasons = a.get("gen_ai.response.finish_reasons")
        if reasons:
            parts.append("finish " + ",".join(str(r) for r in reasons))
        tokens = (a.get("gen_ai.usage.input_tokens"), a.get("gen_ai.usage.output_tokens"))
        if tokens != (None, None):
            parts.append(f"tokens in {tokens[0]} out {tokens[1]}")
    elif operation == "execute_tool":
        parts.append(str(a.get("llm_worker.tool.status", "?")))
        if "llm_worker.tool.thread" in a:
            parts.append(f"in thread {a['llm_worker.tool.thread']}")
        if "llm_worker.tool.partial_output_chars" in a:
            parts.append(f"{a['llm_worker.tool.partial_output_chars']} chars of partial output")
        if a.get("llm_worker.tool.overran"):
            parts.append("ignored its token")
    elif a.get("llm_worker.cleanup.errors"):
        parts.append(f"{a['llm_worker.cleanup.errors']} clean-up errors")
    if span.status == "ERROR":
        parts.append(f"ERROR {span.description or ''}".rstrip())
    return visible(" · ".join(parts), one_line=True)


_KEPT = (
    ("llm_worker.kept.items", "items"),
    ("llm_worker.kept.interrupted_text_chars", "chars of interrupted text"),
    ("llm_worker.kept.tool_results", "tool results"),
    ("llm_worker.kept.partial_outputs", "partial outputs"),
    ("llm_worker.kept.synthetic_results", "calls answered for the tool"),
    ("llm_worker.kept.incomplete_calls", "calls cut off mid-arguments"),
)


def _details(span: SpanRecord) -> Iterator[str]:
    """Lines under a span: why it stopped, where, what it kept, and when cancel() came."""
    a = span.attributes
    tree = a.get("llm_worker.cause.tree")
    if tree:
        yield "cause:"
        for line in str(tree).splitlines():
            yield "  " + visible(line, one_line=True)
    elif "llm_worker.cause.text" in a and _explains_itself(span):
        yield "cause: " + visible(str(a["llm_worker.cause.text"]), one_line=True)
    where = []
    if "llm_worker.stop.noticed_at" in a:
        where.append(f"noticed while {a['llm_worker.stop.noticed_at']}")
    if "llm_worker.stop.cancel_to_return_ms" in a:
        where.append(f"cancel → returned {float(a['llm_worker.stop.cancel_to_return_ms']):.1f} ms")
    if "llm_worker.cleanup.duration_ms" in a:
        where.append(f"clean-up {float(a['llm_worker.cleanup.duration_ms']):.1f} ms")
    if where:
        yield visible(" · ".join(where), one_line=True)
    if "llm_worker.kept.items" in a and "llm_worker.cause.kind" in a:
        kept = [f"{a[key]} {label}" for key, label in _KEPT if a.get(key) or key == _KEPT[0][0]]
        yield visible("kept: " + " · ".join(kept), one_line=True)
    for event in span.events:
        yield _event_line(span, event)


def _explains_itself(span: SpanRecord) -> bool:
    """A run, a tool or a hook says why it stopped; clean-up repeats its run's cause (not shown)."""
    return span.attributes.get("gen_ai.operation.name") != "chat" and not span.name.endswith(
        ".cleanup"
    )


def _event_line(span: SpanRecord, event: Mapping[str, Any]) -> str:
    attributes = event.get("attributes") or {}
    moment = _time(event.get("timestamp"))
    offset = ""
    if moment is not None and span.start is not None:
        offset = f"+{_duration((moment - span.start).total_seconds())} "
    if event.get("name") == "llm_worker.cancel":
        text = f"{offset}cancel() called in thread {attributes.get('llm_worker.cancel.thread')}"
        if "llm_worker.cause.text" in attributes:
            text += f": {attributes['llm_worker.cause.text']}"
    else:
        text = f"{offset}{event.get('name')} {dict(attributes) if attributes else ''}".rstrip()
    return "⚡ " + visible(text, one_line=True)
