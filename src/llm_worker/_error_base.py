"""The root of every exception the library defines, so ``except LLMWorkerError`` catches them all.

Each subclass also keeps the built-in base that says what kind of problem it is (`ValueError` for
bad input, `TimeoutError` for an overrun, ...). Kept in a module of its own, importing nothing,
so that every package — `cancel/` included, which knows nothing of LLMs — can use it.
"""

from __future__ import annotations


class LLMWorkerError(Exception):
    """Base of every exception llm-worker raises on purpose."""
