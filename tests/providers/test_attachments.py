"""Attachments in user messages, converted to each provider's documented shape (request bodies
checked over real HTTP against the fake server), and refused clearly where they cannot go."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_worker import Worker
from llm_worker.attachments import attach, from_bytes
from llm_worker.errors import UnsupportedAttachment
from llm_worker.items import DocumentPart, ImagePart, TextPart, UserMessage, dump_item, load_item
from llm_worker.models import AnthropicModel, OpenAIChatModel, OpenAIResponsesModel, RetryPolicy
from llm_worker.models.gemini import GeminiModel
from llm_worker.testing import FakeProviderServer, Reply

from .conftest import SDK_GENERATOR_WARNINGS

pytestmark = [SDK_GENERATOR_WARNINGS]

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
PDF = b"%PDF-1.4 fake document"
PNG64 = base64.b64encode(PNG).decode()
PDF64 = base64.b64encode(PDF).decode()
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as running:
        yield running
        running.wait_for(lambda s: s.active_connections == 0, timeout=5.0)
    assert running.errors == []


def _parts() -> list[Any]:
    return [
        ImagePart(url="https://example.com/cat.png"),
        from_bytes(PNG, "image/png"),
        from_bytes(PDF, "application/pdf", name="report.pdf"),
        TextPart(text="and one more thing"),
    ]


async def _user_content(model: Any, server: FakeProviderServer, path: str, reply: Reply) -> Any:
    server.enqueue(reply, path=path)
    async with model:
        await Worker(model).run("Describe these.", attachments=_parts())
    [request] = [r.json for r in server.requests if r.path == path]
    return request


async def test_openai_chat_sends_image_url_and_file_parts(server: FakeProviderServer) -> None:
    model = OpenAIChatModel("m", base_url=server.openai_base_url, api_key="k", retry=ONCE)
    body = await _user_content(model, server, "/v1/chat/completions", Reply.openai_text("ok"))
    [user] = [m for m in body["messages"] if m["role"] == "user"]
    assert user["content"] == [
        {"type": "text", "text": "Describe these."},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}"}},
        {
            "type": "file",
            "file": {"filename": "report.pdf", "file_data": f"data:application/pdf;base64,{PDF64}"},
        },
        {"type": "text", "text": "and one more thing"},
    ]


async def test_openai_responses_sends_input_image_and_input_file(
    server: FakeProviderServer,
) -> None:
    model = OpenAIResponsesModel("m", base_url=server.openai_base_url, api_key="k", retry=ONCE)
    body = await _user_content(model, server, "/v1/responses", Reply.responses_text("ok"))
    [user] = [m for m in body["input"] if m.get("role") == "user"]
    assert user["content"] == [
        {"type": "input_text", "text": "Describe these."},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG64}", "detail": "auto"},
        {
            "type": "input_file",
            "filename": "report.pdf",
            "file_data": f"data:application/pdf;base64,{PDF64}",
        },
        {"type": "input_text", "text": "and one more thing"},
    ]


async def test_anthropic_sends_image_and_document_blocks(server: FakeProviderServer) -> None:
    model = AnthropicModel("m", base_url=server.anthropic_base_url, api_key="k", retry=ONCE)
    body = await _user_content(model, server, "/v1/messages", Reply.anthropic_text("ok"))
    [user] = [m for m in body["messages"] if m["role"] == "user"]
    assert user["content"] == [
        {"type": "text", "text": "Describe these."},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG64}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF64},
            "title": "report.pdf",
        },
        {"type": "text", "text": "and one more thing"},
    ]


async def test_gemini_sends_inline_data_and_file_data_parts(server: FakeProviderServer) -> None:
    model = GeminiModel("m", base_url=server.gemini_base_url, api_key="k", retry=ONCE)
    path = FakeProviderServer.gemini_path("m")
    body = await _user_content(model, server, path, Reply.gemini_text("ok"))
    [user] = [c for c in body["contents"] if c["role"] == "user"]
    assert user["parts"] == [
        {"text": "Describe these."},
        {"fileData": {"fileUri": "https://example.com/cat.png"}},
        {"inlineData": {"mimeType": "image/png", "data": PNG64}},
        {"inlineData": {"mimeType": "application/pdf", "data": PDF64}},
        {"text": "and one more thing"},
    ]


async def test_a_document_by_url_goes_as_a_url_where_the_api_takes_one(
    server: FakeProviderServer,
) -> None:
    document = DocumentPart(url="https://example.com/paper.pdf")
    server.enqueue(Reply.responses_text("ok"), path="/v1/responses")
    server.enqueue(Reply.anthropic_text("ok"), path="/v1/messages")
    responses = OpenAIResponsesModel("m", base_url=server.openai_base_url, api_key="k")
    anthropic = AnthropicModel("m", base_url=server.anthropic_base_url, api_key="k")
    for model in (responses, anthropic):
        async with model:
            await Worker(model).run("Read it.", attachments=[document])
    by_path = {r.path: r.json for r in server.requests}
    [user] = [m for m in by_path["/v1/responses"]["input"] if m.get("role") == "user"]
    assert user["content"][1] == {"type": "input_file", "file_url": document.url}
    [user] = [m for m in by_path["/v1/messages"]["messages"] if m["role"] == "user"]
    assert user["content"][1] == {
        "type": "document",
        "source": {"type": "url", "url": document.url},
    }


async def test_chat_completions_refuses_a_document_by_url(server: FakeProviderServer) -> None:
    async with OpenAIChatModel("m", base_url=server.openai_base_url, api_key="k") as model:
        worker = Worker(model)
        with pytest.raises(UnsupportedAttachment, match="a document by URL"):
            await worker.run("Read it.", attachments=[DocumentPart(url="https://x/p.pdf")])
    assert server.requests == []  # refused before anything was sent


async def test_the_offline_model_refuses_attachments_with_a_typed_error() -> None:
    worker = Worker("offline")
    with pytest.raises(UnsupportedAttachment, match="offline model cannot read attachments"):
        await worker.run("What is this?", attachments=[from_bytes(PNG, "image/png")])


def test_a_plain_user_message_is_unchanged_and_parts_round_trip() -> None:
    plain = UserMessage(text="hi")
    assert plain.parts == ()
    rich = UserMessage(text="hi", parts=tuple(_parts()))
    assert load_item(dump_item(rich)) == rich


def test_an_attachment_needs_one_source_and_data_needs_a_media_type() -> None:
    with pytest.raises(ValueError, match="either a url or data"):
        ImagePart()
    with pytest.raises(ValueError, match="media_type"):
        DocumentPart(data=PDF64)


def test_attach_reads_a_path_and_keeps_a_url(tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(PNG)
    part = attach(picture)
    assert isinstance(part, ImagePart)
    assert (part.media_type, part.data) == ("image/png", PNG64)
    paper = attach("https://example.com/paper.pdf")
    assert isinstance(paper, DocumentPart)
    assert paper.url == "https://example.com/paper.pdf"
    with pytest.raises(ValueError, match="media type"):
        attach(tmp_path / "noextension")
