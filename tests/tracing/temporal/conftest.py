"""The Temporal dev server and asyncio-only backend of tests/durable, for the tracing test."""

from __future__ import annotations

from durable.conftest import (  # noqa: F401 -- fixtures and hooks, re-used as they are
    anyio_backend,
    pytest_sessionfinish,
    pytest_unconfigure,
    temporal_address,
)
