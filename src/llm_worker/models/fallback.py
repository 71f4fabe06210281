"""`FallbackModel`: the next model answers when one fails before it said anything.

Invariants:
* A model is left for the next one only *before any content streamed* from it (content: any
  event but `Retrying`, `UsageUpdate` and `AnsweredBy`), and only for a transient failure — a
  `ModelError` the providers classify as retryable (429, 5xx, a dropped or empty stream, a
  timeout) or a retryable `StreamError`; by default. Once content streamed, the stream is that
  model's to the end: a failure then is raised as it is and the worker keeps what streamed
  (never a second answer spliced onto the first).
* Before the first content of the model that answers, an `AnsweredBy` event names it, so the
  assistant message records which model answered (``AssistantMessage.model``); each switch is
  reported as a `Retrying` event (delay 0) that says why.
* Each model's stream is entered and left inside this one (``async with``), so leaving — at any
  await, by cancellation too — closes the stream in use (the providers close their HTTP
  response shielded and bounded) before the cancellation propagates. Nothing else is held.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

from ..errors import ModelError
from ..events import AnsweredBy, Retrying, StreamError, StreamEvent, UsageUpdate
from ._base import Model, ModelRequest
from ._in_process import closing_stream
from ._registry import resolve_model

__all__ = ["FallbackModel"]


def transient(error: ModelError) -> bool:
    """The default test: the providers' own retryable classification."""
    return error.retryable


class FallbackModel:
    """A `Model` that asks ``primary``, then each of ``fallbacks`` in turn, until one answers.

    A model moves on to the next when it fails transiently *before any content streamed*
    (``should_fall_back(error)``, default: the error is retryable); the last model's failure is
    raised. Give the primary a short `RetryPolicy` if the switch should come soon: each model
    retries on its own first. Models may be spec strings (``"openai:gpt-4o-mini"``).

    Structured output is native only when every model's is (else all use the final-answer
    tool, which every model can call).

    Cancellation: at any await the stream of the model in use is closed (shielded, bounded)
    and the cancellation propagates; what streamed stays delivered.
    """

    def __init__(
        self,
        primary: Model | str,
        *fallbacks: Model | str,
        should_fall_back: Callable[[ModelError], bool] = transient,
    ) -> None:
        if not fallbacks:
            raise ValueError("FallbackModel needs at least one model to fall back to")
        self.models: tuple[Model, ...] = tuple(resolve_model(m) for m in (primary, *fallbacks))
        self.should_fall_back = should_fall_back

    def __repr__(self) -> str:
        return f"FallbackModel({', '.join(repr(m) for m in self.models)})"

    @property
    def name(self) -> str:
        return self.models[0].name

    @property
    def native_output(self) -> bool:
        return all(getattr(model, "native_output", False) for model in self.models)

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream ``request`` from the first model that answers (see the class)."""
        return closing_stream(self._events(request), what="closing the fallback stream")

    async def _events(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        last = len(self.models) - 1
        for position, model in enumerate(self.models):
            failure: ModelError | None = None
            async with model.stream(request) as events:
                answering = False
                try:
                    async for event in events:
                        if not answering and not isinstance(event, _NOT_CONTENT):
                            if (
                                type(event) is StreamError
                                and event.retryable
                                and position < last
                                and self.should_fall_back(ModelError(event.message, retryable=True))
                            ):
                                failure = ModelError(event.message, retryable=True)
                                break
                            answering = True
                            yield AnsweredBy(model=model.name)
                        yield event
                except ModelError as exc:
                    if answering or position == last or not self.should_fall_back(exc):
                        raise
                    failure = exc
            if failure is None:
                return
            following = self.models[position + 1].name
            yield Retrying(
                attempt=position + 1,
                delay=0.0,
                error=f"{model.name} failed ({failure}); falling back to {following}",
            )

    async def aclose(self) -> None:
        """Close the models that can be closed (HTTP clients they built)."""
        for model in self.models:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_NOT_CONTENT = (Retrying, UsageUpdate, AnsweredBy)
