"""Model spec strings (``"offline"``, ``"openai:gpt-4o-mini"``, …) to `Model` objects.

Provider modules are imported only when their spec is used, so ``import llm_worker`` stays fast
and the offline model needs no SDK set-up.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from .._error_base import LLMWorkerError
from ._base import Model

SPEC_HELP = (
    '"offline" (built in, no key), "offline:reasoning", "openai:<model>", '
    '"openai-responses:<model>", "anthropic:<model>", "gemini:<model>", "ollama:<model>"'
)


class UnknownModelSpec(LLMWorkerError, ValueError):
    """The model spec string names no known provider."""


class MissingDependency(LLMWorkerError, ImportError):
    """A provider's SDK is not installed; the message names the extra that brings it."""


# The package a provider needs → the extra that installs it.
_EXTRAS = {"openai": "openai", "anthropic": "anthropic", "httpx2": "openai"}
#: Provider modules whose every missing package is brought by one extra.
_MODULE_EXTRAS = {".gemini": "gemini"}


def load_provider(module: str) -> ModuleType:
    """Import ``module`` (relative to ``llm_worker.models``); a missing SDK names its extra."""
    try:
        return import_module(module, __package__)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        extra = _EXTRAS.get(package) if package else None
        if extra is not None:
            extra = _MODULE_EXTRAS.get(module, extra)
        if extra is None:
            raise
        raise MissingDependency(
            f"this provider needs the {package!r} package: pip install 'llm-worker[{extra}]' "
            "(or 'llm-worker[all]')"
        ) from exc


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
    http = _http_model(provider, name, base_url)
    if http is None:
        raise UnknownModelSpec(f"unknown model spec {spec!r}; expected one of {SPEC_HELP}")
    return http


def _http_model(provider: str, name: str, base_url: str | None) -> Model | None:
    """The HTTP model ``provider`` names (its SDK loaded only now), or None if none does."""
    model: Model
    if provider in ("openai", "ollama"):
        chat = load_provider(".openai_chat").OpenAIChatModel
        if provider == "ollama":
            local = base_url or "http://localhost:11434/v1"
            model = chat(name, base_url=local, api_key="ollama", provider="ollama")
        else:
            model = chat(name, base_url=base_url)
    elif provider == "openai-responses":
        model = load_provider(".openai_responses").OpenAIResponsesModel(name, base_url=base_url)
    elif provider == "anthropic":
        model = load_provider(".anthropic").AnthropicModel(name, base_url=base_url)
    elif provider == "gemini":
        model = load_provider(".gemini").GeminiModel(name, base_url=base_url)
    else:
        return None
    return model
