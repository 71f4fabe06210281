"""The public surface is deliberate: the documented names import; ``__all__`` lists exactly them."""

from __future__ import annotations

import importlib

import pytest

import llm_worker

DESIGN_NAMES = {
    "llm_worker": [
        "Worker",
        "RunResult",
        "Item",
        "Event",
        "tool",
        "ToolContext",
        "CancelToken",
        "Cause",
        "RunError",
        "Cancelled",
        "Aborted",
        "ModelError",
        "ToolFailed",
        "HookFailed",
        "WorkerBusy",
    ],
    "llm_worker.models": [
        "OfflineModel",
        "OpenAIChatModel",
        "OpenAIResponsesModel",
        "AnthropicModel",
    ],
    "llm_worker.testing": ["ScriptedModel", "FakeProviderServer", "cancellation_sweep"],
}


@pytest.mark.parametrize("module_name", sorted(DESIGN_NAMES))
def test_the_design_names_import(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in DESIGN_NAMES[module_name]:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize(
    "module_name", ["llm_worker", "llm_worker.cancel", "llm_worker.models", "llm_worker.testing"]
)
def test_all_has_no_duplicates_and_every_name_in_it_exists(module_name: str) -> None:
    """(Its order is ruff's RUF022 isort-style order, checked by ``make lint``.)"""
    module = importlib.import_module(module_name)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


def test_every_public_name_of_the_package_is_in_all() -> None:
    public = {
        name
        for name, value in vars(llm_worker).items()
        if not name.startswith("_") and not isinstance(value, type(llm_worker))
    }
    assert public <= set(llm_worker.__all__)


def test_importing_the_package_does_not_load_the_provider_sdks() -> None:
    import subprocess
    import sys

    code = "import sys, llm_worker; print('openai' in sys.modules, 'anthropic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_a_missing_provider_sdk_names_the_extra_that_brings_it() -> None:
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['openai'] = None\n"
        "from llm_worker.models import MissingDependency, resolve_model\n"
        "try:\n"
        "    resolve_model('openai:gpt-4o-mini')\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "pip install 'llm-worker[openai]'" in done.stdout, done.stderr


def test_every_exception_the_library_defines_is_an_llm_worker_error() -> None:
    import inspect
    import pkgutil

    from llm_worker import LLMWorkerError

    internal = {"BadRequest", "PeerClosed", "ServerReportedError", "RedactedError", "CLIError"}
    strays = []
    for info in pkgutil.walk_packages(llm_worker.__path__, "llm_worker."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
                and name not in internal
                and not issubclass(value, LLMWorkerError)
            ):
                strays.append(f"{module.__name__}.{name}")
    assert strays == []
