"""The contract between the worker and a model: one request in, one stream of events out.

Invariants every model keeps:
* ``stream(request)`` returns an async context manager; entering it does no I/O that can hang
  (open the connection lazily, on the first ``__anext__``), and leaving it — normally, on error or
  on cancellation — releases everything the stream holds (HTTP response, connection) in a
  shielded, time-bounded block. Streaming happens only inside the ``async with``.
* The iterator yields `StreamEvent`s in provider order; an error the provider reports mid-stream
  is raised as `ModelError` (or yielded as `StreamError`), never swallowed.
* A model never mutates ``request.history``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..events import StreamEvent
from ..items import Item
from ..output._spec import OutputSpec
from ..tools import ToolSpec


@dataclass(frozen=True)
class ModelSettings:
    """Generation settings a model may honour; None means the provider's default."""

    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class ModelRequest:
    """Everything a model needs for one turn."""

    history: Sequence[Item]
    system: str | None = None
    tools: Sequence[ToolSpec] = ()
    settings: ModelSettings = field(default_factory=ModelSettings)
    output: OutputSpec | None = None  # a structured answer (`llm_worker.output`)


@runtime_checkable
class Model(Protocol):
    """Anything that can stream a turn: the offline model, the HTTP providers, a scripted model.

    A model may also have ``native_output = True``: it honours ``request.output`` in ``native``
    mode (the answer's text is constrained to the schema). Without it, structured output comes
    through a final-answer tool.
    """

    @property
    def name(self) -> str:
        """A short label for logs and status lines, e.g. ``"openai:gpt-4o-mini"``."""
        ...

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a stream of events for ``request`` (see the module invariants)."""
        ...
