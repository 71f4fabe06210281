"""The one SSE parser loses nothing to a cancelled read (seed 001, moved from the old
``cancel.SSEReader`` onto `SSEDecoder`).

The decoder is synchronous and keeps every unparsed byte itself, so a read loop — ``await``
a chunk, then ``feed`` it — can be cancelled at its only await and resumed with no byte and no
event lost, whatever the chunking and wherever the cancellations land.
"""

from __future__ import annotations

import itertools
import math

import anyio
import anyio.abc
import anyio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_worker.models._sse import SSEDecoder

from .test_sse_decoder import Event, streams

RAW = (
    b": stream start\r\n"
    b"event: content_block_delta\r\n"
    b'data: {"delta": "Hello, "}\r\n'
    b'data: {"delta": "world"}\r\n'
    b"\r\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ("content_block_delta", '{"delta": "Hello, "}\n{"delta": "world"}'),
    ("", "[DONE]"),
]


async def _read_once(
    receive: anyio.abc.ObjectReceiveStream[bytes], decoder: SSEDecoder, events: list[Event]
) -> bool:
    """One read of the loop under test: await a chunk, then feed it (no await in between).
    False at the end of the body. Cancellation: only the await can be cut; it takes nothing."""
    try:
        chunk = await receive.receive()
    except anyio.EndOfStream:
        events.extend(decoder.end())
        return False
    events.extend(decoder.feed(chunk))
    return True


async def test_an_sse_event_split_across_many_chunks_survives_a_cancellation_between_each() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](math.inf)
    decoder = SSEDecoder()
    events: list[Event] = []
    interrupted = 0
    with send, receive:
        for byte in RAW:
            with anyio.CancelScope() as scope:
                scope.cancel()  # the read is cancelled before it could take anything
                await _read_once(receive, decoder, events)
            interrupted += scope.cancelled_caught
            await send.send(bytes([byte]))
            with anyio.CancelScope() as scope:
                await _read_once(receive, decoder, events)
        send.close()
        while await _read_once(receive, decoder, events):
            pass
    assert events == EXPECTED
    assert interrupted == len(RAW)


async def test_a_decoder_read_raced_against_a_timer_over_tcp_loses_no_event() -> None:
    """Real sockets, real timeouts: reads cut at random points by ``move_on_after``."""
    count = 300
    body = b"".join(b'event: n\ndata: {"i": %d}\n\n' % i for i in range(count))

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            for start in range(0, len(body), 7):  # small writes, to split lines and events
                await stream.send(body[start : start + 7])
                await anyio.lowlevel.checkpoint()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    decoder = SSEDecoder()
    events: list[Event] = []
    timeouts = itertools.cycle([0.0, 0.0001, 0.001, 0.0])
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            ended = False
            with anyio.fail_after(30):
                while not ended:
                    with anyio.move_on_after(next(timeouts)):
                        try:
                            chunk = await client.receive()
                        except anyio.EndOfStream:
                            events.extend(decoder.end())
                            ended = True
                        else:
                            events.extend(decoder.feed(chunk))
        group.cancel_scope.cancel()
    assert events == [("n", f'{{"i": {i}}}') for i in range(count)]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=150, deadline=None)
@given(
    stream=streams(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=60),
    interrupt_at=st.sets(st.integers(min_value=0, max_value=120), max_size=60),
)
def test_sse_events_survive_any_chunking_and_any_interruptions(
    stream: tuple[bytes, list[Event]], cuts: list[int], interrupt_at: set[int]
) -> None:
    """A read interrupted at its await (before it took a chunk) is simply tried again."""
    body, expected = stream
    chunks = iter(_split(body, cuts))
    decoder = SSEDecoder()
    events: list[Event] = []
    for attempt in itertools.count():
        if attempt in interrupt_at:
            continue  # a cancelled read: it took nothing, and the decoder kept its state
        chunk = next(chunks, None)
        if chunk is None:
            break
        events.extend(decoder.feed(chunk))
    events.extend(decoder.end())
    assert events == expected
