"""Cancel-safe readers: a read interrupted at any await loses no byte (seed 001)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest
from anyio.streams.memory import MemoryObjectSendStream
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_worker.cancel import BufferedReader, ServerSentEvent, SSEReader

T = TypeVar("T")


class Pipe:
    """An unbounded memory byte stream whose reader reports when it has to wait for data."""

    def __init__(self) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[bytes](math.inf)
        self.reader = BufferedReader(self._receive_chunk)
        self.blocked = anyio.Event()

    async def _receive_chunk(self) -> bytes:
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            self.blocked.set()
        except anyio.EndOfStream:
            return b""
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return b""

    async def read_or_interrupt(self, read: Callable[[], Awaitable[T]]) -> list[T]:
        """Run ``read()``; if it must wait for data, cancel it right there.

        Returns ``[result]``, or ``[]`` when the read was interrupted.
        """
        result: list[T] = []
        self.blocked = anyio.Event()

        async with anyio.create_task_group() as group:

            async def reading() -> None:
                result.append(await read())
                group.cancel_scope.cancel()

            group.start_soon(reading)
            await self.blocked.wait()
            group.cancel_scope.cancel()
        return result


@contextmanager
def memory_pipe() -> Iterator[tuple[MemoryObjectSendStream[bytes], BufferedReader]]:
    """A writer's end and a reader on an unbounded memory stream; both ends closed afterwards."""
    send, receive = anyio.create_memory_object_stream[bytes](math.inf)
    with send, receive:
        yield send, BufferedReader.from_stream(receive)  # type: ignore[arg-type]


@contextmanager
def interruptible_pipe() -> Iterator[Pipe]:
    pipe = Pipe()
    with pipe.send, pipe._receive:
        yield pipe


# -- BufferedReader --------------------------------------------------------------------------


async def test_readline_returns_lines_then_the_unterminated_rest_then_none() -> None:
    with memory_pipe() as (send, reader):
        await send.send(b"first\nsec")
        await send.send(b"ond\nlast")
        send.close()

        assert await reader.readline() == b"first\n"
        assert await reader.readline() == b"second\n"
        assert await reader.readline() == b"last"
        assert await reader.readline() is None
        assert await reader.readline() is None


async def test_read_until_finds_a_delimiter_split_across_chunks() -> None:
    with memory_pipe() as (send, reader):
        for chunk in [b"head\r", b"\n", b"\r", b"\nbody"]:
            await send.send(chunk)
        send.close()

        assert await reader.read_until(b"\r\n\r\n") == b"head\r\n\r\n"
        assert await reader.read_until(b"\r\n\r\n") == b"body"


async def test_an_interrupted_read_keeps_the_received_bytes_for_the_next_read() -> None:
    with interruptible_pipe() as pipe:
        await pipe.send.send(b"hel")

        assert await pipe.read_or_interrupt(pipe.reader.readline) == []  # waited for the rest

        assert pipe.reader.buffered == b"hel"
        await pipe.send.send(b"lo\nnext")
        assert await pipe.reader.readline() == b"hello\n"
        assert pipe.reader.buffered == b"next"


async def test_a_read_with_another_delimiter_after_an_interrupted_read_finds_its_delimiter() -> (
    None
):
    with interruptible_pipe() as pipe:
        await pipe.send.send(b"ab\r")

        assert await pipe.read_or_interrupt(pipe.reader.readline) == []  # "ab\r" has no b"\n"
        await pipe.send.send(b"\nrest")
        pipe.send.close()

        assert await pipe.reader.read_until(b"\r\n") == b"ab\r\n"
        assert await pipe.reader.read_until(b"\r\n") == b"rest"


async def test_a_second_concurrent_read_is_refused() -> None:
    with interruptible_pipe() as pipe:
        errors: list[BaseException] = []

        async def second_read() -> None:
            try:
                await pipe.reader.readline()
            except RuntimeError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(pipe.reader.readline)
            await pipe.blocked.wait()
            await second_read()
            await pipe.send.send(b"line\n")

        assert len(errors) == 1
        assert "already pending" in str(errors[0])


async def test_a_record_longer_than_the_limit_raises_and_keeps_the_buffer() -> None:
    chunks = iter([b"x" * 10, b"y" * 10, b"\n"])

    async def receive() -> bytes:
        return next(chunks, b"")

    reader = BufferedReader(receive, max_record=15)

    with pytest.raises(ValueError, match="longer than 15"):
        await reader.readline()
    assert reader.buffered == b"x" * 10 + b"y" * 10


async def test_an_empty_delimiter_is_refused() -> None:
    with memory_pipe() as (_, reader), pytest.raises(ValueError, match="empty"):
        await reader.read_until(b"")


