"""AnthropicModel over real HTTP (FakeProviderServer on 127.0.0.1) and its history conversion.

Invariants checked here:
* every recorded Anthropic stream replays through a real `Worker` into the items the cassette
  holds (expectations are read from the cassette files, independently of the code under test);
* every request the model sends — first requests, follow-ups after every kind of interruption,
  and the request built from *any* history (hypothesis) — passes `request_violations`, which
  checks each rule the Messages API enforces on history (alternation, tool_use answered in the
  immediately next user message with tool_result blocks first, no text after tool_use, no empty
  text, signed thinking only);
* faults (529, 429 with Retry-After, 500, 400, a dropped stream, a malformed chunk, an ``error``
  event, an idle stall, a cut-off body) end in a typed `ModelError` with ``.partial``, or a
  retry that succeeds, and leave the worker reusable;
* cancelling closes the HTTP response at once (the server sees the disconnect), and the
  cancellation sweep finds no violated invariant at any await point;
* any split of a real stream into chunks gives the same events; garbage gives a `ModelError`.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import itertools
import json
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anthropic
import anyio
import anyio.lowlevel
import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llm_worker import Aborted, Cancelled, ModelError, RunError, ToolContext, Worker, tool
from llm_worker.events import (
    Event,
    ReasoningDelta,
    Retrying,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolStarted,
    UsageUpdate,
)
from llm_worker.history import CONVERSATION_START, MISSING_RESULT, repair
from llm_worker.hooks import Abort, Decision, HookContext, Hooks
from llm_worker.items import (
    AssistantMessage,
    Item,
    Note,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from llm_worker.models import (
    MissingCredentials,
    ModelRequest,
    ModelSettings,
    RetryPolicy,
    Timeouts,
    resolve_model,
)
from llm_worker.models.anthropic import (
    AnthropicModel,
    convert_history,
)
from llm_worker.testing import FakeProviderServer, Reply, cancellation_sweep
from llm_worker.tools import Tool, ToolSpec

from .conftest import CASSETTES, cassette_names, sse_payloads

# Marked here too, so that parametrized async tests keep their parameters (see test_fake_server).
pytestmark = pytest.mark.anyio

ANTHROPIC = cassette_names("anthropic")
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.05)
MESSAGES_PATH = "/v1/messages"


# -- the validator: what the Messages API accepts as history ---------------------------------------

_TOOL_ID = re.compile(r"[A-Za-z0-9_-]+")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _text_problem(where: str, block: dict[str, Any], *, final_assistant: bool) -> str | None:
    text = block.get("text")
    if not isinstance(text, str) or not text.strip():
        return f"{where}: empty or whitespace-only text block"
    if final_assistant and text != text.rstrip():
        return f"{where}: final assistant content ends with whitespace"
    return None


def request_violations(body: Any) -> list[str]:
    """Why the Anthropic Messages API would reject ``body`` (empty if it would accept it)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        problems.append("max_tokens is missing (it is required)")
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model is missing")
    if body.get("stream") is not True:
        problems.append("stream is not true")
    system = body.get("system")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        problems.append("system is empty")
    for spec in body.get("tools", []):
        if not _TOOL_NAME.fullmatch(str(spec.get("name"))):
            problems.append(f"tool name {spec.get('name')!r} is invalid")
        if spec.get("input_schema", {}).get("type") != "object":
            problems.append(f"tool {spec.get('name')!r}: input_schema is not an object schema")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages is empty"]
    if messages[0].get("role") != "user":
        problems.append("messages[0] is not a user message")
    thinking_on = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") in (
        "enabled",
        "adaptive",
    )
    seen_ids: set[str] = set()
    pending: list[str] = []  # tool_use ids the next message must answer
    last = len(messages) - 1
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            problems.append(f"{where}: role {role!r}")
            continue
        if i and messages[i - 1].get("role") == role:
            problems.append(f"{where}: two {role} messages in a row")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            problems.append(f"{where}: empty content")
            blocks = []
        if role == "assistant":
            if pending:
                problems.append(f"{where}: tool_use ids {pending} were not answered")
            pending = []
            phase = 0  # 0: thinking, 1: text, 2: tool_use
            for j, block in enumerate(blocks):
                kind, at = block.get("type"), f"{where}.content.{j}"
                if kind in ("thinking", "redacted_thinking"):
                    if phase:
                        problems.append(f"{at}: {kind} after text or tool_use")
                    if kind == "thinking" and not block.get("signature"):
                        problems.append(f"{at}: thinking without a signature")
                    if kind == "thinking" and not isinstance(block.get("thinking"), str):
                        problems.append(f"{at}: thinking text missing")
                    if kind == "redacted_thinking" and not block.get("data"):
                        problems.append(f"{at}: redacted_thinking without data")
                elif kind == "text":
                    if phase == 2:
                        problems.append(f"{at}: text after tool_use")
                    phase = 1
                    if problem := _text_problem(at, block, final_assistant=i == last):
                        problems.append(problem)
                elif kind == "tool_use":
                    phase = 2
                    call_id = block.get("id")
                    if not isinstance(call_id, str) or not _TOOL_ID.fullmatch(call_id):
                        problems.append(f"{at}: tool_use id {call_id!r} is invalid")
                    elif call_id in seen_ids:
                        problems.append(f"{at}: tool_use id {call_id} is not unique")
                    seen_ids.add(str(call_id))
                    pending.append(str(call_id))
                    if not _TOOL_NAME.fullmatch(str(block.get("name"))):
                        problems.append(f"{at}: tool_use name {block.get('name')!r} is invalid")
                    if not isinstance(block.get("input"), dict):
                        problems.append(f"{at}: tool_use input is not an object")
                else:
                    problems.append(f"{at}: {kind!r} block in an assistant message")
            if thinking_on and pending and i == last - 1:
                first = blocks[0].get("type") if blocks else None
                if first not in ("thinking", "redacted_thinking"):
                    problems.append(f"{where}: with thinking on, must start with a thinking block")
            continue
        answered: list[str] = []
        other = False
        for j, block in enumerate(blocks):
            kind, at = block.get("type"), f"{where}.content.{j}"
            if kind == "tool_result":
                if other:
                    problems.append(f"{at}: tool_result after other content")
                answered.append(str(block.get("tool_use_id")))
                if "content" in block and not isinstance(block["content"], str | list):
                    problems.append(f"{at}: tool_result content is neither text nor blocks")
                if "is_error" in block and not isinstance(block["is_error"], bool):
                    problems.append(f"{at}: is_error is not a boolean")
            elif kind == "text":
                other = True
                if problem := _text_problem(at, block, final_assistant=False):
                    problems.append(problem)
            else:
                problems.append(f"{at}: unexpected {kind!r} block in a user message")
        if sorted(answered) != sorted(pending) or len(set(answered)) != len(answered):
            problems.append(
                f"{where}: tool_use ids {pending} need exactly their tool_result blocks "
                f"immediately after; found {answered}"
            )
        pending = []
    if pending:
        problems.append(f"the request ends with tool_use ids {pending} unanswered")
    return problems


