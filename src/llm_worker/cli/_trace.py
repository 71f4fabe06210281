"""``--trace`` for run, chat and serve, and ``llm-worker trace FILE``.

Invariants:
* Without ``--trace`` (and without ``OTEL_TRACES_EXPORTER``) nothing here imports
  OpenTelemetry; with it, the SDK is imported only then, and a missing SDK is one usage error
  naming the extra to install.
* The exporter is flushed and shut down when the command ends however it ends (`trace_export`
  is a context manager around the command), so a run stopped by Ctrl-C still has its spans.
* ``trace FILE`` reads JSON only (`_trace_view`) and prints one tree per trace.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CLIError

__all__ = ["add_trace_command", "add_trace_options", "trace_export"]

_OTLP = "otlp"
TRACE_HANDLER = "_trace:cmd_trace"  # imported only when the command runs (`_app._handler`)
TRACE_HELP = (
    "trace each run: FILE appends spans as JSON lines (print them with 'llm-worker trace FILE'); "
    "'otlp' sends them to OTEL_EXPORTER_OTLP_ENDPOINT (default: $OTEL_TRACES_EXPORTER if 'otlp')"
)


def add_trace_options(parser: argparse.ArgumentParser) -> None:
    """``--trace FILE|otlp`` and ``--trace-content`` on the agent commands."""
    parser.add_argument("--trace", metavar="FILE|otlp", help=TRACE_HELP)
    parser.add_argument(
        "--trace-content",
        action="store_true",
        help="put messages (prompts, answers, tool results) into the trace (default: off)",
    )


def add_trace_command(commands: Any) -> None:
    """``llm-worker trace FILE``."""
    command = commands.add_parser(
        "trace",
        help="print a --trace file as trees of spans",
        description="Print the spans a --trace FILE holds: one tree per trace, with why each "
        "run stopped, where, and what it kept.",
    )
    command.add_argument("file", help="a file written by --trace FILE")
    command.set_defaults(handler=TRACE_HANDLER)


def _target(args: argparse.Namespace) -> str | None:
    target: str | None = getattr(args, "trace", None)
    if target is None and getattr(args, "handler", None) != TRACE_HANDLER:
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter == _OTLP and hasattr(args, "trace"):
            target = _OTLP
    return target


@contextlib.contextmanager
def trace_export(args: argparse.Namespace) -> Iterator[None]:
    """Export the command's runs' spans as ``--trace`` asks; flush them when it ends."""
    target = _target(args)
    if target is None:
        yield
        return
    try:
        from ..tracing._export import start_export
    except ImportError as exc:
        raise CLIError(
            f"--trace needs the OpenTelemetry SDK ({exc.name} is missing): "
            "pip install 'llm-worker[otel-export]'",
            EXIT_USAGE,
        ) from None
    try:
        handle = start_export(target, include_content=bool(getattr(args, "trace_content", False)))
    except OSError as exc:
        raise CLIError(f"cannot write the trace to {target}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        handle.close()


def cmd_trace(args: argparse.Namespace) -> int:
    from ._trace_view import read_spans, render_traces

    try:
        with open(args.file, encoding="utf-8", errors="replace") as file:
            spans, skipped = read_spans(file)
    except OSError as exc:
        raise CLIError(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_FAILED) from None
    if not spans:
        raise CLIError(f"{args.file} holds no spans", EXIT_FAILED)
    for line in render_traces(spans):
        sys.stdout.write(line + "\n")
    if skipped:
        sys.stderr.write(f"({skipped} lines that are not spans were skipped)\n")
    return EXIT_OK
