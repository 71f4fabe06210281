"""GeminiModel over real HTTP (FakeProviderServer on 127.0.0.1) and its history conversion.

Invariants checked here:
* every recorded Gemini stream replays through a real `Worker` into the items the cassette holds
  (expectations read from the cassette files, independently of the code under test), and the
  follow-up request carries thought signatures back verbatim, on the part they came with;
* every request the model sends — the first, follow-ups after a stream cut at *every* event
  boundary, after a Stop, and the request built from *any* history (hypothesis) — passes
  `request_violations`: contents alternate and start with the user, every functionCall is
  answered (same ids and names) first thing in the next content, no part is empty;
* faults (429 with Gemini's RetryInfo, 500, a malformed chunk, an ``error`` object, a blocked
  prompt, a safety finish) end in a typed `ModelError` with ``.partial`` or a retry that
  succeeds, and leave the worker reusable;
* the first request's body has the shape of the recorded requests that produced the cassettes.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_worker import Cancelled, ModelError, ToolContext, Worker, tool
from llm_worker.events import (
    Event,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    Retrying,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolStarted,
    UsageUpdate,
)
from llm_worker.history import CONVERSATION_START, repair
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
from llm_worker.models._translate import MalformedStream
from llm_worker.models.gemini import (
    SIGNATURE_PREFIX,
    GeminiClient,
    GeminiModel,
    PromptBlocked,
    StreamTranslation,
    convert_history,
)
from llm_worker.testing import FakeProviderServer, Reply
from llm_worker.tools import Tool, ToolSpec

from .conftest import cassette_names, request_fixture, sse_payloads
from .test_anthropic import collect_run, interrupt
from .test_request_body import _items

pytestmark = pytest.mark.anyio

GEMINI = cassette_names("gemini")
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.05)
NO_RETRY = RetryPolicy(max_attempts=1)
MODEL = "gemini-test"
PATH = FakeProviderServer.gemini_path(MODEL)


# -- the validator: what the Gemini API accepts as contents -------------------------------------


def request_violations(body: Any) -> list[str]:
    """Why the Gemini API would reject ``body`` (empty if it would accept it)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    problems: list[str] = []
    if not isinstance(body.get("generationConfig", {}), dict):
        problems.append("generationConfig is not an object")
    for tools in body.get("tools", []):
        for declaration in tools.get("functionDeclarations", []):
            if not declaration.get("name"):
                problems.append("a function declaration without a name")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return [*problems, "contents is empty"]
    if contents[0].get("role") != "user":
        problems.append("contents[0] is not the user's")
    pending: list[tuple[str, str]] = []  # (id, name) of the calls the next content must answer
    for i, content in enumerate(contents):
        where = f"contents.{i}"
        role, parts = content.get("role"), content.get("parts")
        if role not in ("user", "model"):
            problems.append(f"{where}: role {role!r}")
        if i and contents[i - 1].get("role") == role:
            problems.append(f"{where}: two {role} contents in a row")
        if not isinstance(parts, list) or not parts:
            problems.append(f"{where}: no parts")
            continue
        answered: list[tuple[str, str]] = []
        calls: list[tuple[str, str]] = []
        other = False
        for j, part in enumerate(parts):
            at = f"{where}.parts.{j}"
            if "thoughtSignature" in part and not isinstance(part["thoughtSignature"], str):
                problems.append(f"{at}: thoughtSignature is not a string")
            if "functionCall" in part:
                call = part["functionCall"]
                if role != "model":
                    problems.append(f"{at}: a functionCall in a user content")
                if not isinstance(call.get("args"), dict):
                    problems.append(f"{at}: args is not an object")
                calls.append((call.get("id"), call.get("name")))
            elif "functionResponse" in part:
                response = part["functionResponse"]
                if role != "user":
                    problems.append(f"{at}: a functionResponse in a model content")
                if other:
                    problems.append(f"{at}: a functionResponse after text")
                if not isinstance(response.get("response"), dict):
                    problems.append(f"{at}: response is not an object")
                answered.append((response.get("id"), response.get("name")))
            elif "text" in part:
                other = True
                if not isinstance(part["text"], str) or not part["text"].strip():
                    problems.append(f"{at}: empty text")
                if part.get("thought") and not part.get("thoughtSignature"):
                    problems.append(f"{at}: a thought without its signature")
            else:
                problems.append(f"{at}: unknown part {sorted(part)}")
        if role == "user" and sorted(map(str, answered)) != sorted(map(str, pending)):
            problems.append(
                f"{where}: calls {pending} need exactly their responses, got {answered}"
            )
        if role == "model" and pending:
            problems.append(f"{where}: calls {pending} were not answered")
        pending = calls if role == "model" else []
        ids = [call_id for call_id, _ in calls]
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: call ids repeat: {ids}")
    if pending:
        problems.append(f"the request ends with calls {pending} unanswered")
    return problems