def assert_valid(body: Any) -> None:
    problems = request_violations(body)
    assert not problems, "\n".join(problems) + "\n" + json.dumps(body, indent=1)[:3000]


def test_the_validator_catches_each_rule() -> None:
    """A validator that accepts everything proves nothing: each broken rule is reported."""
    user = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}
    text = {"type": "text", "text": "x"}

    def body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"model": "m", "max_tokens": 5, "stream": True, "messages": list(messages), **extra}

    def said(*blocks: dict[str, Any]) -> dict[str, Any]:
        return {"role": "assistant", "content": list(blocks)}

    def asked(*blocks: dict[str, Any]) -> dict[str, Any]:
        return {"role": "user", "content": list(blocks)}

    assert request_violations(body(user, said(use), asked(result))) == []
    broken = {
        "no max_tokens": {"model": "m", "stream": True, "messages": [user]},
        "starts with assistant": body(said(text), user),
        "not alternating": body(user, user),
        "unanswered": body(user, said(use), asked(text)),
        "answered late": body(user, said(use), asked(text), said(text), asked(result)),
        "result after text": body(user, said(use), asked(text, result)),
        "orphan result": body(user, said(text), asked(result)),
        "text after tool_use": body(user, said(use, text), asked(result)),
        "empty text": body(asked({"type": "text", "text": " "})),
        "unsigned thinking": body(user, said({"type": "thinking", "thinking": "t"}, text), user),
        "thinking after text": body(
            user, said(text, {"type": "thinking", "thinking": "t", "signature": "s"}), user
        ),
        "trailing whitespace": body(user, said({"type": "text", "text": "x "})),
        "duplicate id": body(user, said(use), asked(result), said(use), asked(result)),
        "thinking on, no thinking": body(
            user, said(use), asked(result), thinking={"type": "enabled", "budget_tokens": 1024}
        ),
        "ends unanswered": body(user, said(use)),
    }
    for name, bad in broken.items():
        assert request_violations(bad), name


# -- cassettes: what each one should become -------------------------------------------------------


