"""Bad input and foreign callers: each a clear 4xx with a JSON error, nothing lost, the server
still serving."""

from __future__ import annotations

from typing import Any

import httpx2

from llm_worker.models import OfflineModel

from .conftest import chat_body, read_stream

TOKEN = "s3cret-token-for-tests"


def fast() -> OfflineModel:
    return OfflineModel(pace=0.001)


async def assert_refused(response: httpx2.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


async def still_serving(client: httpx2.AsyncClient, url: str, **headers: str) -> None:
    async with client.stream(
        "POST", f"{url}/api/chat", json=chat_body("ok", "hi"), headers=headers
    ) as r:
        assert (await read_stream(r)).ending == "finish"


MALFORMED = [
    (b"{not json", 400, "not valid JSON"),
    (b'{"messages": []}', 400, "id"),
    (b'{"id": "x", "messages": [{"role": "robot", "parts": []}]}', 400, "role"),
    (b'{"id": "x", "messages": []}', 400, "no text"),
    (
        b'{"id": "bad\\u0000name", "messages": [{"role": "user", "parts": '
        b'[{"type": "text", "text": "hi"}]}]}',
        400,
        "bad chat id",
    ),
    (b'{"id": "x", "messages": [], "trigger": "explode"}', 400, "trigger"),
]


async def test_a_malformed_chat_request_is_a_400_with_a_json_error(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=fast)
    for body, status, words in MALFORMED:
        response = await client.post(
            f"{server.url}/api/chat", content=body, headers={"content-type": "application/json"}
        )
        await assert_refused(response, status, words)
    bad_stop = await client.post(f"{server.url}/api/chats/x/cancel", content=b"[1, 2")
    await assert_refused(bad_stop, 400, "not valid JSON")
    await still_serving(client, server.url)


async def test_huge_bodies_and_messages_are_refused_with_413(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=fast, max_body_bytes=100_000, max_message_chars=5_000)
    huge = await client.post(f"{server.url}/api/chat", json=chat_body("h", "x" * 200_000))
    await assert_refused(huge, 413, "larger than")

    async def chunked() -> Any:  # no content-length: the limit holds while reading
        for _ in range(11):  # the last piece crosses the limit: the whole body is sent
            yield b"x" * 10_000

    streamed = await client.post(f"{server.url}/api/chat", content=chunked())
    await assert_refused(streamed, 413, "larger than")
    long_message = await client.post(f"{server.url}/api/chat", json=chat_body("h", "y" * 6_000))
    await assert_refused(long_message, 413, "longer than")
    await still_serving(client, server.url)


async def test_unknown_chats_are_404(server_factory: Any, client: httpx2.AsyncClient) -> None:
    server = server_factory(model_factory=fast)
    await assert_refused(await client.get(f"{server.url}/api/chats/nope"), 404, "no chat")
    await assert_refused(await client.delete(f"{server.url}/api/chats/nope"), 404, "no chat")
    await assert_refused(await client.get(f"{server.url}/api/nothing"), 404, "Not Found")
    await still_serving(client, server.url)


async def test_a_deleted_chat_is_gone(server_factory: Any, client: httpx2.AsyncClient) -> None:
    server = server_factory(model_factory=fast)
    await still_serving(client, server.url)
    assert (await client.delete(f"{server.url}/api/chats/ok")).json() == {"deleted": True}
    await assert_refused(await client.get(f"{server.url}/api/chats/ok"), 404, "no chat")


FOREIGN = [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"origin": "http://127.0.0.1:1"},  # another local port is another site
    {"sec-fetch-site": "cross-site"},
    {"host": "evil.example"},  # DNS rebinding: a foreign name resolving to us
]


async def test_foreign_origins_and_hosts_are_refused_with_403(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=fast)
    for headers in FOREIGN:
        for method, path in (("POST", "/api/chat"), ("GET", "/api/chats"), ("GET", "/")):
            body = chat_body("x", "hi") if method == "POST" else None
            response = await client.request(
                method, f"{server.url}{path}", json=body, headers=headers
            )
            assert response.status_code == 403, (headers, path, response.text)
            assert "error" in response.json()
    assert server.registry.active == 0
    await still_serving(client, server.url)


async def test_the_pages_own_origin_is_served(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=fast)
    await still_serving(client, server.url, origin=server.url, **{"sec-fetch-site": "same-origin"})
    page = await client.get(f"{server.url}/", headers={"host": f"localhost:{server.port}"})
    assert page.status_code == 200
    assert "Stop" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_with_a_token_every_api_call_needs_it(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    server = server_factory(model_factory=fast, token=TOKEN)
    await assert_refused(await client.get(f"{server.url}/api/chats"), 401, "token")
    wrong = {"authorization": "Bearer wrong-token-000"}
    await assert_refused(await client.get(f"{server.url}/api/chats", headers=wrong), 401, "token")
    refused = await client.post(f"{server.url}/api/chat", json=chat_body("t", "hi"))
    await assert_refused(refused, 401, "token")
    assert (await client.get(f"{server.url}/")).status_code == 200  # the page itself is public
    assert (await client.get(f"{server.url}/static/app.js")).status_code == 200
    await still_serving(client, server.url, authorization=f"Bearer {TOKEN}")
    other = await client.get(f"{server.url}/api/chats", headers={"x-llm-worker-token": TOKEN})
    assert other.status_code == 200
    assert TOKEN not in (await client.get(f"{server.url}/")).text


async def test_an_allowed_origin_gets_cors_and_others_are_still_refused(
    server_factory: Any, client: httpx2.AsyncClient
) -> None:
    front_end = "http://localhost:5173"
    server = server_factory(model_factory=fast, token=TOKEN, allowed_origins=[front_end])
    preflight = await client.options(
        f"{server.url}/api/chat",
        headers={
            "origin": front_end,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == front_end
    auth = {"authorization": f"Bearer {TOKEN}", "sec-fetch-site": "cross-site"}
    await still_serving(client, server.url, origin=front_end, **auth)
    listed = await client.get(f"{server.url}/api/chats", headers={"origin": front_end, **auth})
    assert listed.headers["access-control-allow-origin"] == front_end
    other = await client.get(
        f"{server.url}/api/chats", headers={"origin": "http://localhost:3000", **auth}
    )
    await assert_refused(other, 403, "other sites")
