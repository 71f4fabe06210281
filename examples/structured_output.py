"""Structured output that survives a Stop, a fallback model, and an attachment — no key needed.

The real OpenAI and Anthropic providers talk to `FakeProviderServer`, a local HTTP server that
speaks their streaming protocols and replays what is scripted here.
"""

import json

import anyio
from pydantic import BaseModel

from llm_worker import Cancelled, Worker
from llm_worker.attachments import from_bytes
from llm_worker.events import OutputDelta, TextDelta
from llm_worker.models import AnthropicModel, FallbackModel, OpenAIChatModel, RetryPolicy
from llm_worker.testing import FakeProviderServer, Reply


class Step(BaseModel):
    title: str
    minutes: int


class Recipe(BaseModel):
    """A recipe, step by step."""

    name: str
    steps: list[Step]


RECIPE = {"name": "Tea", "steps": [{"title": "Boil water", "minutes": 3}]}
CUT = '{"name": "Pancakes", "steps": [{"title": "Mix", "minutes": 5}, {"title": "Fr'


def pieces(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def main() -> None:
    with FakeProviderServer() as server:
        chat = OpenAIChatModel(
            "gpt-4o-mini", base_url=server.openai_base_url, api_key="test", retry=RetryPolicy(1)
        )
        worker = Worker(chat, output_type=Recipe)

        # 1. A structured answer: the request asks for the schema (response_format json_schema),
        #    the answer comes back validated.
        server.enqueue(Reply.openai_text(pieces(json.dumps(RECIPE))))
        result = await worker.run("How do I make tea?")
        print(f"validated: {result.output_value!r}")
        print(f"asked for: {server.last_request.json['response_format']['json_schema']['name']}")

        # 2. A Stop mid-object: the object validated so far is kept; the deltas show it grow.
        parts = pieces(CUT)
        server.enqueue(Reply.openai_text(parts, stall_after=1 + len(parts)))
        arrived = 0
        async with worker.stream("And pancakes?") as run:
            async for event in run:
                if isinstance(event, OutputDelta):
                    print(f"  growing: {event.value!r}")
                elif isinstance(event, TextDelta):
                    arrived += 1
                    if arrived == len(parts):
                        run.cancel("the user pressed Stop")
        assert isinstance(run.error, Cancelled)
        print(f"stopped; kept: {run.error.partial.output_value!r}")

        # 3. An attachment: an image sent with the prompt, in the provider's own shape.
        server.enqueue(Reply.openai_text("A tiny picture."))
        picture = from_bytes(b"\x89PNG\r\n\x1a\n...", "image/png")
        await Worker(chat).run("What is this?", attachments=[picture])
        user = server.last_request.json["messages"][-1]
        print(f"attachment sent as: {[part['type'] for part in user['content']]}")

        # 4. A fallback: the primary answers 429 before any content, the secondary answers,
        #    and the message says which model did.
        url = server.anthropic_base_url
        claude = AnthropicModel("claude-sonnet-4-6", base_url=url, api_key="test")
        server.enqueue(Reply.error(429))
        server.enqueue(Reply.anthropic_text("Hello from the secondary."), path="/v1/messages")
        async with FallbackModel(chat, claude) as fallback:
            answered = await Worker(fallback).run("Hello?")
            print(f"fallback: {answered.output!r} by {answered.items[-1].model}")


if __name__ == "__main__":
    anyio.run(main)