def expected_response(name: str) -> dict[str, Any]:
    """What the worker should keep from cassette ``name``, read from the file itself.

    Text blocks are joined as they are, or with a blank line when a block of another kind (a
    server tool's call or result) came between them; thinking keeps its signature; redacted
    thinking its data; client tool calls their id, name and joined argument fragments.
    """
    blocks: dict[int, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    stop = None
    input_tokens = output_tokens = 0
    reasoning_tokens: int | None = None  # unknown unless the stream gives it
    for _, payload in sse_payloads(name):
        kind = payload["type"]
        if kind == "message_start":
            usage = payload["message"]["usage"]
            input_tokens = sum(usage.get(k) or 0 for k in ("input_tokens", *_CACHE_KEYS))
        elif kind == "content_block_start":
            block = {**payload["content_block"], "pieces": []}
            blocks[payload["index"]] = block
            order.append(block)
        elif kind == "content_block_delta":
            delta = payload["delta"]
            value = next(v for k, v in delta.items() if k != "type")
            blocks[payload["index"]]["pieces"].append((delta["type"], value))
        elif kind == "message_delta":
            stop = payload["delta"]["stop_reason"]
            usage = payload["usage"]
            output_tokens = usage["output_tokens"]
            thinking = usage.get("output_tokens_details", {}).get("thinking_tokens")
            reasoning_tokens = reasoning_tokens if thinking is None else thinking
            if usage.get("input_tokens") is not None:
                input_tokens = sum(usage.get(k) or 0 for k in ("input_tokens", *_CACHE_KEYS))
    reasoning: list[ReasoningPart] = []
    texts: list[str] = []
    calls: list[tuple[str, str, str]] = []
    gap = False
    for block in order:
        joined = "".join(str(v) for t, v in block["pieces"] if t != "signature_delta")
        if block["type"] == "text":
            texts.append(("\n\n" if gap and texts else "") + joined)
            gap = False
        elif block["type"] == "thinking":
            signature = "".join(v for t, v in block["pieces"] if t == "signature_delta")
            reasoning.append(ReasoningPart(text=joined, signature=signature, provider="anthropic"))
        elif block["type"] == "redacted_thinking":
            reasoning.append(ReasoningPart(redacted_data=block["data"], provider="anthropic"))
        elif block["type"] == "tool_use":
            calls.append((block["id"], block["name"], joined))
        else:
            gap = True
    return {
        "text": "".join(texts),
        "reasoning": reasoning,
        "calls": calls,
        "stop": stop,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "reasoning_tokens": reasoning_tokens,
    }


_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens")


# Tools named as in the cassettes, so tool-use cassettes run and a second reply ends the run.


@tool
async def secret_retrieval_tool(password: str) -> str:
    """Retrieve the secret for a password."""
    return f"secret of {password}"


@tool
def plus(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def minus(a: int, b: int) -> int:
    """Subtract b from a."""
    return a - b


@tool
def fixed_version() -> str:
    """The version."""
    return "1.2.3"


@tool
def get_exchange_rate(from_currency: str, to_currency: str) -> str:
    """Exchange rate between two currencies."""
    return f"1 {from_currency} = 0.92 {to_currency}"


TOOLS: list[Tool[..., Any]] = [
    secret_retrieval_tool,
    plus,
    minus,
    fixed_version,
    get_exchange_rate,
]


def stuck_tools() -> list[Tool[..., Any]]:
    """The cassettes' tools, waiting until cancelled, then returning partial output."""

    async def wait(ctx: ToolContext) -> str:
        await ctx.token.wait()
        return "partial"

    async def plus(a: int, b: int, ctx: ToolContext) -> str:
        return await wait(ctx)

    async def minus(a: int, b: int, ctx: ToolContext) -> str:
        return await wait(ctx)

    async def fixed_version(ctx: ToolContext) -> str:
        return await wait(ctx)

    async def secret_retrieval_tool(password: str, ctx: ToolContext) -> str:
        return await wait(ctx)

    return [tool(f) for f in (plus, minus, fixed_version, secret_retrieval_tool)]


@pytest.fixture
async def model(fake_server: FakeProviderServer) -> AsyncIterator[AnthropicModel]:
    """An AnthropicModel on the fake server with fast retries; its client closed afterwards."""
    async with AnthropicModel(
        "claude-test",
        base_url=fake_server.anthropic_base_url,
        api_key="test-key",
        retry=FAST_RETRY,
        timeouts=Timeouts(connect=5, first_event=10, idle=10),
    ) as instance:
        yield instance


def bodies(server: FakeProviderServer) -> list[Any]:
    return [r.json for r in server.requests if r.path == MESSAGES_PATH]


# -- replaying every cassette through a worker ----------------------------------------------------


@pytest.mark.parametrize("name", ANTHROPIC)
async def test_cassette_replays_into_expected_items(
    name: str, fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """Each recorded stream becomes the items it holds; a follow-up request carries them back
    valid (thinking with its signature, every tool_use answered first thing)."""
    expected = expected_response(name)
    fake_server.enqueue(Reply.cassette(name), Reply.anthropic_text("Done."), path=MESSAGES_PATH)
    worker = Worker(model, tools=TOOLS, system="Be brief.")
    result = await worker.run("Go.")

    assert result.status == "finished"
    message = next(i for i in result.items if isinstance(i, AssistantMessage))
    assert message.text == expected["text"]
    assert [p for p in message.parts if isinstance(p, ReasoningPart)] == expected["reasoning"]
    assert message.stop_reason == expected["stop"]
    assert not message.interrupted
    assert message.usage is not None
    assert message.usage.output_tokens == expected["output_tokens"]
    assert message.usage.input_tokens == expected["input_tokens"]
    assert message.usage.reasoning_tokens == expected["reasoning_tokens"]
    calls = [i for i in result.items if isinstance(i, ToolCall)]
    assert [(c.call_id, c.name, c.raw_arguments) for c in calls] == expected["calls"]
    assert all(c.complete and c.arguments is not None for c in calls)
    results = [i for i in result.items if isinstance(i, ToolResult)]
    assert sorted(r.call_id for r in results) == sorted(c.call_id for c in calls)  # any order
    assert all(r.status == "ok" for r in results)

    sent = bodies(fake_server)
    assert len(sent) == (2 if calls else 1)
    for body in sent:
        assert_valid(body)
    first = sent[0]
    assert first["system"] == "Be brief."
    assert first["max_tokens"] == 4096
    assert {t["name"] for t in first["tools"]} == {t.name for t in TOOLS}
    assert first["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Go."}]}]
    if calls:
        assistant, answers = sent[1]["messages"][1:3]
        signed = [b for b in assistant["content"] if b["type"] in ("thinking", "redacted_thinking")]
        assert [b.get("signature") or b.get("data") for b in signed] == [
            p.signature or p.redacted_data for p in expected["reasoning"]
        ]
        uses = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert [(u["id"], u["name"]) for u in uses] == [(c[0], c[1]) for c in expected["calls"]]
        assert [u["input"] for u in uses] == [json.loads(c[2] or "{}") for c in expected["calls"]]
        # every use answered, in the order the results came (repair keeps the history's order)
        assert sorted(b["tool_use_id"] for b in answers["content"]) == sorted(u["id"] for u in uses)
    assert result.output == ("Done." if calls else expected["text"])