def assert_valid(body: Any) -> None:
    problems = request_violations(body)
    assert not problems, "\n".join(problems) + "\n" + json.dumps(body, indent=1)[:3000]


def test_the_validator_catches_each_rule() -> None:
    user = {"role": "user", "parts": [{"text": "hi"}]}
    call = {"functionCall": {"id": "a", "name": "f", "args": {}}}
    answer = {"functionResponse": {"id": "a", "name": "f", "response": {"output": "x"}}}
    text = {"text": "x"}

    def body(*contents: dict[str, Any]) -> dict[str, Any]:
        return {"contents": list(contents)}

    def said(*parts: dict[str, Any]) -> dict[str, Any]:
        return {"role": "model", "parts": list(parts)}

    def asked(*parts: dict[str, Any]) -> dict[str, Any]:
        return {"role": "user", "parts": list(parts)}

    assert request_violations(body(user, said(call), asked(answer))) == []
    broken = {
        "starts with the model": body(said(text), user),
        "not alternating": body(user, user),
        "unanswered": body(user, said(call), asked(text)),
        "response after text": body(user, said(call), asked(text, answer)),
        "orphan response": body(user, said(text), asked(answer)),
        "empty text": body(asked({"text": " "})),
        "empty parts": body(asked()),
        "unsigned thought": body(user, said({"text": "t", "thought": True}, text), user),
        "ends unanswered": body(user, said(call)),
    }
    for name, bad in broken.items():
        assert request_violations(bad), name


# -- fixtures -------------------------------------------------------------------------------------


@tool
async def secret_retrieval_tool(password: str) -> str:
    """Retrieve the secret for a password."""
    return f"secret of {password}"


@tool
def dummy() -> str:
    """Nothing."""
    return "nothing"


TOOLS: list[Tool[..., Any]] = [secret_retrieval_tool, dummy]


def stuck_tools() -> list[Tool[..., Any]]:
    """The cassettes' tools, waiting until cancelled, then returning partial output."""

    async def secret_retrieval_tool(password: str, ctx: ToolContext) -> str:
        await ctx.token.wait()
        return "partial"

    return [tool(secret_retrieval_tool), dummy]


@pytest.fixture
async def model(fake_server: FakeProviderServer) -> AsyncIterator[GeminiModel]:
    """A GeminiModel on the fake server with fast retries; its client closed afterwards."""
    async with GeminiModel(
        MODEL,
        base_url=fake_server.gemini_base_url,
        api_key="test-key-0123456789",
        retry=FAST_RETRY,
        timeouts=Timeouts(connect=5, first_event=10, idle=10),
    ) as instance:
        yield instance


def bodies(server: FakeProviderServer) -> list[Any]:
    return [r.json for r in server.requests if r.path == PATH]


