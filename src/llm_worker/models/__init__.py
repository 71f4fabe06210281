"""Models: the built-in offline model and the HTTP providers, all behind one `Model` protocol.

Provider classes are imported lazily (``from llm_worker.models import OpenAIChatModel`` works,
but ``import llm_worker`` does not load any SDK).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Model, ModelRequest, ModelSettings
from ._registry import MissingDependency, UnknownModelSpec, load_provider, resolve_model

if TYPE_CHECKING:
    from ._errors import MissingCredentials
    from ._sse import EventTooLarge
    from ._transport import RetryPolicy, Timeouts
    from .anthropic import AnthropicModel
    from .fallback import FallbackModel
    from .gemini import GeminiModel, PromptBlocked
    from .offline import OfflineModel
    from .openai_chat import OpenAIChatModel
    from .openai_responses import OpenAIResponsesModel

__all__ = [
    "AnthropicModel",
    "EventTooLarge",
    "FallbackModel",
    "GeminiModel",
    "MissingCredentials",
    "MissingDependency",
    "Model",
    "ModelRequest",
    "ModelSettings",
    "OfflineModel",
    "OpenAIChatModel",
    "OpenAIResponsesModel",
    "PromptBlocked",
    "RetryPolicy",
    "Timeouts",
    "UnknownModelSpec",
    "resolve_model",
]

_LAZY = {
    "OfflineModel": ".offline",
    "OpenAIChatModel": ".openai_chat",
    "OpenAIResponsesModel": ".openai_responses",
    "AnthropicModel": ".anthropic",
    "GeminiModel": ".gemini",
    "PromptBlocked": ".gemini",
    "FallbackModel": ".fallback",
    # The HTTP providers' settings and errors (loading them loads the HTTP client).
    "EventTooLarge": "._sse",
    "MissingCredentials": "._errors",
    "RetryPolicy": "._transport",
    "Timeouts": "._transport",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(load_provider(module), name)
