"""Models: the built-in offline model and the HTTP providers, all behind one `Model` protocol.

Provider classes are imported lazily (``from llm_worker.models import OpenAIChatModel`` works,
but ``import llm_worker`` does not load any SDK).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Model, ModelRequest, ModelSettings
from ._registry import UnknownModelSpec, resolve_model

if TYPE_CHECKING:
    from .offline import OfflineModel

__all__ = [
    "Model",
    "ModelRequest",
    "ModelSettings",
    "OfflineModel",
    "UnknownModelSpec",
    "resolve_model",
]

_LAZY = {
    "OfflineModel": ".offline",
    "OpenAIChatModel": ".openai_chat",
    "OpenAIResponsesModel": ".openai_responses",
    "AnthropicModel": ".anthropic",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