def expected_response(name: str) -> dict[str, Any]:
    """What the worker should keep from cassette ``name``, read from the file itself."""
    thoughts: list[str] = []
    texts: list[str] = []
    calls: list[tuple[str, dict[str, Any], str | None]] = []
    signatures: list[str] = []
    stop = usage = None
    for _, chunk in sse_payloads(name):
        candidate = chunk["candidates"][0]
        for part in candidate["content"]["parts"]:
            if "functionCall" in part:
                call = part["functionCall"]
                calls.append((call["name"], call["args"], part.get("thoughtSignature")))
            elif part.get("thought"):
                thoughts.append(part["text"])
            else:
                texts.append(part.get("text", ""))
                if part.get("thoughtSignature"):
                    signatures.append(part["thoughtSignature"])
        stop = candidate.get("finishReason", stop)
        usage = chunk.get("usageMetadata", usage)
    assert usage is not None
    thought_tokens = usage.get("thoughtsTokenCount")
    output = [usage.get("candidatesTokenCount"), thought_tokens]
    return {
        "text": "".join(texts),
        "thoughts": "".join(thoughts),
        "text_signatures": signatures,
        "calls": calls,
        "stop": "tool_use" if calls and stop == "STOP" else {"STOP": "end_turn"}[stop],
        "input_tokens": usage.get("promptTokenCount"),
        "output_tokens": sum(n for n in output if n is not None),
        "reasoning_tokens": thought_tokens,
    }


# -- replaying every cassette through a worker ----------------------------------------------------