async def test_a_second_turn_sends_the_whole_conversation_back(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """Thinking and redacted thinking from earlier runs go back verbatim, as Anthropic sent them."""
    fake_server.enqueue(
        Reply.cassette("anthropic/thinking-text"),
        Reply.cassette("anthropic/redacted-thinking"),
        Reply.anthropic_text("Third."),
        path=MESSAGES_PATH,
    )
    worker = Worker(model)
    for prompt in ("one", "two", "three"):
        await worker.run(prompt)
    body = bodies(fake_server)[-1]
    assert_valid(body)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"] * 2 + ["user"]
    kinds = [[b["type"] for b in m["content"]] for m in body["messages"][1::2]]
    assert kinds == [["thinking", "text"], ["redacted_thinking", "redacted_thinking", "text"]]


# -- faults ---------------------------------------------------------------------------------------


async def collect_run(worker: Worker, prompt: str) -> tuple[list[Event], BaseException | None]:
    """Run through `Worker.stream`, returning every event and the run's error (or None)."""
    events: list[Event] = []
    async with worker.stream(prompt) as run:
        async for event in run:
            events.append(event)
    return events, run.error


@pytest.mark.parametrize(
    ("fault", "delay"),
    [(Reply.error(529), None), (Reply.error(429, retry_after=0.05), 0.05)],
    ids=["529-overloaded", "429-retry-after"],
)
async def test_transient_http_errors_are_retried(
    fault: Reply, delay: float | None, fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """A 529 or 429 is retried after back-off (Retry-After honoured), shown by a `Retrying`."""
    fake_server.enqueue(fault, Reply.cassette("anthropic/text"), path=MESSAGES_PATH)
    events, error = await collect_run(Worker(model), "hi")
    assert error is None
    retries = [e for e in events if isinstance(e, Retrying)]
    assert len(retries) == 1
    assert retries[0].attempt == 1
    if delay is not None:
        assert retries[0].delay == pytest.approx(delay)
    assert len(bodies(fake_server)) == 2


async def test_persistent_500_is_a_model_error_and_the_worker_runs_again(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    fake_server.enqueue(*[Reply.error(500)] * FAST_RETRY.max_attempts, path=MESSAGES_PATH)
    worker = Worker(model)
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    assert caught.value.status_code == 500
    assert caught.value.retryable
    kept = caught.value.partial.items
    assert [type(i) for i in kept] == [UserMessage]  # nothing was streamed, nothing else kept
    assert len(bodies(fake_server)) == FAST_RETRY.max_attempts

    fake_server.enqueue(Reply.anthropic_text("Back."), path=MESSAGES_PATH)
    assert (await worker.run("again")).output == "Back."
    assert_valid(bodies(fake_server)[-1])


async def test_a_bad_request_is_not_retried(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    fake_server.enqueue(Reply.error(400, message="messages: bad"), path=MESSAGES_PATH)
    with pytest.raises(ModelError, match="HTTP 400") as caught:
        await Worker(model).run("hi")
    assert caught.value.status_code == 400
    assert not caught.value.retryable
    assert len(bodies(fake_server)) == 1


def cassette_events(name: str) -> list[bytes]:
    """The raw SSE events of a cassette, each with its blank line."""
    body = (CASSETTES / f"{name}.sse").read_bytes()
    return [part + b"\n\n" for part in body.split(b"\n\n") if part.strip()]


ERROR_EVENT = (
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
    b'"message":"Overloaded"}}\n\n'
)


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        (Reply.cassette("anthropic/text", drop_after=5), "incomplete chunked read"),
        (Reply.cassette("anthropic/text", malformed_at=5), "JSONDecodeError"),
        (Reply.sse([*cassette_events("anthropic/text")[:5], ERROR_EVENT]), "Overloaded"),
        (Reply.sse(cassette_events("anthropic/text")[:5]), "before message_stop"),
    ],
    ids=["drop-mid-stream", "malformed-chunk", "error-event", "cut-off-body"],
)
async def test_mid_stream_faults_keep_the_text_and_the_worker(
    fault: Reply, match: str, fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """A stream that fails after text arrived: `ModelError` whose ``.partial`` keeps that text
    (marked interrupted); never retried (content reached the caller); the worker runs again and
    its next request is valid."""
    fake_server.enqueue(fault, path=MESSAGES_PATH)
    worker = Worker(model)
    with pytest.raises(ModelError, match=match) as caught:
        await worker.run("hi")
    kept = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
    assert len(kept) == 1
    assert kept[0].interrupted
    assert kept[0].text == "- Captain"  # the text deltas among the first 5 events
    if match in ("Overloaded", "JSONDecodeError"):
        assert caught.value.retryable == (match == "Overloaded")
    assert len(bodies(fake_server)) == 1

    fake_server.enqueue(Reply.anthropic_text("Recovered."), path=MESSAGES_PATH)
    assert (await worker.run("again")).output == "Recovered."
    body = bodies(fake_server)[-1]
    assert_valid(body)
    assert body["messages"][1]["content"] == [{"type": "text", "text": "- Captain"}]
    assert "interrupted" in body["messages"][2]["content"][0]["text"]


async def test_an_error_event_before_any_content_is_retried(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """An ``overloaded_error`` event as the stream's first event: nothing reached the caller,
    so it is retried like a 529."""
    fake_server.enqueue(
        Reply.sse([ERROR_EVENT]), Reply.cassette("anthropic/text"), path=MESSAGES_PATH
    )
    events, error = await collect_run(Worker(model), "hi")
    assert error is None
    assert [e.error for e in events if isinstance(e, Retrying)] == [
        "anthropic reported an error mid-stream (overloaded_error): Overloaded"
    ]


async def test_an_idle_stream_times_out(fake_server: FakeProviderServer) -> None:
    fake_server.enqueue(Reply.cassette("anthropic/text", stall_after=5), path=MESSAGES_PATH)
    async with AnthropicModel(
        "claude-test",
        base_url=fake_server.anthropic_base_url,
        api_key="k",
        timeouts=Timeouts(idle=0.2),
    ) as slow:
        worker = Worker(slow)
        with anyio.fail_after(5):
            with pytest.raises(ModelError, match="idle timeout") as caught:
                await worker.run("hi")
    kept = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
    assert [(i.text, i.interrupted) for i in kept] == [("- Captain", True)]


# -- interruptions: the next request is valid after each kind -------------------------------------


async def interrupt(
    worker: Worker, when: Callable[[Event], bool], *, cancel: bool = True
) -> RunError:
    """Run until ``when(event)``, then cancel (or, ``cancel=False``, let the run fail)."""
    async with worker.stream("Go.") as run:
        async for event in run:
            if cancel and when(event):
                run.cancel("the user pressed stop")
    assert isinstance(run.error, RunError), run.error
    return run.error


KINDS: dict[str, tuple[str, Callable[[Event], bool], dict[str, Any]]] = {
    "mid-text": (
        "anthropic/text-then-parallel-tool-use",
        lambda e: isinstance(e, TextDelta),
        {},
    ),
    "mid-thinking": (
        "anthropic/thinking-tool-use",
        lambda e: isinstance(e, ReasoningDelta),
        {},
    ),
    "mid-tool-arguments": (
        "anthropic/text-then-parallel-tool-use",
        lambda e: isinstance(e, ToolCallDelta) and e.index == 2,
        {},
    ),
    "during-tools": (
        "anthropic/parallel-tool-use-fragmented",
        lambda e: isinstance(e, ToolStarted),
        {},
    ),
    "during-thinking-tool": (
        "anthropic/thinking-tool-use",
        lambda e: isinstance(e, ToolStarted),
        {},
    ),
    "model-error": ("anthropic/text-then-parallel-tool-use", lambda e: False, {"drop_after": 17}),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_the_request_after_an_interruption_is_valid(
    kind: str, fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """Cancel mid-text, mid-thinking, mid tool-call arguments, during tools, or fail mid-stream:
    the next run's request passes every rule, says what was said, answers every call first, and
    tells the model the turn was interrupted."""
    name, when, faults = KINDS[kind]
    fake_server.enqueue(Reply.cassette(name, pace=0.01, **faults), path=MESSAGES_PATH)
    thinking = {"type": "enabled", "budget_tokens": 1024} if "thinking" in kind else None
    model.thinking = thinking
    worker = Worker(model, tools=stuck_tools(), tool_grace=0.05)
    error = await interrupt(worker, when, cancel=kind != "model-error")
    assert isinstance(error, ModelError if kind == "model-error" else Cancelled)
    assert error.partial.items

    fake_server.enqueue(Reply.anthropic_text("Continuing."), path=MESSAGES_PATH)
    assert (await worker.run("Go on.")).output == "Continuing."
    body = bodies(fake_server)[-1]
    assert_valid(body)
    assert body.get("thinking") == thinking
    last = body["messages"][-1]["content"]
    assert "interrupted" in last[-2]["text"]
    assert last[-1] == {"type": "text", "text": "Go on."}
    said = [b for m in body["messages"] if m["role"] == "assistant" for b in m["content"]]
    uses = [b for b in said if b["type"] == "tool_use"]
    if kind == "mid-text":
        assert [b["type"] for b in said] == ["text"]
        assert said[0]["text"] == "I"
    elif kind == "mid-thinking":
        assert said == []  # unsigned thinking cannot go back; nothing else was said
        assert [m["role"] for m in body["messages"]] == ["user"]
    elif kind in ("mid-tool-arguments", "model-error"):
        assert [u["input"] for u in uses] == [{"password": "mellon"}, {}]
        results = body["messages"][2]["content"]
        assert [r.get("is_error", False) for r in results[:2]] == [True, True]
    else:
        assert uses
        results = body["messages"][2]["content"][: len(uses)]
        assert all(r["type"] == "tool_result" and r["is_error"] for r in results)
        if kind == "during-thinking-tool":
            assert said[0]["type"] == "thinking"
            assert said[0]["signature"]


async def test_cancelling_closes_the_response_at_once(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """Cancellation releases the connection: the server sees the client leave mid-stream before
    the model's client is closed (no connection is held until garbage collection)."""
    fake_server.enqueue(Reply.cassette("anthropic/thinking-text", pace=0.02), path=MESSAGES_PATH)
    worker = Worker(model)
    await interrupt(worker, lambda e: isinstance(e, ReasoningDelta))
    with anyio.fail_after(5):
        stats = await fake_server.wait_for_async(lambda s: s.disconnects_mid_stream == 1)
    assert stats.streams_completed == 0


async def test_runs_cancelled_at_random_moments_leak_no_connection(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """Cancel 20 runs at random moments (opening, mid-stream, after the end): the server sees
    every stream end or its client leave, and at most the one idle pooled connection remains."""
    rng = random.Random(5)
    reply = Reply.cassette("anthropic/text-then-parallel-tool-use", pace=0.004)
    fake_server.set_default(reply, path=MESSAGES_PATH)
    worker = Worker(model, tools=stuck_tools(), tool_grace=0.01)
    for _ in range(20):
        with anyio.move_on_after(rng.uniform(0, 0.12)):
            with contextlib.suppress(RunError):
                await worker.run("Go.")
        worker.cancel("random")  # the run may have reached its tools
    with anyio.fail_after(5):
        stats = await fake_server.wait_for_async(
            lambda s: (
                s.streams_started
                == s.streams_completed + s.disconnects_mid_stream + s.streams_dropped
            )
        )
    assert stats.disconnects_mid_stream > 0
    assert stats.active_connections <= 1
    assert all(not request_violations(body) for body in bodies(fake_server))


class AbortOnFirstText(Hooks):
    async def on_text_delta(self, ctx: HookContext, text: str) -> Decision:
        return Abort("seen enough")


async def test_a_hook_abort_mid_stream_closes_the_response(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """The worker leaving the stream on its own (not by a cancellation inside the read) closes
    the response too, and the worker runs again with a valid request."""
    fake_server.enqueue(Reply.cassette("anthropic/text", pace=0.02), path=MESSAGES_PATH)
    worker = Worker(model, hooks=[AbortOnFirstText()])
    with pytest.raises(Aborted) as caught:
        await worker.run("hi")
    assert caught.value.reason == "seen enough"
    with anyio.fail_after(5):
        await fake_server.wait_for_async(lambda s: s.disconnects_mid_stream == 1)
    worker.hooks.clear()
    fake_server.enqueue(Reply.anthropic_text("Again."), path=MESSAGES_PATH)
    assert (await worker.run("again")).output == "Again."
    assert_valid(bodies(fake_server)[-1])


async def test_a_deadline_while_waiting_for_headers_closes_the_request(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    fake_server.enqueue(Reply.cassette("anthropic/text", delay=5), path=MESSAGES_PATH)
    with pytest.raises(Cancelled) as caught:
        await Worker(model).run("hi", timeout=0.2)
    assert caught.value.kind == "deadline"
    with anyio.fail_after(5):
        await fake_server.wait_for_async(lambda s: s.disconnects_before_response == 1)


async def test_entering_the_stream_sends_nothing(
    fake_server: FakeProviderServer, model: AnthropicModel
) -> None:
    """The Model protocol: no I/O on entering; the request's history is not modified."""
    history: list[Item] = [UserMessage(text="hi")]
    async with model.stream(ModelRequest(history=history)):
        pass
    assert fake_server.stats.requests == 0
    assert history == [UserMessage(text="hi", id=history[0].id, created_at=history[0].created_at)]


# -- the cancellation sweep, over an in-memory paced replay ----------------------------------------


class PacedBody:
    """A response body that yields one SSE event per scheduler tick (no timers, no threads), so
    every await of a run is a distinct checkpoint and the sweep is deterministic and fast."""

    def __init__(self, events: Sequence[bytes]) -> None:
        self._events = iter(events)

    def __aiter__(self) -> PacedBody:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None


def replaying_client(
    replies: list[Sequence[bytes]], recorded: list[Any]
) -> anthropic.AsyncAnthropic:
    """A client whose requests get ``replies`` in order (then a short text), recorded."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        recorded.append(json.loads(request.content))
        events = replies.pop(0) if replies else cassette_events("anthropic/text")
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, content=PacedBody(events))

    transport = httpx2.MockTransport(handle)
    return anthropic.AsyncAnthropic(
        api_key="k", max_retries=0, http_client=httpx2.AsyncClient(transport=transport)
    )


async def test_cancellation_sweep_over_parallel_tool_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Cancel a text + parallel tool-use run at every await point: every guarantee holds, and
    every request sent (including each follow-up) is valid."""
    recorded: list[Any] = []
    replies: list[Sequence[bytes]] = []
    # One client for every worker: the SDK's first request on a client computes platform
    # headers in a worker thread, and the sweep must count the awaits of a run, not that wait.
    client = replaying_client(replies, recorded)

    def make_worker() -> Worker:
        replies[:] = [cassette_events("anthropic/text-then-parallel-tool-use")]
        return Worker(AnthropicModel("claude-test", client=client), tools=TOOLS)

    try:
        await make_worker().run("Warm up.")
        report = await cancellation_sweep(make_worker, "Retrieve both secrets.")
    finally:
        await client.close()
    report.raise_for_violations()
    assert report.cancelled > 0
    assert report.cancelled + report.completed == report.runs  # every run ended, none hung
    assert report.checkpoints > 30  # at least one per SSE event of the two responses
    for body in recorded:
        assert_valid(body)
    with capsys.disabled():
        print(f"\nanthropic sweep: {report.checkpoints} checkpoints, {report.runs} runs")


# -- stream parsing: splits and garbage ----------------------------------------------------------


async def stream_events(body: Sequence[bytes]) -> list[StreamEvent] | ModelError:
    """The events `AnthropicModel` makes of a response body delivered in chunks ``body``."""
    client = replaying_client([body], [])
    model = AnthropicModel("claude-test", client=client, retry=RetryPolicy(max_attempts=1))
    events: list[StreamEvent] = []
    try:
        async with model.stream(ModelRequest(history=[UserMessage(text="hi")])) as stream:
            async for event in stream:
                events.append(event)
    except ModelError as error:
        return error
    finally:
        await client.close()
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


_REFERENCE: dict[str, list[StreamEvent] | ModelError] = {}


async def reference_events(name: str) -> list[StreamEvent]:
    if name not in _REFERENCE:
        _REFERENCE[name] = await stream_events(cassette_events(name))
    events = _REFERENCE[name]
    assert isinstance(events, list)
    return events


SPLIT_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SPLIT_SETTINGS
@given(
    name=st.sampled_from(ANTHROPIC),
    cuts=st.lists(st.integers(min_value=0), max_size=40),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
@example(name="anthropic/thinking-text", cuts=list(range(0, 7000, 1)), newline=b"\r\n")
async def test_any_split_of_a_stream_gives_the_same_events(
    name: str, cuts: list[int], newline: bytes
) -> None:
    """TCP may cut the body anywhere, lines may end in any SSE line ending: same events."""
    body = b"".join(cassette_events(name)).replace(b"\n", newline)
    assert await stream_events(split(body, cuts)) == await reference_events(name)


@SPLIT_SETTINGS
@given(
    name=st.sampled_from(ANTHROPIC),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 3), st.binary(max_size=8)),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
async def test_garbage_gives_a_model_error_never_a_crash(
    name: str, edits: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    """Bytes deleted, replaced or inserted anywhere: events or a `ModelError`, nothing else."""
    body = bytearray(b"".join(cassette_events(name)))
    for position, length, replacement in edits:
        at = position % (len(body) + 1)
        body[at : at + length] = replacement
    outcome = await stream_events(split(bytes(body), cuts))
    assert isinstance(outcome, list | ModelError)


def sse(*payloads: dict[str, Any]) -> list[bytes]:
    return [f"event: {p['type']}\ndata: {json.dumps(p)}\n\n".encode() for p in payloads]


async def test_usage_comes_from_running_totals_and_stop_reasons_are_normalised() -> None:
    """Anthropic reports running totals (cached prompt tokens apart); the events carry
    increments that add up to them, with cached tokens counted as input too."""
    body = sse(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 5,
                    "output_tokens": 1,
                }
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "model_context_window_exceeded"},
            "usage": {"output_tokens": 7, "output_tokens_details": {"thinking_tokens": 3}},
        },
        {"type": "message_stop"},
    )
    events = await stream_events(body)
    assert isinstance(events, list)
    total = sum((e.usage for e in events if isinstance(e, UsageUpdate)), Usage())
    assert total == Usage(
        input_tokens=115, output_tokens=7, reasoning_tokens=3, cache_read_tokens=100
    )
    assert [e.reason for e in events if isinstance(e, StopReason)] == ["max_tokens"]


async def test_structural_garbage_gives_typed_errors() -> None:
    """Well-framed events that break the protocol each give a `ModelError`."""
    start = b'event: message_start\ndata: {"type":"message_start","message":{"usage":{}}}\n\n'
    stop = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    broken = [
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}\n\n',
        b'data: {"type":"content_block_stop","index":3}\n\n',
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text"}}\n\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text"}}\n\n',
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use"}}\n\n',
        b"data: [1, 2]\n\n",
        b"data: null\n\n",
        b'data: {"no type": 1}\n\n',
        b'data: {"type":"message_delta","delta":null}\n\n',
        b"data: \xff\xfe\n\n",
        b'event: error\ndata: "overloaded"\n\n',
    ]
    for garbage in broken:
        outcome = await stream_events([start, garbage, stop])
        assert isinstance(outcome, ModelError), garbage
    # An empty body is a transient failure (retryable), never a silently empty answer.
    empty = await stream_events([])
    assert isinstance(empty, ModelError)
    assert empty.retryable
    assert "empty stream" in str(empty)
    # Unknown event, block and delta types are skipped, not errors.
    tolerated = (
        b'data: {"type":"brand_new_event"}\n\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"new_block"}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"new_delta"}}\n\n'
        b'data: {"type":"content_block_stop","index":0}\n\n'
        b": a comment\n\n"
    )
    assert await stream_events([start, tolerated, stop]) == []


# -- history conversion (pure) -------------------------------------------------------------------


def convert(*items: Item) -> list[dict[str, Any]]:
    """What the worker sends for ``items``: repaired (`history.repair`), then translated."""
    messages = convert_history(list(repair(items)))
    assert_valid({"model": "m", "max_tokens": 1, "stream": True, "messages": messages})
    return messages


def text_of(message: dict[str, Any]) -> list[str]:
    return [b.get("text", b["type"]) for b in message["content"]]


def call(call_id: str, name: str = "f", **arguments: Any) -> ToolCall:
    return ToolCall(call_id=call_id, name=name, arguments=arguments, raw_arguments="{}")


def answer(call_id: str, content: str = "done", status: Any = "ok") -> ToolResult:
    return ToolResult(call_id=call_id, name="f", content=content, status=status)


def said(*parts: TextPart | ReasoningPart, interrupted: bool = False) -> AssistantMessage:
    return AssistantMessage(parts=parts, interrupted=interrupted)


def test_user_side_items_merge_with_tool_results_first() -> None:
    """A note that precedes results in the history still comes after them: results first, as
    they came."""
    messages = convert(
        UserMessage(text="hi"),
        said(TextPart(text="Let me look.")),
        call("a"),
        call("b"),
        Note(kind="interrupted", text="[interrupted]"),
        answer("b"),
        answer("a", "Cancelled: stop.", "cancelled"),
        UserMessage(text="next"),
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "b", "content": "done"},
        {
            "type": "tool_result",
            "tool_use_id": "a",
            "content": "Cancelled: stop.",
            "is_error": True,
        },
        {"type": "text", "text": "[interrupted]"},
        {"type": "text", "text": "next"},
    ]


def test_interrupted_text_is_sent_as_said_without_trailing_whitespace() -> None:
    messages = convert(
        UserMessage(text="hi"),
        said(TextPart(text="Half a sent  \n"), interrupted=True),
        Note(kind="interrupted", text="[The previous turn was interrupted.]"),
        UserMessage(text="go on"),
    )
    assert messages[1]["content"] == [{"type": "text", "text": "Half a sent"}]


def test_a_call_cut_off_mid_arguments_is_sent_with_empty_input_and_its_error_result() -> None:
    cut = ToolCall(call_id="toolu_x", name="f", raw_arguments='{"pass', complete=False)
    messages = convert(
        UserMessage(text="hi"),
        said(TextPart(text="Calling.")),
        cut,
        answer("toolu_x", "Not executed: cut off.", "cancelled"),
    )
    assert messages[1]["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_x",
        "name": "f",
        "input": {},
    }
    assert messages[2]["content"][0]["is_error"] is True


def test_thinking_goes_back_only_when_anthropic_signed_it() -> None:
    messages = convert(
        UserMessage(text="hi"),
        said(
            ReasoningPart(text="signed", signature="sig", provider="anthropic"),
            ReasoningPart(redacted_data="blob", provider="anthropic"),
            ReasoningPart(text="cut off, unsigned", provider="anthropic"),
            ReasoningPart(text="OpenAI's", encrypted_content="enc", provider="openai"),
            TextPart(text="Answer."),
        ),
        call("c"),
        answer("c"),
    )
    assert messages[1]["content"][:3] == [
        {"type": "thinking", "thinking": "signed", "signature": "sig"},
        {"type": "redacted_thinking", "data": "blob"},
        {"type": "text", "text": "Answer."},
    ]


def test_empty_assistant_turns_vanish_and_user_turns_merge() -> None:
    messages = convert(
        UserMessage(text="first"),
        said(ReasoningPart(text="unsigned", provider="anthropic"), interrupted=True),
        Note(kind="interrupted", text="[interrupted]"),
        UserMessage(text="   "),
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "[interrupted]"},
                {"type": "text", "text": "(empty message)"},
            ],
        }
    ]


def test_calls_without_results_get_one_and_results_without_calls_are_dropped() -> None:
    messages = convert(
        UserMessage(text="hi"),
        answer("ghost"),
        said(TextPart(text="A")),
        call("lost"),
        said(TextPart(text="B")),
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "lost", "content": MISSING_RESULT, "is_error": True}
    ]


