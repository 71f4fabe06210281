"""Gemini against a local fake server: a 429 waited out, parallel calls, a Stop mid-answer.

`GeminiModel` speaks the Gemini API (``streamGenerateContent?alt=sse``); `FakeProviderServer`
speaks it too, so this runs with no key and no network. With a key, ``Worker("gemini:...")``.
"""

import anyio

from llm_worker import Cancelled, Worker, tool
from llm_worker.models import GeminiModel
from llm_worker.testing import FakeProviderServer, Reply


@tool
async def secret(password: str) -> str:
    """The secret a password opens."""
    return f"the secret of {password}"


def two_calls() -> Reply:
    """Gemini asking for two calls at once; the first carries a thought signature."""
    parts = [
        {"functionCall": {"name": "secret", "args": {"password": p}}} for p in ("mellon", "sesame")
    ]
    parts[0]["thoughtSignature"] = "c2lnbmF0dXJl"
    content = {"role": "model", "parts": parts}
    return Reply.sse([{"candidates": [{"content": content, "finishReason": "STOP"}]}])


async def main() -> None:
    with FakeProviderServer() as server:
        path = server.gemini_path("gemini-2.5-flash")
        model = GeminiModel("gemini-2.5-flash", base_url=server.gemini_base_url, api_key="test")
        worker = Worker(model, tools=[secret])

        # 1. Rate limited: Gemini says how long to wait in the error body (RetryInfo).
        quota = {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}
        quota["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}
        ]
        server.enqueue(
            Reply.error(429, {"error": quota}),
            two_calls(),
            Reply.gemini_text(["Both ", "secrets ", "found."]),
            path=path,
        )
        async with worker.stream("Open both doors.") as run:
            async for event in run:
                if event.type == "retrying":
                    print(f"retrying after {event.delay:g}s: {event.error}")
                elif event.type == "tool_finished":
                    print(f"tool {event.result.name}: {event.result.content}")
        print(f"answer: {run.result.output}")
        sent = server.last_request.json["contents"][1]["parts"][0]
        print(f"signature sent back on the first call: {sent['thoughtSignature']}")

        # 2. A Stop mid-answer keeps what was said; the next request says so.
        server.enqueue(Reply.gemini_text(["Once ", "upon ", "a ", "time"], pace=0.1), path=path)
        async with worker.stream("Tell a story.") as run:
            async for event in run:
                if event.type == "text_delta" and "upon" in event.text:
                    worker.cancel("user pressed Stop")
        assert isinstance(run.error, Cancelled)
        print(f"stopped; kept: {run.error.partial.output!r}")
        server.enqueue(Reply.gemini_text("Sorry, go on."), path=path)
        await worker.run("Go on.")
        for part in server.last_request.json["contents"][-1]["parts"]:
            print(f"   sent user: {part['text']}")


if __name__ == "__main__":
    anyio.run(main)
