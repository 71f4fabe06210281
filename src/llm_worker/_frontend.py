"""What the command line and the web service share: the model a spec names, and a worker that
runs on a stored session.

Invariants:
* Nothing here awaits or prints: each front end turns `SettingError` into its own way of saying
  it (one ``llm-worker: error:`` line with status 2; a JSON 400).
* A setting error never quotes a key: a missing key is named by its environment variable.
* Building a worker for a session lives here, with the front ends, not in the store: the store
  only listens to a worker (`Session.attach`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._error_base import LLMWorkerError

if TYPE_CHECKING:
    from .models import Model, ModelSettings
    from .store import Session
    from .tools import Tool, ToolSource
    from .worker import Worker

__all__ = ["SettingError", "build_model", "session_worker"]

#: Seconds between the offline model's chunks in a front end: readable, and stoppable mid-answer.
OFFLINE_PACE = 0.03


class SettingError(LLMWorkerError, ValueError):
    """A front end was given a setting it cannot use: an unknown model spec, a provider whose
    extra is not installed, a missing key, a bad URL or pace."""


def build_model(spec: str, base_url: str | None) -> Model:
    """The model ``spec`` names (parsed by the registry alone); raises `SettingError`.

    The offline model streams at a readable pace (``LLM_WORKER_OFFLINE_PACE`` seconds per
    chunk, `OFFLINE_PACE` by default).
    """
    from .models import UnknownModelSpec, resolve_model
    from .models._registry import SPEC_HELP
    from .models.offline import OfflineModel

    try:
        model = resolve_model(spec, base_url=base_url)
    except UnknownModelSpec:
        raise SettingError(f"unknown model spec {spec!r}; expected one of: {SPEC_HELP}") from None
    except ImportError as exc:  # a provider's extra is not installed (MissingDependency)
        raise SettingError(f"cannot use model {spec!r}: {exc}") from None
    except ValueError as exc:
        variable = getattr(exc, "variable", None)  # MissingCredentials names its variable
        if variable == "OPENAI_API_KEY" and base_url:
            return _keyless(spec, base_url)
        if variable:
            raise SettingError(
                f"{spec} needs an API key: set {variable} (keys are read from the environment "
                "and never stored)"
            ) from None
        raise SettingError(f"cannot use model {spec!r}: {exc}") from None  # a bad URL
    if isinstance(model, OfflineModel):
        model.pace = offline_pace()
    return model


def _keyless(spec: str, base_url: str) -> Model:
    """An OpenAI-compatible model at ``base_url`` when no key is set: a local server (llama.cpp,
    vLLM, LM Studio, …) needs none, and one that does answers 401, which is said as such."""
    from .models._registry import load_provider

    provider, _, name = spec.partition(":")
    module, cls = {
        "openai": (".openai_chat", "OpenAIChatModel"),
        "openai-responses": (".openai_responses", "OpenAIResponsesModel"),
    }[provider]
    model: Model = getattr(load_provider(module), cls)(name, base_url=base_url, api_key="none")
    return model


def offline_pace() -> float:
    """``LLM_WORKER_OFFLINE_PACE`` as seconds, or `OFFLINE_PACE`; raises `SettingError`."""
    text = os.environ.get("LLM_WORKER_OFFLINE_PACE")
    if not text:
        return OFFLINE_PACE
    try:
        pace = float(text)
    except ValueError:
        pace = -1.0
    if not 0 <= pace < float("inf"):
        raise SettingError(f"LLM_WORKER_OFFLINE_PACE must be a number of seconds, got {text!r}")
    return pace


def session_worker(
    session: Session,
    model: Model,
    tools: Sequence[Tool[..., Any] | ToolSource],
    *,
    settings: ModelSettings | None = None,
) -> Worker:
    """A worker on the session's history and system prompt, attached to the session: from now
    on every item it commits is in the database before it goes on. ``settings``: the model's
    generation settings (temperature, max tokens), if any."""
    from .worker import Worker

    worker = Worker(
        model, tools=tools, system=session.system, history=session.history, settings=settings
    )
    session.attach(worker)
    return worker
