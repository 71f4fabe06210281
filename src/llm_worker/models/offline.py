"""The built-in offline model: streamed, deterministic answers with no key and no network.

It lets ``make demo``, the command line and tests drive the whole worker — streaming, parallel
tool calls, interruption and resumption — without a provider.

Invariants:
* The answer is a pure function of the request (no clock, no randomness, no per-process hash),
  planned in full before the first event: same request, same events.
* Every event is preceded by an await — ``anyio.sleep(pace)`` before content, a checkpoint
  before the rest — so a person or a test can stop it anywhere; cancelled there, it just stops.
* The stream holds nothing but its generator, which leaving the ``async with`` closes.

What it answers, from the request alone:

* tool results after the latest user message → a summary of them, naming those not ``ok``;
* a latest user message that names tools of the request → a short sentence, then one call per
  named tool (parallel calls), with arguments made up from each tool's JSON schema and the prompt;
* anything else → a few sentences that echo the prompt.

An ``interrupted`` note after the last assistant message makes the answer say so first.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager

import anyio
import anyio.lowlevel

from ..errors import UnsupportedAttachment
from ..events import StreamEvent
from ..items import UserMessage
from ._base import ModelRequest
from ._in_process import closing_stream
from ._offline_answer import plan_answer

__all__ = ["OfflineModel"]


class OfflineModel:
    """A `Model` that answers from templates, paced like a real provider.

    ``pace`` is the pause in seconds before each text, reasoning or argument chunk (0 still
    yields to the event loop), ``words_per_chunk`` the size of a text chunk, and ``reasoning``
    adds a short reasoning block before the answer.

    Structured output is native: asked for one (``request.output``), its answer is JSON made up
    from the schema and the prompt, streamed like text.

    Cancellation: every event is preceded by an await at which a cancellation simply stops the
    stream; leaving the ``async with`` closes it (shielded, bounded). Nothing else to release.
    """

    native_output = True

    def __init__(
        self, *, pace: float = 0.03, reasoning: bool = False, words_per_chunk: int = 1
    ) -> None:
        if pace < 0:
            raise ValueError(f"pace must be >= 0, got {pace!r}")
        if words_per_chunk < 1:
            raise ValueError(f"words_per_chunk must be >= 1, got {words_per_chunk!r}")
        self.pace = pace
        self.reasoning = reasoning
        self.words_per_chunk = words_per_chunk

    def __repr__(self) -> str:
        return (
            f"OfflineModel(pace={self.pace!r}, reasoning={self.reasoning!r}, "
            f"words_per_chunk={self.words_per_chunk!r})"
        )

    @property
    def name(self) -> str:
        return "offline"

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a stream of the answer to ``request``; nothing happens until it is iterated.

        Cancellation: lands at the await before any event; the events already yielded stay
        delivered and the ``async with`` exits cleanly.
        """
        return closing_stream(self._events(request), what="closing the offline stream")

    async def _events(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        for item in request.history:
            if isinstance(item, UserMessage) and any(p.type != "text" for p in item.parts):
                raise UnsupportedAttachment(
                    "the offline model cannot read attachments (images, documents): use a "
                    "provider that can, such as openai or anthropic"
                )
        for make, paced in plan_answer(
            request, reasoning=self.reasoning, chunk=self.words_per_chunk
        ):
            if paced:
                await anyio.sleep(self.pace)
            else:
                await anyio.lowlevel.checkpoint()
            yield make()
