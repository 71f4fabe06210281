"""``llm-worker run -a PATH_OR_URL``: attachments go with the prompt to the provider, are kept
in the session (bytes in its blob table), and a bad one is a usage error before anything runs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_worker.items import ImagePart, UserMessage
from llm_worker.testing import FakeProviderServer
from llm_worker.testing._fake_replies import Reply

from ._helpers import cli_env, history, one_error_line, run_cli

PNG = b"\x89PNG\r\n\x1a\n a picture"


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as fake:
        yield fake
    assert fake.errors == []


def test_attached_files_and_urls_reach_the_provider_and_the_session(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(PNG)
    db = tmp_path / "s.db"
    server.enqueue(Reply.openai_text("A cat."))
    args = ["run", "--model", "openai:m", "--base-url", server.openai_base_url, "--session", "a"]
    done = run_cli(
        *args,
        "-a",
        str(picture),
        "--attach",
        "https://example.com/dog.jpg",
        "What are these?",
        env=cli_env(db, OPENAI_API_KEY="k"),
    )
    assert done.returncode == 0, done.stderr
    [user] = [m for m in server.requests[0].json["messages"] if m["role"] == "user"]
    urls = [part["image_url"]["url"] for part in user["content"][1:]]
    assert urls == [
        f"data:image/png;base64,{base64.b64encode(PNG).decode()}",
        "https://example.com/dog.jpg",
    ]
    [message] = [i for i in history(db, "a") if isinstance(i, UserMessage)]
    assert [type(p) for p in message.parts] == [ImagePart, ImagePart]


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("run", "-a", str(tmp_path / "nope.png"), "hi", env=cli_env(tmp_path / "s.db"))
    assert done.returncode == 2
    assert "cannot attach" in one_error_line(done.stderr)
