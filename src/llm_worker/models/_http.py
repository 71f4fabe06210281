"""Kept only for ``cli/_config.py``'s lazy import of `MissingCredentials` (the CLI is not this
step's to edit); the HTTP layer lives in `_sse`, `_errors`, `_redact`, `_transport`, `_client`
and `_translate`. Point the CLI at ``llm_worker.models.MissingCredentials`` and delete this."""

from ._errors import MissingCredentials

__all__ = ["MissingCredentials"]
