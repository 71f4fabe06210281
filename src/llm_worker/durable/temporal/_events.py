"""A run's events, published to its workflow in batches, where followers read them by position.

Invariants:
* `EventPublisher.add` never awaits or blocks (the run emits events synchronously); events are
  sent in order, one batch at a time, every ``interval`` seconds and once more at the end.
* A batch that could not be sent is kept and sent with the next one: none is dropped while the
  activity lives. Events of an attempt that crashed are lost with it (the run's items are not:
  they are in the session store); the next attempt's events follow them.
* Every signal stays well under Temporal's payload limit: a batch holds at most ``BATCH_BYTES``;
  an event larger than ``EVENT_BYTES`` (an item with a huge tool output) is not published —
  followers get a `StreamError` note in its place; the item itself is in the store and result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from pydantic import TypeAdapter

from ...events import Event, StreamError

__all__ = ["EventPublisher", "decode_event", "encode_event"]

logger = logging.getLogger("llm_worker.durable")

_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_BYTES = 256 * 1024
BATCH_BYTES = 1024 * 1024


def encode_event(event: Event) -> str:
    return _event_adapter.dump_json(event).decode()


def decode_event(data: str | bytes) -> Event:
    return _event_adapter.validate_json(data)


class EventPublisher:
    """Buffers a run's events and sends them with ``send`` every ``interval`` seconds."""

    def __init__(self, send: Callable[[list[str]], Awaitable[None]], interval: float) -> None:
        self._send = send
        self.interval = interval
        self._pending: list[str] = []
        self.sent = 0

    def add(self, event: Event) -> None:
        encoded = encode_event(event)
        if len(encoded) > EVENT_BYTES:
            note = StreamError(
                message=f"a {event.type} event of {len(encoded)} bytes was not published "
                "(too large for Temporal); it is in the run's result",
                code="event_too_large",
            )
            encoded = encode_event(note)
        self._pending.append(encoded)

    async def run(self) -> None:
        """Send a batch every ``interval`` until cancelled. Cancellation: at the sleep or send."""
        while True:
            await anyio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Send what is buffered. Cancellation: the batch stays buffered if it was not sent."""
        while self._pending:
            batch = _take_batch(self._pending)
            try:
                await self._send(batch)
            except BaseException as error:
                self._pending[:0] = batch  # kept, in order, for the next flush
                if isinstance(error, Exception):
                    logger.warning("could not publish %d run events: %s", len(batch), error)
                    return
                raise
            self.sent += len(batch)


def _take_batch(pending: list[str]) -> list[str]:
    """Remove and return the first events of ``pending`` that fit in one signal (at least one)."""
    size = 0
    count = 0
    for encoded in pending:
        size += len(encoded)
        if count and size > BATCH_BYTES:
            break
        count += 1
    batch = pending[:count]
    del pending[:count]
    return batch
