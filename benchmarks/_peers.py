"""The peers under comparison, built against the benchmark server's OpenAI-compatible endpoint.

Both peers talk to the server through the same official ``openai`` SDK (``AsyncOpenAI``) this
project uses, on Chat Completions, so the HTTP stack is the same for everyone. Imports are lazy:
the sections that measure only this project run without the bench extra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import openai

MODEL = "gpt-4o-mini"


def openai_client(base_url: str, *, connections: int | None = None) -> openai.AsyncOpenAI:
    """An SDK client with the SDK's defaults, except that it never retries.

    ``connections``: for hundreds of concurrent streams, a pool that holds that many and a
    connect timeout of a minute (a burst of connects on a loaded machine can take seconds).
    """
    if connections is None:
        return openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    import httpx2

    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key="x",
        max_retries=0,
        timeout=httpx2.Timeout(600.0, connect=60.0),
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )


def pydantic_ai_agent(client: openai.AsyncOpenAI, tools: Sequence[Callable[..., Any]] = ()) -> Any:
    """A pydantic-ai ``Agent`` on its ``OpenAIChatModel`` (Chat Completions) over ``client``."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    return Agent(model, tools=list(tools))


def openai_agents_agent(client: openai.AsyncOpenAI, tools: Sequence[Any] = ()) -> Any:
    """An openai-agents ``Agent`` on ``OpenAIChatCompletionsModel`` over ``client``; tracing off
    (it would otherwise try to export spans to OpenAI)."""
    import agents

    agents.set_tracing_disabled(True)
    model = agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
    return agents.Agent(name="bench", model=model, tools=list(tools))


def is_agents_text_delta(event: Any) -> bool:
    """An openai-agents stream event that carries a text delta."""
    return bool(
        event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    )
