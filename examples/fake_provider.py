"""The real OpenAI Chat provider against a local fake server: a 429 retried, a stall stopped.

`FakeProviderServer` is a real HTTP server on 127.0.0.1 that speaks the OpenAI, Anthropic and
Ollama streaming protocols and replays what you script, faults included. No key, no network.
"""

import anyio

from llm_worker import Cancelled, Worker
from llm_worker.models import OpenAIChatModel
from llm_worker.testing import FakeProviderServer, Reply


async def main() -> None:
    with FakeProviderServer() as server:
        model = OpenAIChatModel("gpt-4o-mini", base_url=server.openai_base_url, api_key="test")
        worker = Worker(model, system="You are terse.")

        # 1. The server first answers "429 Too Many Requests, retry after 0.2 s", then streams.
        #    The worker waits as told (a cancellable wait) and retries; no SDK retries involved.
        server.enqueue(
            Reply.error(429, retry_after=0.2),
            Reply.openai_text(["Hello", " from", " the", " fake", " server."]),
        )
        async with worker.stream("Say hello.") as run:
            async for event in run:
                if event.type == "retrying":
                    print(f"retrying: attempt {event.attempt} failed ({event.error})")
                    print(f"          waiting {event.delay:g}s")
        print(f"answer: {run.result.output}")
        sent = server.last_request.json
        print(f"requests received: {len(server.requests)}; the last one sent {sent['messages']}")

        # 2. A stream that stalls after two text chunks; the run's deadline stops it. The text
        #    already streamed is kept, and the HTTP connection is closed, not leaked.
        server.enqueue(Reply.openai_text(["The answer ", "is ", "coming..."], stall_after=3))
        try:
            await worker.run("And now?", timeout=0.5)
        except Cancelled as stopped:  # partial.output: the text of the interrupted message
            print(f"stopped ({stopped.kind}); kept: {stopped.partial.output!r}")
        stats = server.wait_for(lambda s: s.active_connections == 0)
        print(
            f"client left mid-stream: {stats.disconnects_mid_stream}; "
            f"open connections: {stats.active_connections}"
        )

        # 3. The next request tells the model its previous turn was interrupted.
        server.enqueue(Reply.openai_text("Sorry, go on."))
        await worker.run("Go on.")
        for message in server.last_request.json["messages"]:
            print(f"   sent {message['role']}: {message['content']}")


if __name__ == "__main__":
    anyio.run(main)
