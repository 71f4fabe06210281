"""llm-worker: an LLM agent worker you can stop at any moment without losing anything.

Stopping a run — by a user, a timeout, newer input, a parent token or a failure — is prompt,
graceful and lossless, and the same worker is immediately ready for the next run.
"""

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
