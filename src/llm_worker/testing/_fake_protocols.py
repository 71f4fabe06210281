"""What each provider's stream and errors look like: the synthetic bodies the fake server sends.

One generator per wire protocol (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages,
Gemini's ``streamGenerateContent``, Ollama's native ``/api/chat``), each yielding whole wire
events for the given text pieces, and `error_body`, an error shaped like the endpoint that was hit.

Invariants: every body is a pure function of its arguments (fixed ids and timestamps, no clock),
so the same reply always sends the same bytes; usage counts one output token per piece.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ._fake_http import reason_phrase
from ._fake_wire import dumps, ndjson_line, sse_crlf, sse_data, sse_named


def openai_chat_events(
    pieces: Sequence[str], *, model: str, usage: bool, finish_reason: str, done: bool
) -> Iterator[bytes]:
    """A Chat Completions stream (see `Reply.openai_text`)."""
    base: dict[str, Any] = {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    extra: dict[str, Any] = {"usage": None} if usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse_data({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    memo: dict[str, bytes] = {}  # a repeated piece is encoded once
    for piece in pieces:
        data = memo.get(piece)
        if data is None:
            data = chunk({"content": piece})
            if len(memo) < 64:
                memo[piece] = data
        yield data
    yield chunk({}, finish_reason)
    if usage:
        n = len(pieces)
        counts = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
        yield sse_data({**base, "choices": [], "usage": counts})
    if done:
        yield b"data: [DONE]\n\n"


def anthropic_events(pieces: Sequence[str], *, model: str, stop_reason: str) -> Iterator[bytes]:
    """An Anthropic Messages stream (see `Reply.anthropic_text`)."""
    message: dict[str, Any] = {
        "id": "msg_fake0001",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 8, "output_tokens": 1},
    }
    yield sse_named({"type": "message_start", "message": message})
    block = {"type": "text", "text": ""}
    yield sse_named({"type": "content_block_start", "index": 0, "content_block": block})
    yield sse_named({"type": "ping"})
    memo: dict[str, bytes] = {}  # a repeated piece is encoded once
    for piece in pieces:
        data = memo.get(piece)
        if data is None:
            delta = {"type": "text_delta", "text": piece}
            data = sse_named({"type": "content_block_delta", "index": 0, "delta": delta})
            if len(memo) < 64:
                memo[piece] = data
        yield data
    yield sse_named({"type": "content_block_stop", "index": 0})
    yield sse_named(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        }
    )
    yield sse_named({"type": "message_stop"})


def anthropic_tool_events(
    name: str, pieces: Sequence[str], *, model: str, call_id: str
) -> Iterator[bytes]:
    """An Anthropic Messages stream of one tool call (see `Reply.anthropic_tool_call`)."""
    message: dict[str, Any] = {
        "id": "msg_fake0002",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 8, "output_tokens": 1},
    }
    yield sse_named({"type": "message_start", "message": message})
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    yield sse_named({"type": "content_block_start", "index": 0, "content_block": block})
    for piece in pieces:
        delta = {"type": "input_json_delta", "partial_json": piece}
        yield sse_named({"type": "content_block_delta", "index": 0, "delta": delta})
    yield sse_named({"type": "content_block_stop", "index": 0})
    yield sse_named(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        }
    )
    yield sse_named({"type": "message_stop"})


def responses_events(pieces: Sequence[str], *, model: str) -> Iterator[bytes]:
    """An OpenAI Responses stream (see `Reply.responses_text`)."""
    seq = iter(range(1 << 62))
    item_id = "msg_fake0001"

    def event(kind: str, **fields: Any) -> bytes:
        return sse_named({"type": kind, "sequence_number": next(seq), **fields})

    def response(status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        return {
            "id": "resp_fake0001",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
        }

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=response("in_progress", [], None))
    yield event("response.in_progress", response=response("in_progress", [], None))
    item: dict[str, Any] = {
        "id": item_id,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    yield event("response.output_item.added", output_index=0, item=item)
    part: dict[str, Any] = {
        "type": "output_text",
        "annotations": [],
        "logprobs": [],
        "text": "",
    }
    yield event("response.content_part.added", **where, part=part)
    for piece in pieces:
        yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    full = "".join(pieces)
    yield event("response.output_text.done", **where, text=full, logprobs=[])
    part = {**part, "text": full}
    yield event("response.content_part.done", **where, part=part)
    item = {**item, "status": "completed", "content": [part]}
    yield event("response.output_item.done", output_index=0, item=item)
    n = len(pieces)
    usage = {
        "input_tokens": 8,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8 + n,
    }
    yield event("response.completed", response=response("completed", [item], usage))


def gemini_events(pieces: Sequence[str], *, model: str, finish_reason: str) -> Iterator[bytes]:
    """A Gemini ``streamGenerateContent?alt=sse`` stream (see `Reply.gemini_text`): one chunk
    per piece, each with the running usage, the last with ``finishReason``."""
    n = len(pieces)
    memo: dict[str, bytes] = {}  # a repeated piece is encoded once (while usage is unchanged)

    def chunk(piece: str, done: bool, sent: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": piece}], "role": "model"},
            "index": 0,
        }
        usage: dict[str, Any] = {"promptTokenCount": 8, "totalTokenCount": 8}
        if done:
            candidate["finishReason"] = finish_reason
            usage = {
                "promptTokenCount": 8,
                "candidatesTokenCount": sent,
                "totalTokenCount": 8 + sent,
            }
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": "fake-gemini-0001",
        }

    for position, piece in enumerate(pieces[:-1]):
        data = memo.get(piece)
        if data is None:
            data = sse_crlf(chunk(piece, False, position + 1))
            if len(memo) < 64:
                memo[piece] = data
        yield data
    yield sse_crlf(chunk(pieces[-1] if pieces else "", True, n))


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def is_gemini_path(path: str) -> bool:
    """A Gemini API ``models/<model>:<method>`` path (any API version)."""
    return path.startswith(("/v1beta/models/", "/v1/models/", "/v1alpha/models/"))


def ollama_events(pieces: Sequence[str], *, model: str) -> Iterator[bytes]:
    """A native Ollama ``/api/chat`` NDJSON stream (see `Reply.ollama_text`)."""
    stamp = "2024-01-01T00:00:00Z"
    for piece in pieces:
        message = {"role": "assistant", "content": piece}
        yield ndjson_line({"model": model, "created_at": stamp, "message": message, "done": False})
    yield ndjson_line(
        {
            "model": model,
            "created_at": stamp,
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            "prompt_eval_count": 8,
            "eval_count": len(pieces),
        }
    )


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(status: int, path: str, message: str | None) -> bytes:
    """An error body in the shape the endpoint at ``path`` uses (see `Reply.error`)."""
    if message is None:
        message = "Overloaded" if status == 529 else f"{reason_phrase(status)} (scripted)"
    if is_gemini_path(path):
        status_name = _GOOGLE_STATUS.get(status, "UNKNOWN")
        body: Any = {"error": {"code": status, "message": message, "status": status_name}}
    elif path.startswith("/v1/messages") or status == 529:
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_fake",
        }
    elif path.startswith("/api/"):
        body = {"error": message}
    else:
        kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return dumps(body)