@pytest.mark.parametrize("name", GEMINI)
async def test_cassette_replays_into_expected_items(
    name: str, fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    """Each recorded stream becomes the items it holds; the follow-up request carries them back
    valid, every signature on the part it came with, every call answered first thing."""
    expected = expected_response(name)
    fake_server.enqueue(Reply.cassette(name), path=PATH)
    fake_server.set_default(Reply.gemini_text("Done."), path=PATH)
    worker = Worker(model, tools=TOOLS, system="Be brief.")
    result = await worker.run("Go.")
    await worker.run("Next.")

    assert result.status == "finished"
    message = next(i for i in result.items if isinstance(i, AssistantMessage))
    assert message.text == expected["text"]
    assert message.reasoning == expected["thoughts"]
    assert message.stop_reason == expected["stop"]
    assert not message.interrupted
    assert message.usage == Usage(
        input_tokens=expected["input_tokens"],
        output_tokens=expected["output_tokens"],
        reasoning_tokens=expected["reasoning_tokens"],
    )
    calls = [i for i in result.items if isinstance(i, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [(n, a) for n, a, _ in expected["calls"]]
    assert all(c.complete for c in calls)

    sent = bodies(fake_server)
    assert len(sent) == (3 if calls else 2)
    for body in sent:
        assert_valid(body)
    first = sent[0]
    assert first["systemInstruction"] == {"role": "user", "parts": [{"text": "Be brief."}]}
    assert first["contents"] == [{"role": "user", "parts": [{"text": "Go."}]}]
    said = sent[1]["contents"][1]
    assert said["role"] == "model"
    uses = [p for p in said["parts"] if "functionCall" in p]
    assert [(u["functionCall"]["name"], u["functionCall"]["args"]) for u in uses] == [
        (n, a) for n, a, _ in expected["calls"]
    ]
    assert [u.get("thoughtSignature") for u in uses] == [s for _, _, s in expected["calls"]]
    texts = [p for p in said["parts"] if "text" in p and not p.get("thought")]
    assert [p.get("thoughtSignature") for p in texts if "thoughtSignature" in p] == expected[
        "text_signatures"
    ]
    if calls:
        answers = sent[1]["contents"][2]["parts"]
        by_id = {a["functionResponse"]["id"]: a["functionResponse"]["response"] for a in answers}
        assert by_id == {  # in the order the results came
            c.call_id: {"output": f"secret of {(c.arguments or {}).get('password')}"} for c in calls
        }


async def test_the_first_request_has_the_recorded_requests_shape(
    fake_server: FakeProviderServer,
) -> None:
    """The bodies the recorded real requests had, built from the same inputs: contents, system
    instruction, generation config (temperature, thinking) and function declarations."""
    async with GeminiModel(MODEL, base_url=fake_server.gemini_base_url, api_key="k") as plain:
        fake_server.enqueue(Reply.cassette("gemini/text"), path=PATH)
        recorded = request_fixture("gemini/text")
        await Worker(
            plain, system="You are a helpful chatbot.", settings=ModelSettings(temperature=0.0)
        ).run("What is the capital of France?")
        sent = bodies(fake_server)[-1]
        for key in ("contents", "systemInstruction", "generationConfig"):
            assert sent[key] == recorded[key], key

        fake_server.enqueue(Reply.cassette("gemini/parallel-function-calls"), path=PATH)
        fake_server.enqueue(Reply.gemini_text("ok"), path=PATH)
        recorded = request_fixture("gemini/parallel-function-calls")
        await Worker(plain, tools=TOOLS[:1], system="Use parallel tool calling.").run(
            recorded["contents"][0]["parts"][0]["text"]
        )
        sent = bodies(fake_server)[-2]
        for key in ("contents", "systemInstruction", "generationConfig"):
            assert sent[key] == recorded[key], key
        [ours], [theirs] = (
            sent["tools"][0]["functionDeclarations"],
            recorded["tools"][0]["functionDeclarations"],
        )
        assert ours["name"] == theirs["name"]
        schema = ours["parametersJsonSchema"]  # full JSON Schema, where the SDK sent OpenAPI
        assert schema["required"] == theirs["parameters"]["required"]
        assert schema["properties"]["password"]["type"] == "string"

    recorded = request_fixture("gemini/thinking-thought-parts")
    async with GeminiModel(
        MODEL,
        base_url=fake_server.gemini_base_url,
        api_key="k",
        thinking={"includeThoughts": True},
    ) as thinking:
        fake_server.enqueue(Reply.cassette("gemini/thinking-thought-parts"), path=PATH)
        await Worker(thinking, tools=[dummy], system="You are a helpful assistant.").run(
            "How do I cross the street?"
        )
    sent = bodies(fake_server)[-1]
    for key in ("contents", "systemInstruction", "generationConfig"):
        assert sent[key] == recorded[key], key
    assert [d["name"] for d in sent["tools"][0]["functionDeclarations"]] == ["dummy"]
    request = fake_server.requests[-1]
    assert request.query == "alt=sse"
    assert request.headers["x-goog-api-key"] == "k"
    assert request.headers["content-type"] == "application/json"


# -- the stream cut at every event boundary -------------------------------------------------------


def _event_count(name: str) -> int:
    return len(sse_payloads(name))


CUTS = [(name, cut) for name in GEMINI for cut in range(_event_count(name) + 1)]


@pytest.mark.parametrize(("name", "cut"), CUTS, ids=[f"{n[7:]}-{c}" for n, c in CUTS])
async def test_a_stream_cut_at_any_event_boundary_leaves_a_valid_history(
    name: str, cut: int, fake_server: FakeProviderServer
) -> None:
    """The connection drops after ``cut`` events: before the finishReason it is a `ModelError`
    that keeps what was said (interrupted); at the end it is no error. Either way the next
    request is valid and says what was kept."""
    async with GeminiModel(
        MODEL, base_url=fake_server.gemini_base_url, api_key="k", retry=NO_RETRY
    ) as model:
        fake_server.enqueue(Reply.cassette(name, drop_after=cut), path=PATH)
        fake_server.set_default(Reply.gemini_text("Continuing."), path=PATH)
        worker = Worker(model, tools=TOOLS)
        whole = cut == _event_count(name)
        if whole:
            await worker.run("Go.")
        else:
            with pytest.raises(ModelError) as caught:
                await worker.run("Go.")
            assert caught.value.retryable
            kept = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
            assert all(i.interrupted for i in kept)
        assert (await worker.run("Go on.")).output == "Continuing."
    body = bodies(fake_server)[-1]
    assert_valid(body)
    assert body["contents"][-1]["parts"][-1] == {"text": "Go on."}
    first = next((c for c in body["contents"] if c["role"] == "model"), {"parts": []})
    said = "".join(p.get("text", "") for p in first["parts"] if not p.get("thought"))
    assert expected_response(name)["text"].startswith(said)


# -- Stop mid-stream ------------------------------------------------------------------------------


KINDS: dict[str, tuple[str, Callable[[Event], bool]]] = {
    "mid-text": ("gemini/text", lambda e: isinstance(e, TextDelta)),
    "mid-thought": ("gemini/thinking-thought-parts", lambda e: isinstance(e, ReasoningDelta)),
    "after-signed-text": (
        "gemini/thinking-thought-parts",
        lambda e: isinstance(e, TextDelta) and "street" in e.text,
    ),
    "during-tools": ("gemini/parallel-function-calls", lambda e: isinstance(e, ToolStarted)),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_the_request_after_a_stop_is_valid(
    kind: str, fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    """Stop mid-text, mid-thought, after signed text, or while the parallel calls run: the
    partial text is kept, every call is answered, the next request is valid and says the turn
    was interrupted."""
    name, when = KINDS[kind]
    fake_server.enqueue(Reply.cassette(name, pace=0.01), path=PATH)
    worker = Worker(model, tools=stuck_tools(), tool_grace=0.05)
    error = await interrupt(worker, when)
    assert isinstance(error, Cancelled)
    message = next(i for i in error.partial.items if isinstance(i, AssistantMessage))
    assert message.interrupted == (kind != "during-tools")  # the calls' message was whole
    if kind == "mid-text":
        assert message.text == "The"

    fake_server.enqueue(Reply.gemini_text("Continuing."), path=PATH)
    assert (await worker.run("Go on.")).output == "Continuing."
    body = bodies(fake_server)[-1]
    assert_valid(body)
    last = body["contents"][-1]["parts"]
    assert "interrupted" in last[-2]["text"]
    assert last[-1] == {"text": "Go on."}
    said = [p for c in body["contents"] if c["role"] == "model" for p in c["parts"]]
    if kind == "mid-text":
        assert said == [{"text": "The"}]
    elif kind == "mid-thought":
        assert said == []  # an unsigned thought does not go back; nothing else was said
    elif kind == "after-signed-text":
        assert said[0]["thoughtSignature"]
        assert not any(p.get("thought") for p in said)  # the thoughts carried no signature
    else:
        answers = [p["functionResponse"] for p in body["contents"][2]["parts"][:2]]
        assert [a["name"] for a in answers] == ["secret_retrieval_tool"] * 2
        # not outputs: interrupted (or never started) calls' results go back as errors
        assert all(set(a["response"]) == {"error"} for a in answers)


# -- faults ---------------------------------------------------------------------------------------


def rate_limited(delay: str) -> Reply:
    """Gemini's 429: a ``RESOURCE_EXHAUSTED`` error whose RetryInfo says how long to wait."""
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    ]
    error = {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}
    return Reply.error(429, {"error": {**error, "details": details}})


async def test_a_429_waits_as_long_as_its_retry_info_says(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(rate_limited("0.05s"), Reply.cassette("gemini/text"), path=PATH)
    events, error = await collect_run(Worker(model), "hi")
    assert error is None
    [retry] = [e for e in events if isinstance(e, Retrying)]
    assert retry.delay == pytest.approx(0.05)
    assert "Quota exceeded." in retry.error
    assert len(bodies(fake_server)) == 2


async def test_a_persistent_500_is_a_model_error_and_the_worker_runs_again(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(*[Reply.error(500)] * FAST_RETRY.max_attempts, path=PATH)
    worker = Worker(model)
    with pytest.raises(ModelError, match="HTTP 500") as caught:
        await worker.run("hi")
    assert caught.value.status_code == 500
    assert caught.value.retryable
    assert [type(i) for i in caught.value.partial.items] == [UserMessage]
    fake_server.enqueue(Reply.gemini_text("Back."), path=PATH)
    assert (await worker.run("again")).output == "Back."
    assert_valid(bodies(fake_server)[-1])


async def test_a_bad_request_is_not_retried_and_says_what_gemini_said(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(Reply.error(400, message="contents: bad"), path=PATH)
    with pytest.raises(ModelError, match="HTTP 400: contents: bad") as caught:
        await Worker(model).run("hi")
    assert not caught.value.retryable
    assert len(bodies(fake_server)) == 1


async def test_a_malformed_chunk_mid_stream_keeps_the_text(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(Reply.cassette("gemini/text", malformed_at=2), path=PATH)
    worker = Worker(model)
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    assert not caught.value.retryable
    [kept] = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
    assert (kept.text, kept.interrupted) == ("The capital of France", True)
    assert len(bodies(fake_server)) == 1
    fake_server.enqueue(Reply.gemini_text("Recovered."), path=PATH)
    assert (await worker.run("again")).output == "Recovered."
    assert_valid(bodies(fake_server)[-1])


UNAVAILABLE = {
    "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
}


async def test_an_error_object_before_any_content_is_retried(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(Reply.sse([UNAVAILABLE]), Reply.cassette("gemini/text"), path=PATH)
    events, error = await collect_run(Worker(model), "hi")
    assert error is None
    [retry] = [e for e in events if isinstance(e, Retrying)]
    assert "overloaded" in retry.error


async def test_a_blocked_prompt_is_a_typed_error_never_retried(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    }
    fake_server.enqueue(Reply.sse([blocked]), path=PATH)
    worker = Worker(model)
    with pytest.raises(PromptBlocked, match=r"blocked the prompt \(SAFETY\)") as caught:
        await worker.run("something bad")
    assert caught.value.block_reason == "SAFETY"
    assert not caught.value.retryable
    assert len(bodies(fake_server)) == 1
    fake_server.enqueue(Reply.gemini_text("Fine."), path=PATH)
    assert (await worker.run("something fine")).output == "Fine."
    assert_valid(bodies(fake_server)[-1])


async def test_a_safety_finish_keeps_what_was_said_as_a_refusal(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(Reply.gemini_text(["Here is", " how"], finish_reason="SAFETY"), path=PATH)
    result = await Worker(model).run("hi")
    message = next(i for i in result.items if isinstance(i, AssistantMessage))
    assert (message.text, message.stop_reason) == ("Here is how", "refusal")


# -- the worker end to end -----------------------------------------------------------------------


async def test_a_worker_from_the_spec_runs_parallel_calls_with_a_key_from_the_environment(
    fake_server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "env-key-0123456789")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_server.gemini_base_url)
    fake_server.enqueue(
        Reply.cassette("gemini/parallel-function-calls"),
        Reply.gemini_text(["Both ", "secrets ", "found."]),
        path=FakeProviderServer.gemini_path("gemini-2.5-flash"),
    )
    worker = Worker("gemini:gemini-2.5-flash", tools=TOOLS)
    try:
        result = await worker.run("Get both secrets.")
    finally:
        model = worker.model
        assert isinstance(model, GeminiModel)
        await model.aclose()
    assert result.output == "Both secrets found."
    outputs = sorted(i.content for i in result.items if isinstance(i, ToolResult))
    assert outputs == ["secret of mellon", "secret of radiance"]
    assert {r.headers["x-goog-api-key"] for r in fake_server.requests} == {"env-key-0123456789"}


async def test_a_stop_mid_stream_keeps_the_partial_text(
    fake_server: FakeProviderServer, model: GeminiModel
) -> None:
    fake_server.enqueue(Reply.gemini_text(["One", " two", " three", " four"], pace=0.05), path=PATH)
    worker = Worker(model)
    error = await interrupt(worker, lambda e: isinstance(e, TextDelta) and "two" in e.text)
    assert isinstance(error, Cancelled)
    [kept] = [i for i in error.partial.items if isinstance(i, AssistantMessage)]
    assert kept.interrupted
    assert kept.text in ("One two", "One two three")  # a delta in flight may land
    with anyio.fail_after(5):
        stats = await fake_server.wait_for_async(lambda s: s.disconnects_mid_stream == 1)
    assert stats.streams_completed == 0


async def test_runs_cancelled_at_random_moments_leak_no_connection(
    fake_server: FakeProviderServer,
) -> None:
    """40 runs on a two-connection pool, cancelled by an outer scope at random moments (waiting
    for headers, mid-stream, in a 429's back-off): no connection stays busy, the server saw
    every stream completed or abandoned, and the next run gets a connection."""
    http = httpx2.AsyncClient(
        limits=httpx2.Limits(max_connections=2, max_keepalive_connections=2),
        timeout=Timeouts(connect=5.0).for_httpx(),
    )
    client = GeminiClient(api_key="k", base_url=fake_server.gemini_base_url, http_client=http)
    model = GeminiModel(MODEL, client=client, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    fake_server.set_default(Reply.gemini_text(["tok "] * 20, pace=0.002), path=PATH)
    rng = random.Random(20261203)
    for _ in range(10):
        slow = Reply.gemini_text(["slow "] * 5, delay=0.02, pace=0.002)
        fake_server.enqueue(rng.choice([rate_limited("0.03s"), slow]), path=PATH)
    try:
        for _ in range(40):
            with anyio.move_on_after(rng.uniform(0.0, 0.06)):
                await Worker(model).run("hi")
        pool = http._transport._pool  # type: ignore[attr-defined]
        assert [c for c in pool.connections if not (c.is_idle() or c.is_closed())] == []
        assert pool._requests == []
        with anyio.fail_after(10):
            await fake_server.wait_for_async(
                lambda s: s.streams_started == s.streams_completed + s.disconnects_mid_stream
            )
        fake_server.set_default(Reply.gemini_text("After."), path=PATH)
        assert (await Worker(model).run("again")).output == "After."
    finally:
        await client.close()


# -- credentials and the spec -------------------------------------------------------------------


def test_credentials_and_endpoint_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(MissingCredentials, match="GEMINI_API_KEY"):
        resolve_model("gemini:gemini-2.5-flash")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    model = resolve_model("gemini:gemini-2.5-flash")
    assert isinstance(model, GeminiModel)
    assert model.name == "gemini:gemini-2.5-flash"
    assert model.client.api_key == "gemini-key"
    assert str(model.client.base_url) == "https://generativelanguage.googleapis.com/"
    assert model.request_path() == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")  # wins, as in the SDK
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9/")
    model = resolve_model("gemini:models/gemini-2.5-pro")
    assert isinstance(model, GeminiModel)
    assert (model.client.api_key, model.model) == ("google-key", "gemini-2.5-pro")
    assert str(model.client.base_url) == "http://127.0.0.1:9/"
    explicit = resolve_model("gemini:m", base_url="http://127.0.0.1:8")
    assert isinstance(explicit, GeminiModel)
    assert str(explicit.client.base_url) == "http://127.0.0.1:8/"


# -- the stream, chunk by chunk ------------------------------------------------------------------


def test_unknown_usage_stays_unknown_and_thoughts_count_as_output() -> None:
    translation = StreamTranslation()
    text = {"candidates": [{"content": {"parts": [{"text": "a"}]}}]}
    assert list(translation.feed(text)) == [TextDelta(text="a")]
    events = translation.feed(
        {"candidates": [], "usageMetadata": {"promptTokenCount": 5, "thoughtsTokenCount": 3}}
    )
    assert events == [UsageUpdate(usage=Usage(input_tokens=5, output_tokens=3, reasoning_tokens=3))]
    assert not translation.complete
    with pytest.raises(ModelError, match="cut off"):
        translation.finish()


def test_signatures_ride_with_their_parts() -> None:
    translation = StreamTranslation()
    chunk = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "hmm", "thought": True},
                        {"text": "Hi", "thoughtSignature": "S1"},
                        {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "S2"},
                        {"functionCall": {"name": "g", "id": "given"}},
                        {"inlineData": {"mimeType": "image/png", "data": ""}},
                    ]
                },
                "finishReason": "STOP",
            }
        ]
    }
    assert translation.feed(chunk) == [
        ReasoningStart(provider="gemini"),
        ReasoningDelta(text="hmm"),
        ReasoningEnd(),
        ReasoningStart(provider="gemini"),
        ReasoningEnd(signature="S1"),
        TextDelta(text="Hi"),
        ToolCallStart(index=0, call_id="", name="f", provider_id=SIGNATURE_PREFIX + "S2"),
        ToolCallDelta(index=0, arguments='{"x": 1}'),
        ToolCallEnd(index=0),
        ToolCallStart(index=1, call_id="given", name="g"),
        ToolCallDelta(index=1, arguments="{}"),
        ToolCallEnd(index=1),
        StopReason(reason="tool_use"),
    ]
    assert translation.complete
    assert translation.finish() == ()


@pytest.mark.parametrize(
    "chunk",
    [
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
        {"candidates": [{"content": {"parts": [{"text": 3}]}}]},
        {"candidates": "nope"},
        {"candidates": [{"content": {"parts": "nope"}}]},
    ],
)
def test_a_chunk_of_the_wrong_shape_is_a_malformed_stream(chunk: Any) -> None:
    with pytest.raises(MalformedStream):
        StreamTranslation().feed(chunk)


# -- the history ----------------------------------------------------------------------------------


def test_signatures_go_back_only_to_gemini_and_unsigned_thoughts_stay_home() -> None:
    history: list[Item] = [
        UserMessage(text="q"),
        AssistantMessage(
            parts=(
                ReasoningPart(text="unsigned", provider="gemini"),
                ReasoningPart(text="signed", signature="T", provider="gemini"),
                ReasoningPart(text="theirs", signature="A", provider="anthropic"),
                ReasoningPart(signature="S", provider="gemini"),
                TextPart(text="answer"),
            )
        ),
        ToolCall(call_id="c1", name="f", arguments={}, provider_id="fc_openai_item"),
        ToolCall(call_id="c2", name="f", arguments={}, provider_id=SIGNATURE_PREFIX + "C"),
        ToolResult(call_id="c1", name="f", content="one"),
        ToolResult(call_id="c2", name="f", content="two", status="error"),
        Note(text="a note", kind="info"),
    ]
    contents = convert_history(repair(history))
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"text": "signed", "thought": True, "thoughtSignature": "T"},
            {"text": "answer", "thoughtSignature": "S"},
            {"functionCall": {"id": "c1", "name": "f", "args": {}}},
            {"functionCall": {"id": "c2", "name": "f", "args": {}}, "thoughtSignature": "C"},
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"id": "c1", "name": "f", "response": {"output": "one"}}},
            {"functionResponse": {"id": "c2", "name": "f", "response": {"error": "two"}}},
            {"text": "a note"},
        ],
    }


def test_a_history_that_starts_with_the_model_gets_a_user_content_first() -> None:
    contents = convert_history([AssistantMessage(parts=(TextPart(text="hello"),))])
    assert contents == [
        {"role": "user", "parts": [{"text": CONVERSATION_START}]},
        {"role": "model", "parts": [{"text": "hello"}]},
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(_items, max_size=14))
def test_any_history_converts_to_a_valid_request(history: list[Item]) -> None:
    request = ModelRequest(
        history=[*repair(history), UserMessage(text="now")],
        tools=[ToolSpec(name="f", description="", parameters={"type": "object"})],
    )
    assert_valid(GeminiModel("m", api_key="k").request_params(request))