def test_reused_and_unsafe_call_ids_are_made_unique_and_stay_paired() -> None:
    messages = convert(
        UserMessage(text="hi"),
        call("call.1"),
        answer("call.1", "first"),
        call("call.1"),
        answer("call.1", "second"),
        call("call_1"),
        answer("call_1", "third"),
    )
    ids = [messages[i]["content"][0]["id"] for i in (1, 3, 5)]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    results = [messages[i]["content"][0] for i in (2, 4, 6)]
    assert [r["tool_use_id"] for r in results] == ids
    assert [r["content"] for r in results] == ["first", "second", "third"]


def test_a_history_that_starts_with_the_model_gets_a_user_message_first() -> None:
    messages = convert(said(TextPart(text="Hello.")), UserMessage(text="hi"))
    assert text_of(messages[0]) == [CONVERSATION_START]


def test_consecutive_assistant_messages_merge_thinking_first() -> None:
    messages = convert(
        UserMessage(text="hi"),
        said(TextPart(text="one")),
        said(ReasoningPart(text="t", signature="s", provider="anthropic"), TextPart(text="two")),
        call("c"),
        answer("c"),
    )
    assert text_of(messages[1]) == ["thinking", "one", "two", "tool_use"]


def test_the_history_is_not_modified() -> None:
    history: list[Item] = [UserMessage(text="hi"), said(TextPart(text="x ")), call("c")]
    copy = copy_module.deepcopy(history)
    convert_history(history)
    assert history == copy