async def test_from_stream_reads_lines_from_a_tcp_byte_stream() -> None:
    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client:
            for chunk in [b"one\ntw", b"o\n", b"three"]:
                await client.send(chunk)
                await anyio.sleep(0.001)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            reader = BufferedReader.from_stream(stream)
            lines = [await reader.readline() for _ in range(4)]
        group.cancel_scope.cancel()

    assert lines == [b"one\n", b"two\n", b"three", None]


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_reader_raced_against_a_timer_a_thousand_times_loses_no_byte(
    anyio_backend: object, transport: str
) -> None:
    """Seed 001's example: a slow writer, lines in small chunks, a reader cut by a timeout.

    The writer goes on writing lines until the reader was interrupted at least 1000 times.
    """
    rng = random.Random(1)
    written: list[bytes] = []
    received: list[bytes] = []
    interrupted = 0
    interrupted_mid_line = 0

    async def read_all(reader: BufferedReader) -> None:
        nonlocal interrupted, interrupted_mid_line
        while True:
            with anyio.move_on_after(rng.choice([0.00005, 0.0001, 0.0003])) as timer:
                line = await reader.readline()
            if timer.cancelled_caught:
                interrupted += 1
                interrupted_mid_line += bool(reader.buffered)
                continue
            if line is None:
                return
            received.append(line)

    async def write_slowly(send: Callable[[bytes], Coroutine[Any, Any, None]]) -> None:
        while interrupted < 1000 or len(written) < 50:
            line = f"line {len(written)}: {'x' * rng.randrange(0, 30)}\n".encode()
            written.append(line)
            position = 0
            while position < len(line):
                size = rng.randint(1, 6)
                await send(line[position : position + size])
                position += size
                await anyio.sleep(0.001)

    with anyio.fail_after(30):
        if transport == "memory":
            with memory_pipe() as (send_stream, reader):
                async with anyio.create_task_group() as group:
                    group.start_soon(read_all, reader)
                    async with send_stream:
                        await write_slowly(send_stream.send)
        else:

            async def serve(client: anyio.abc.SocketStream) -> None:
                async with client:
                    await write_slowly(client.send)

            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            async with listener, anyio.create_task_group() as group:
                group.start_soon(listener.serve, serve)
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await read_all(BufferedReader.from_stream(stream))
                group.cancel_scope.cancel()

    assert b"".join(received) == b"".join(written)
    assert received == written
    assert interrupted >= 1000
    assert interrupted_mid_line >= 500  # most reads were cut with part of a line in hand


# -- property: any chunking, any interruption points -----------------------------------------


class _Interrupt(BaseException):
    """Stands for a cancellation raised at the reader's await."""


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its source answers at once) to completion."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the reader suspended although its source never blocks")


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class _Source:
    """A receive function that raises `_Interrupt` on the calls numbered in ``interrupt_at``."""

    def __init__(self, chunks: list[bytes], interrupt_at: set[int]) -> None:
        self._pending: Iterator[bytes] = iter(chunks)
        self._interrupt_at = interrupt_at
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.calls in self._interrupt_at:
            raise _Interrupt
        return next(self._pending, b"")


def _read_all(read: Callable[[], Coroutine[Any, Any, T | None]]) -> tuple[list[T], int]:
    results: list[T] = []
    interrupts = 0
    while True:
        try:
            result = _drive(read())
        except _Interrupt:
            interrupts += 1
            continue
        if result is None:
            return results, interrupts
        results.append(result)


