"""Model spec strings (``"offline"``, ``"openai:gpt-4o-mini"``, …) to `Model` objects.

Provider modules are imported only when their spec is used, so ``import llm_worker`` stays fast
and the offline model needs no SDK set-up.
"""

from __future__ import annotations

from ._base import Model

SPEC_HELP = (
    '"offline", "offline:reasoning", "openai:<model>", "openai-responses:<model>", '
    '"anthropic:<model>", "ollama:<model>"'
)


class UnknownModelSpec(ValueError):
    """The model spec string names no known provider."""


def resolve_model(spec: Model | str, *, base_url: str | None = None) -> Model:
    """Return ``spec`` itself if it is a model, or build the model a spec string names."""
    if not isinstance(spec, str):
        return spec
    provider, _, name = spec.partition(":")
    if provider == "offline":
        if name not in ("", "reasoning"):
            raise UnknownModelSpec(f"unknown model spec {spec!r}; expected one of {SPEC_HELP}")
        from .offline import OfflineModel

        model: Model = OfflineModel(reasoning=name == "reasoning")
        return model
    if not name:
        raise UnknownModelSpec(f"unknown model spec {spec!r}; expected one of {SPEC_HELP}")
    if provider == "openai":
        from .openai_chat import OpenAIChatModel

        return OpenAIChatModel(name, base_url=base_url)
    if provider == "ollama":
        from .openai_chat import OpenAIChatModel

        return OpenAIChatModel(
            name,
            base_url=base_url or "http://localhost:11434/v1",
            api_key="ollama",
            provider="ollama",
        )
    if provider == "openai-responses":
        from .openai_responses import OpenAIResponsesModel

        return OpenAIResponsesModel(name, base_url=base_url)
    if provider == "anthropic":
        from .anthropic import AnthropicModel

        return AnthropicModel(name, base_url=base_url)
    raise UnknownModelSpec(f"unknown model spec {spec!r}; expected one of {SPEC_HELP}")
