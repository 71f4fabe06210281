"""llm-worker: an LLM agent worker you can stop at any moment without losing anything.

Stopping a run — by a user, a timeout, newer input, a parent token or a failure — is prompt,
graceful and lossless, and the same worker is immediately ready for the next run.
"""

TYPE_CHECKING = False  # not `typing`'s: importing typing would slow every start-up
if TYPE_CHECKING:
    from .cancel import CancelToken, Cause
    from .errors import (
        Aborted,
        Cancelled,
        HookFailed,
        LLMWorkerError,
        ModelError,
        OutputValidationError,
        RunError,
        ToolFailed,
        UnsupportedAttachment,
        WorkerBusy,
    )
    from .events import Event
    from .hooks import Abort, HookContext, Hooks, Pause, Skip
    from .items import (
        AssistantMessage,
        DocumentPart,
        ImagePart,
        Item,
        Note,
        ReasoningPart,
        TextPart,
        ToolCall,
        ToolResult,
        Usage,
        UserMessage,
        dump_history,
        load_history,
    )
    from .result import RunResult
    from .tools import Tool, ToolContext, tool
    from .worker import RunStream, Worker
del TYPE_CHECKING  # not a public name

__version__ = "0.1.0"


__all__ = [
    "Abort",
    "Aborted",
    "AssistantMessage",
    "CancelToken",
    "Cancelled",
    "Cause",
    "DocumentPart",
    "Event",
    "HookContext",
    "HookFailed",
    "Hooks",
    "ImagePart",
    "Item",
    "LLMWorkerError",
    "ModelError",
    "Note",
    "OutputValidationError",
    "Pause",
    "ReasoningPart",
    "RunError",
    "RunResult",
    "RunStream",
    "Skip",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolFailed",
    "ToolResult",
    "UnsupportedAttachment",
    "Usage",
    "UserMessage",
    "Worker",
    "WorkerBusy",
    "__version__",
    "dump_history",
    "load_history",
    "tool",
]

# Imported on first use: ``llm-worker --version`` and the other front ends start without
# pydantic and the worker (PEP 562).
_LAZY = {
    "CancelToken": ".cancel",
    "Cause": ".cancel",
    "Aborted": ".errors",
    "Cancelled": ".errors",
    "HookFailed": ".errors",
    "LLMWorkerError": ".errors",
    "ModelError": ".errors",
    "OutputValidationError": ".errors",
    "UnsupportedAttachment": ".errors",
    "RunError": ".errors",
    "ToolFailed": ".errors",
    "WorkerBusy": ".errors",
    "Event": ".events",
    "Abort": ".hooks",
    "HookContext": ".hooks",
    "Hooks": ".hooks",
    "Pause": ".hooks",
    "Skip": ".hooks",
    "AssistantMessage": ".items",
    "DocumentPart": ".items",
    "ImagePart": ".items",
    "Item": ".items",
    "Note": ".items",
    "ReasoningPart": ".items",
    "TextPart": ".items",
    "ToolCall": ".items",
    "ToolResult": ".items",
    "Usage": ".items",
    "UserMessage": ".items",
    "dump_history": ".items",
    "load_history": ".items",
    "RunResult": ".result",
    "Tool": ".tools",
    "ToolContext": ".tools",
    "tool": ".tools",
    "RunStream": ".worker",
    "Worker": ".worker",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
