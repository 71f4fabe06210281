"""The web service from a program: stream a chat over HTTP, press Stop, continue.

Starts ``llm-worker serve``'s app in this process on a free loopback port (offline model, a
temporary database), then talks to it as any AI SDK ``useChat`` front-end would: ``POST
/api/chat`` and read the UI message stream, ``POST /api/chats/{id}/cancel`` to stop. Run it:
``python examples/web_stop.py``.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import anyio
import httpx2

from llm_worker.models import OfflineModel
from llm_worker.web import create_app, serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(chat: str, text: str) -> dict[str, object]:
    """The body useChat sends."""
    parts = [{"type": "text", "text": text}]
    return {"id": chat, "messages": [{"id": "m1", "role": "user", "parts": parts}]}


async def chat_and_stop(url: str) -> None:
    async with httpx2.AsyncClient(timeout=30) as client:
        kinds: list[str] = []
        text = ""
        async with client.stream("POST", f"{url}/api/chat", json=message("demo", "hi")) as reply:
            print(
                "header x-vercel-ai-ui-message-stream:",
                reply.headers["x-vercel-ai-ui-message-stream"],
            )
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if not kinds or kinds[-1] != chunk["type"]:
                    kinds.append(chunk["type"])
                if chunk["type"] == "text-delta":
                    text += chunk["delta"]
                    if len(text.split()) == 8:  # the user presses Stop
                        stop = await client.post(
                            f"{url}/api/chats/demo/cancel", json={"reason": "user pressed Stop"}
                        )
                        print("stop:", stop.json())
                if chunk["type"] == "data-interrupted":
                    print("interrupted:", chunk["data"])
        print("chunks:", " ".join(kinds))
        print("kept:", repr(text))
        again = await client.post(f"{url}/api/chats/demo/cancel")
        print("a second Stop, now idle:", again.json())
        body = {**message("demo", "hi"), "trigger": "regenerate-message", "resume": True}
        async with client.stream("POST", f"{url}/api/chat", json=body) as reply:
            ends = [line for line in [x async for x in reply.aiter_lines()] if '"finish"' in line]
        print("continued:", "finished" if ends else "not finished")
        chat = (await client.get(f"{url}/api/chats/demo")).json()
        print("history:", [m["role"] for m in chat["messages"]])


async def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        app = create_app(
            model_factory=lambda: OfflineModel(pace=0.02), db=str(Path(directory) / "chats.db")
        )
        stop_server = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve(app, port=port, stop=stop_server))
            url = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient() as probe:
                while True:  # wait until it listens
                    try:
                        await probe.get(f"{url}/api/health")
                        break
                    except httpx2.TransportError:
                        await anyio.sleep(0.05)
            await chat_and_stop(url)
            stop_server.set()


if __name__ == "__main__":
    anyio.run(main)
