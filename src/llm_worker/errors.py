"""Errors a run can end with. Every `RunError` carries what was kept and why it ended.

::

    LLMWorkerError           the root of every exception the library defines
    RunError                 .partial (RunResult), .cause (Cause)
    ├── Cancelled            stopped by worker.cancel, a token, a deadline, newer input, Ctrl-C
    ├── Aborted              a hook returned Abort(reason)
    ├── ModelError           the provider failed (HTTP status, dropped stream, bad chunk, timeout)
    │   └── UnsupportedAttachment  the model cannot take an attachment the history holds
    ├── ToolFailed           a tool raised and the worker is set to fail the run on tool errors
    ├── HookFailed           a hook raised
    └── OutputValidationError  the answer never matched ``output_type``, retries spent
    WorkerBusy               a second concurrent run() without supersede=True (nothing started)
    CleanupOverran           in ``cleanup_errors``: an on_abort hook hit its bound
"""

from __future__ import annotations

from ._error_base import LLMWorkerError as LLMWorkerError
from .cancel import Cause
from .result import RunResult


class RunError(LLMWorkerError):
    """A run that did not finish. ``partial`` holds everything it kept; ``cause`` says why."""

    def __init__(self, message: str, *, cause: Cause, partial: RunResult | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.partial = partial if partial is not None else RunResult(status="interrupted")
        self.cleanup_errors: list[BaseException] = []


class Cancelled(RunError):
    """The run was cancelled: ``reason`` is the text given to ``cancel()``, ``kind`` who did it."""

    @property
    def reason(self) -> str | None:
        return self.cause.reason

    @property
    def kind(self) -> str:
        return self.cause.kind


class Aborted(RunError):
    """A hook aborted the run with a reason."""

    @property
    def reason(self) -> str | None:
        return self.cause.reason


class ModelError(RunError):
    """The model or its provider failed. ``status_code`` is set for HTTP errors."""

    def __init__(
        self,
        message: str,
        *,
        cause: Cause | None = None,
        partial: RunResult | None = None,
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, cause=cause or Cause.empty(), partial=partial)
        if cause is None:
            self.cause = Cause.failure(self)
        self.status_code = status_code
        self.retryable = retryable


class UnsupportedAttachment(ModelError):
    """The model cannot take an attachment the history holds (the offline model takes none; a
    provider may take images but not documents, or not by URL). Never retried."""


class ToolFailed(RunError):
    """A tool raised and the worker was configured with ``tool_errors="raise"``."""


class HookFailed(RunError):
    """A hook raised an exception (the original is ``__cause__`` and in ``cause``)."""


class OutputValidationError(RunError):
    """The model's answer did not match the run's ``output_type``, even after the retries it was
    given (each one told it why). ``partial.output_value`` holds what validated of the last one."""

    def __init__(self, message: str, *, partial: RunResult | None = None) -> None:
        super().__init__(message, cause=Cause.empty(), partial=partial)
        self.cause = Cause.failure(self, origin="output")


class WorkerBusy(LLMWorkerError, RuntimeError):
    """The worker is already running; pass ``supersede=True`` to replace the active run."""


class CleanupOverran(LLMWorkerError, TimeoutError):
    """A clean-up step (an ``on_abort`` hook) hit its bound; reported in ``cleanup_errors``."""