_parts = st.one_of(
    st.builds(TextPart, text=st.text(max_size=6)),
    st.builds(
        ReasoningPart,
        text=st.text(max_size=4),
        signature=st.none() | st.just("sig"),
        redacted_data=st.none() | st.just("blob"),
        provider=st.sampled_from([None, "anthropic", "openai"]),
    ),
)
_ids = st.sampled_from(["a", "b", "c", "d.e", ""])
_items = st.one_of(
    st.builds(UserMessage, text=st.text(max_size=5)),
    st.builds(Note, text=st.text(max_size=5)),
    st.builds(
        AssistantMessage,
        parts=st.lists(_parts, max_size=4).map(tuple),
        interrupted=st.booleans(),
    ),
    st.builds(
        ToolCall,
        call_id=_ids,
        name=st.just("f"),
        arguments=st.none() | st.just({"x": 1}),
        complete=st.booleans(),
    ),
    st.builds(
        ToolResult,
        call_id=_ids,
        name=st.just("f"),
        content=st.text(max_size=4),
        status=st.sampled_from(["ok", "error", "cancelled"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(history=st.lists(_items, max_size=14))
def test_any_history_converts_to_a_valid_request(history: list[Item]) -> None:
    """Not only what the worker writes: any sequence of items gives a request the API accepts
    (a history that says nothing gives no messages at all)."""
    messages = convert_history(list(repair(history)))
    if messages:
        assert_valid({"model": "m", "max_tokens": 1, "stream": True, "messages": messages})


# -- construction and request parameters ----------------------------------------------------------


def test_credentials_and_endpoint_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(MissingCredentials, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")
    model = AnthropicModel("claude-x")
    assert model.name == "anthropic:claude-x"
    assert model.client.api_key == "env-key"
    assert str(model.client.base_url) == "http://127.0.0.1:9/"
    assert model.client.max_retries == 0
    timeout = model.client.timeout
    assert isinstance(timeout, httpx2.Timeout)
    assert (timeout.connect, timeout.read) == (Timeouts().connect, Timeouts().idle)
    spec = resolve_model("anthropic:claude-y", base_url="http://127.0.0.1:8/")
    assert isinstance(spec, AnthropicModel)
    assert spec.name == "anthropic:claude-y"
    assert str(spec.client.base_url) == "http://127.0.0.1:8/"


def test_a_given_client_is_used_as_it_is() -> None:
    client = anthropic.AsyncAnthropic(api_key="mine", max_retries=5)
    model = AnthropicModel("claude-x", client=client)
    assert model.client is client
    assert client.max_retries == 5


def test_request_parameters() -> None:
    """max_tokens is always sent (the API requires it); settings, system, tools, thinking."""
    model = AnthropicModel("claude-x", api_key="k", max_tokens=123, thinking={"type": "adaptive"})
    spec = ToolSpec(name="f", description="d", parameters={"type": "object", "properties": {}})
    params = model.request_params(
        ModelRequest(
            history=[UserMessage(text="hi")],
            system="sys",
            tools=[spec],
            settings=ModelSettings(max_tokens=7, temperature=0.5),
        )
    )
    assert params == {
        "model": "claude-x",
        "max_tokens": 7,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": True,
        "system": "sys",
        "tools": [{"name": "f", "description": "d", "input_schema": spec.parameters}],
        "thinking": {"type": "adaptive"},
        "temperature": 0.5,
    }
    bare = model.request_params(ModelRequest(history=[UserMessage(text="hi")]))
    assert bare["max_tokens"] == 123
    assert not {"system", "tools", "temperature"} & bare.keys()
