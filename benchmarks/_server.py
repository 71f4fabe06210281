"""The project's `FakeProviderServer` in a child process, driven over a JSON-lines pipe.

The benchmarks time sub-millisecond events on a 2-core machine. A server thread inside the
measured process would compete for the GIL with the code under test (and its per-chunk cost
would be added to every library's time, pulling ratios towards 1), so the server runs in its own
process: ``python -m benchmarks._server`` prints its base URL, then answers one JSON command per
line on stdin with one JSON line on stdout (see `_handle`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from types import TracebackType
from typing import Any, Self

from llm_worker.testing import FakeProviderServer, Reply

#: The tool the tool scenarios' model asks for (no arguments).
TOOL_NAME = "wait_for_stop"


def text_reply(chunks: int, pace: float, piece: str = "word ") -> Reply:
    """A Chat Completions stream of ``chunks`` text deltas, ``pace`` seconds apart."""
    return Reply.openai_text(piece, chunks=chunks, pace=pace)


def tool_reply(name: str = TOOL_NAME) -> Reply:
    """A Chat Completions stream asking for one call of tool ``name`` with ``{}`` arguments."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000}
    base["model"] = "gpt-4o-mini"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    call = {"index": 0, "id": "call_bench", "type": "function"}
    return Reply.sse(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
            "[DONE]",
        ]
    )


#: The model the Gemini scenarios name (their requests go to its path).
GEMINI_MODEL = "gemini-2.5-flash"


def _reply(spec: dict[str, Any]) -> Reply:
    if spec["kind"] == "gemini_text":
        return Reply.gemini_text(spec.get("piece", "word "), chunks=spec["chunks"])
    if spec["kind"] == "text":
        return text_reply(spec["chunks"], spec.get("pace", 0.0), spec.get("piece", "word "))
    if spec["kind"] == "tool":
        return tool_reply(spec.get("name", TOOL_NAME))
    if spec["kind"] == "json_text":  # the text pieces as one JSON string: {"value": "..."}
        pieces = ['{"value": "', *[spec.get("piece", "word ")] * spec["chunks"], '"}']
        return Reply.openai_text(pieces)
    raise ValueError(f"unknown reply kind {spec['kind']!r}")


def _handle(server: FakeProviderServer, command: dict[str, Any]) -> dict[str, Any]:
    """``default`` (set the reply every request gets, or those to ``path``), ``stats``,
    ``wait`` (until a counter reaches ``at_least``, at most ``timeout`` seconds; ``ok`` says
    whether it did)."""
    op = command["op"]
    if op == "default":
        server.set_default(_reply(command["reply"]), path=command.get("path"))
        return {"ok": True}
    if op == "stats":
        return {"ok": True, "stats": dataclasses.asdict(server.stats)}
    if op == "wait":
        name, at_least = command["field"], command["at_least"]
        try:
            stats = server.wait_for(
                lambda s: getattr(s, name) >= at_least, timeout=command["timeout"]
            )
        except TimeoutError:
            return {"ok": False, "stats": dataclasses.asdict(server.stats)}
        return {"ok": True, "stats": dataclasses.asdict(stats)}
    raise ValueError(f"unknown command {op!r}")


def serve() -> None:
    """The child process: serve until stdin closes."""
    with FakeProviderServer() as server:
        print(json.dumps({"base_url": server.openai_base_url}), flush=True)
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(_handle(server, json.loads(line))), flush=True)
        if server.errors:
            print(f"FakeProviderServer errors: {server.errors!r}", file=sys.stderr)


class ServerProcess:
    """A `FakeProviderServer` in a child process; ``openai_base_url`` is its ``/v1`` URL.

    Every method blocks briefly (a pipe round trip): call them outside timed regions.
    """

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.openai_base_url: str = self._read()["base_url"]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server process ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _call(self, **command: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        return self._read()

    def serve_text(self, chunks: int, pace: float = 0.0, piece: str = "word ") -> None:
        """Answer every request with a stream of ``chunks`` deltas ``piece``, ``pace`` s apart."""
        reply = {"kind": "text", "chunks": chunks, "pace": pace, "piece": piece}
        self._call(op="default", reply=reply)

    def serve_gemini_text(self, chunks: int, piece: str = "word ") -> None:
        """Answer every Gemini request (model `GEMINI_MODEL`) with ``chunks`` chunks ``piece``."""
        reply = {"kind": "gemini_text", "chunks": chunks, "piece": piece}
        self._call(op="default", reply=reply, path=FakeProviderServer.gemini_path(GEMINI_MODEL))

    @property
    def base_url(self) -> str:
        """The server's root URL (what Gemini and Anthropic clients want)."""
        return self.openai_base_url.removesuffix("/v1")

    def serve_json_text(self, chunks: int, piece: str = "word ") -> None:
        """Answer every request with ``{"value": "<piece × chunks>"}``, streamed as ``chunks``
        text deltas (plus the opening and the closing one): a structured answer."""
        self._call(op="default", reply={"kind": "json_text", "chunks": chunks, "piece": piece})

    def serve_tool_call(self, name: str = TOOL_NAME) -> None:
        """Answer every request with a call of tool ``name``."""
        self._call(op="default", reply={"kind": "tool", "name": name})

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self._call(op="stats")["stats"]
        return stats

    def wait_for(self, field: str, at_least: int, timeout: float) -> tuple[bool, dict[str, int]]:
        """Wait until counter ``field`` is ``>= at_least``; (reached, stats)."""
        answer = self._call(op="wait", field=field, at_least=at_least, timeout=timeout)
        return bool(answer["ok"]), answer["stats"]


if __name__ == "__main__":
    serve()
