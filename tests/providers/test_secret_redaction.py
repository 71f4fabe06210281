"""A server that echoes the API key in an error never gets it printed, stored or sent on.

The review's server answered an invalid key with a body quoting it; the key then showed in the
error's message, its cause, its traceback, the interruption note in the history — and so in the
next request, to the model. Every error text the model layer produces is redacted at the source
(`Redactor`, in `provider_stream`); these tests look for the key everywhere a user or the next
request could see it, over real HTTP, on every protocol.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from llm_worker import ModelError, Worker
from llm_worker.events import Retrying, StreamError
from llm_worker.items import dump_history
from llm_worker.models import RetryPolicy
from llm_worker.models._redact import REDACTED, Redactor, client_secrets
from llm_worker.models.anthropic import AnthropicModel
from llm_worker.models.gemini import GeminiModel
from llm_worker.models.openai_chat import OpenAIChatModel
from llm_worker.models.openai_responses import OpenAIResponsesModel
from llm_worker.store import SQLiteStore
from llm_worker.testing import FakeProviderServer, Reply

from .conftest import CASSETTES
from .raw_server import RawServer, chunked, script, sse, stream_head
from .test_anthropic import collect_run
from .test_hostile_wire import text_answer, text_so_far

KEY = "sk-live-0123456789abcdefghijSECRET"
PROTOCOLS = ["chat", "responses", "anthropic", "gemini"]
PATHS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "anthropic": "/v1/messages",
    "gemini": FakeProviderServer.gemini_path("gemini-test"),
}
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
Model = OpenAIChatModel | OpenAIResponsesModel | AnthropicModel | GeminiModel


def make_model(protocol: str, base_url: str, **options: Any) -> Model:
    options.setdefault("api_key", KEY)
    options.setdefault("retry", FAST_RETRY)
    if protocol == "chat":
        return OpenAIChatModel("local-model", base_url=base_url + "/v1", **options)
    if protocol == "responses":
        return OpenAIResponsesModel("gpt-4.1-mini", base_url=base_url + "/v1", **options)
    if protocol == "gemini":
        return GeminiModel("gemini-test", base_url=base_url, **options)
    return AnthropicModel("claude-test", base_url=base_url, **options)


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer(cassettes_dir=CASSETTES) as server:
        yield server


@pytest.fixture
async def models() -> AsyncIterator[Callable[..., Model]]:
    made: list[Model] = []

    def factory(protocol: str, base_url: str, **options: Any) -> Model:
        model = make_model(protocol, base_url, **options)
        made.append(model)
        return model

    yield factory
    for model in made:
        await model.aclose()


def everything_shown(error: BaseException) -> str:
    """Every text a user, a log or a store could get from ``error``."""
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, ModelError):
        texts += [str(error.cause), repr(error.cause.reason), error.cause.render_tree()]
        texts += [dump_history(list(error.partial.items)), str(error.partial)]
    seen = error
    while (seen := seen.__cause__ or seen.__context__) is not None:  # type: ignore[assignment]
        texts += [str(seen), repr(seen), repr(getattr(seen, "body", None))]
    return "\n".join(texts)


def assert_no_key(text: str) -> None:
    assert KEY not in text
    assert KEY[:12] not in text  # no fragment of it either


async def assert_next_request_has_no_key(
    worker: Worker, server: FakeProviderServer, protocol: str
) -> None:
    """The same worker runs again; what it sends the model (the body: the headers carry the
    key by design) does not contain the key, though the history says the last run failed."""
    reply = {
        "chat": Reply.openai_text("Fine."),
        "responses": Reply.responses_text("Fine."),
        "anthropic": Reply.anthropic_text("Fine."),
        "gemini": Reply.gemini_text("Fine."),
    }[protocol]
    server.enqueue(reply, path=PATHS[protocol])
    assert (await worker.run("next")).output == "Fine."
    body = server.last_request.body.decode()
    assert_no_key(body)
    assert_no_key(dump_history(worker.history))


def echo_body(protocol: str, status: int) -> dict[str, Any]:
    said = f"Incorrect API key provided: {KEY}. You can find your API key in your account."
    if protocol == "anthropic":
        return {"type": "error", "error": {"type": "authentication_error", "message": said}}
    if protocol == "gemini":
        return {"error": {"code": status, "message": said, "status": "UNAUTHENTICATED"}}
    return {"error": {"message": said, "type": "invalid_request_error", "code": "invalid_api_key"}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_http_error_echoing_the_key_never_shows_it_anywhere(
    protocol: str, fake_server: FakeProviderServer, models: Callable[..., Model]
) -> None:
    fake_server.enqueue(Reply.error(401, echo_body(protocol, 401)), path=PATHS[protocol])
    worker = Worker(models(protocol, fake_server.base_url))
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    error = caught.value
    assert f"Incorrect API key provided: {REDACTED}." in str(error)
    assert_no_key(everything_shown(error))
    await assert_next_request_has_no_key(worker, fake_server, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_retried_error_echoing_the_key_never_shows_it_in_the_retry_report(
    protocol: str, fake_server: FakeProviderServer, models: Callable[..., Model]
) -> None:
    body = json.dumps({"error": {"message": f"upstream rejected key {KEY}"}}).encode()
    fake_server.enqueue(Reply.error(503, body), path=PATHS[protocol])
    fake_server.enqueue(
        {
            "chat": Reply.openai_text("Fine."),
            "responses": Reply.responses_text("Fine."),
            "anthropic": Reply.anthropic_text("Fine."),
            "gemini": Reply.gemini_text("Fine."),
        }[protocol],
        path=PATHS[protocol],
    )
    events, error = await collect_run(Worker(models(protocol, fake_server.base_url)), "hi")
    assert error is None
    [retrying] = [e for e in events if isinstance(e, Retrying)]
    assert REDACTED in retrying.error
    assert_no_key(retrying.model_dump_json())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_error_event_echoing_the_key_mid_stream_never_shows_it(
    protocol: str, models: Callable[..., Model]
) -> None:
    said = f"key {KEY} has no access to this model"
    if protocol == "chat":
        [event] = sse({"error": {"message": said, "type": "invalid_request_error"}})
    elif protocol == "responses":
        [event] = sse({"type": "error", "code": "invalid_api_key", "message": said}, named=True)
    elif protocol == "gemini":
        [event] = sse({"error": {"code": 403, "message": said, "status": "PERMISSION_DENIED"}})
    else:
        [event] = sse({"type": "error", "error": {"type": "permission_error", "message": said}})
    with RawServer() as server:
        parts = [stream_head(), *chunked(*text_so_far(protocol, "Partial"), event)]
        server.play(script(parts, "rst", linger=0.05))
        worker = Worker(models(protocol, server.base_url))
        events, error = await collect_run(worker, "hi")
        assert isinstance(error, ModelError)
        assert REDACTED in str(error)
        assert_no_key(everything_shown(error))
        for streamed in events:
            if isinstance(streamed, StreamError):
                assert_no_key(streamed.message)
        server.play(
            script([stream_head(), *chunked(*text_answer(protocol, "Fine.")), b"0\r\n\r\n"])
        )
        assert (await worker.run("next")).output == "Fine."
        assert_no_key(server.requests[-1].body.decode())


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_key_cut_short_by_a_length_limit_is_redacted_too(
    protocol: str, fake_server: FakeProviderServer, models: Callable[..., Model]
) -> None:
    """Server messages are shortened to 300 characters; the fragment of the key that a cut
    leaves is still a secret."""
    said = "x" * 280 + f" {KEY}"
    fake_server.enqueue(Reply.error(400, {"error": {"message": said}}), path=PATHS[protocol])
    with pytest.raises(ModelError) as caught:
        await Worker(models(protocol, fake_server.base_url)).run("hi")
    assert_no_key(everything_shown(caught.value))


async def test_the_secrets_of_a_client_are_its_key_and_its_credential_headers() -> None:
    async with openai.AsyncOpenAI(
        api_key=KEY, base_url="http://127.0.0.1:9/v1", default_headers={"api-key": "azure-key-123"}
    ) as client:
        secrets = set(client_secrets(client))
    assert {KEY, f"Bearer {KEY}", "azure-key-123"} <= secrets
    async with anthropic.AsyncAnthropic(
        auth_token="bearer-token-456", base_url="http://127.0.0.1:9"
    ) as claude:
        assert "bearer-token-456" in client_secrets(claude)


def test_a_placeholder_key_is_not_redacted_out_of_every_message() -> None:
    """Local servers take any key ("ollama", "EMPTY", "k"): redacting those would mangle text."""
    redact = Redactor(["ollama", "k", KEY])
    assert redact("ollama could not be reached") == "ollama could not be reached"
    assert redact(f"bad key {KEY}!") == f"bad key {REDACTED}!"
    assert redact(f"cut: {KEY[:20]}...") == f"cut: {REDACTED}..."


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_session_database_never_stores_an_echoed_key(
    protocol: str,
    fake_server: FakeProviderServer,
    models: Callable[..., Model],
    tmp_path: Path,
) -> None:
    """The run's failure reason and the interruption note the next run commits are stored in
    the session's SQLite file: neither holds the key."""
    fake_server.enqueue(Reply.error(401, echo_body(protocol, 401)), path=PATHS[protocol])
    path = tmp_path / "sessions.db"
    with SQLiteStore(path) as store, store.open_session("s") as session:
        worker = Worker(models(protocol, fake_server.base_url), history=session.history)
        session.attach(worker)
        with pytest.raises(ModelError):
            await worker.run("hi")
        await assert_next_request_has_no_key(worker, fake_server, protocol)
    stored = stored_bytes(tmp_path)
    assert KEY.encode() not in stored
    assert KEY[:12].encode() not in stored
    assert REDACTED.encode() in stored  # the reason was stored, redacted


def stored_bytes(directory: Path) -> bytes:
    """Every byte of every file under ``directory`` (the database, its WAL, its lock files)."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())
