from __future__ import annotations

from typing import Any

from .conftest import chat_body, read_stream


async def test_a_full_chat_streams_text_and_finishes(server_factory: Any, client: Any) -> None:
    server = server_factory(model="offline")
    async with client.stream(
        "POST", f"{server.url}/api/chat", json=chat_body("c1", "hello")
    ) as response:
        reader = await read_stream(response)
    assert reader.ending == "finish"
    assert reader.text