lines_strategy = st.lists(
    st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"]), max_size=20),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(
    lines=lines_strategy,
    final_newline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    interrupt_at=st.sets(st.integers(min_value=1, max_value=80), max_size=40),
)
def test_any_chunking_and_any_interruptions_give_the_same_lines(
    lines: list[str], final_newline: bool, cuts: list[int], interrupt_at: set[int]
) -> None:
    text = "\n".join(lines) + ("\n" if final_newline and lines else "")
    data = text.encode()
    source = _Source(_split(data, cuts), interrupt_at)
    reader = BufferedReader(source)

    received, interrupts = _read_all(reader.readline)

    parts = data.split(b"\n")
    expected = [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    assert received == expected
    assert interrupts == len([i for i in interrupt_at if i <= source.calls])


# -- SSEReader -------------------------------------------------------------------------------


async def _events(raw: bytes, chunk_size: int | None = None) -> list[ServerSentEvent]:
    with memory_pipe() as (send, reader):
        size = chunk_size or len(raw) or 1
        for i in range(0, len(raw), size):
            await send.send(raw[i : i + size])
        send.close()
        sse = SSEReader(reader)
        events = []
        while (event := await sse.next_event()) is not None:
            events.append(event)
        return events


async def test_sse_joins_multi_line_data_with_newlines() -> None:
    events = await _events(b"data: first line\ndata: second line\ndata:\n\n")

    assert events == [ServerSentEvent(data="first line\nsecond line\n")]


async def test_sse_ignores_comments_and_unknown_fields() -> None:
    events = await _events(b": keep-alive\n:another\nfoo: bar\ndata: x\n: inside\n\n: end\n\n")

    assert events == [ServerSentEvent(data="x")]


async def test_sse_accepts_crlf_line_endings() -> None:
    events = await _events(b"event: delta\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n")

    assert events == [
        ServerSentEvent(data="a\nb", event="delta"),
        ServerSentEvent(data="c"),
    ]


async def test_sse_reads_event_id_and_retry_fields() -> None:
    raw = b"event: ping\nid: 7\nretry: 1500\ndata: {}\n\ndata: next\n\nid\nretry: 2x\ndata: z\n\n"

    events = await _events(raw)

    assert events == [
        ServerSentEvent(data="{}", event="ping", id="7", retry=1500),
        ServerSentEvent(data="next", id="7", retry=1500),  # the last id carries over
        ServerSentEvent(data="z", id="", retry=1500),  # a bare "id" resets it; bad retry ignored
    ]


async def test_sse_strips_one_space_after_the_colon_only() -> None:
    events = await _events(b"data:no space\ndata:  two spaces\ndata\n\n")

    assert events == [ServerSentEvent(data="no space\n two spaces\n")]


async def test_sse_ignores_a_retry_that_is_not_ascii_digits() -> None:
    events = await _events("retry: ²\ndata: x\n\n".encode())

    assert events == [ServerSentEvent(data="x")]


async def test_sse_replaces_invalid_utf8_instead_of_breaking_the_stream() -> None:
    events = await _events(b"data: bad \xff byte\n\ndata: next\n\n")

    assert events == [ServerSentEvent(data="bad \ufffd byte"), ServerSentEvent(data="next")]


async def test_sse_skips_a_leading_byte_order_mark() -> None:
    events = await _events("\ufeffdata: x\n\n".encode())

    assert events == [ServerSentEvent(data="x")]


async def test_sse_drops_a_final_event_without_its_blank_line() -> None:
    events = await _events(b"data: complete\n\ndata: cut off\n")

    assert events == [ServerSentEvent(data="complete")]


async def test_sse_parses_the_same_events_from_single_byte_chunks() -> None:
    raw = b"event: a\r\ndata: 1\r\n\r\n: c\ndata: 2\ndata: 3\n\n"

    assert await _events(raw, chunk_size=1) == await _events(raw)


async def test_an_sse_event_split_across_many_chunks_survives_a_cancellation_between_each() -> None:
    raw = (
        b": stream start\r\n"
        b"event: content_block_delta\r\n"
        b'data: {"delta": "Hello, "}\r\n'
        b'data: {"delta": "world"}\r\n'
        b"\r\n"
        b"data: [DONE]\n\n"
    )
    with interruptible_pipe() as pipe:
        sse = SSEReader(pipe.reader)
        events: list[ServerSentEvent] = []
        interrupted = 0

        for byte in raw:
            await pipe.send.send(bytes([byte]))
            result = await pipe.read_or_interrupt(sse.next_event)
            if result:
                assert result[0] is not None
                events.append(result[0])
            else:
                interrupted += 1
        pipe.send.close()
        assert await sse.next_event() is None

        assert events == [
            ServerSentEvent(
                data='{"delta": "Hello, "}\n{"delta": "world"}', event="content_block_delta"
            ),
            ServerSentEvent(data="[DONE]"),
        ]
        assert interrupted == len(raw) - 2  # every byte but the two that completed an event


@settings(max_examples=150, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=60),
    interrupt_at=st.sets(st.integers(min_value=1, max_value=120), max_size=60),
)
def test_sse_events_survive_any_chunking_and_any_interruptions(
    cuts: list[int], interrupt_at: set[int]
) -> None:
    raw = (
        b"retry: 10\r\n: comment\r\nevent: a\r\ndata: x\r\ndata: y\r\n\r\n"
        b"id: 1\ndata: \xc3\xa9t\xc3\xa9\n\n"
        b"data: last\n\n"
    )
    expected = [
        ServerSentEvent(data="x\ny", event="a", retry=10),
        ServerSentEvent(data="été", id="1", retry=10),
        ServerSentEvent(data="last", id="1", retry=10),
    ]
    sse = SSEReader(BufferedReader(_Source(_split(raw, cuts), interrupt_at)))

    events, _ = _read_all(sse.next_event)

    assert events == expected
