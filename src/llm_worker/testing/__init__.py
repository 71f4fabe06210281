"""Testing aids for users' own tests.

* `ScriptedModel` / `Script` — a model that streams scripted responses, one per request.
* `FakeProviderServer` / `Reply` — a real HTTP server on 127.0.0.1 that speaks the OpenAI Chat,
  OpenAI Responses, Anthropic Messages, Gemini and Ollama wire protocols, replays recorded streams
  and can be scripted to misbehave (429/500/529, dropped connections, malformed chunks, stalls).
* `cancellation_sweep` — cancels a scenario at every await point and checks every invariant
  (`INVARIANTS` names them; a `SweepReport` counts each `Violation`).
"""

from ._fake_replies import (
    CassetteReply,
    ErrorReply,
    JsonReply,
    Reply,
    StreamOptions,
    StreamReply,
)
from ._fake_server import FakeProviderServer, RecordedRequest, ServerStats
from ._scripted import Script, ScriptedModel, ScriptExhausted
from ._sweep import cancellation_sweep
from ._sweep_checks import history_violations
from ._sweep_report import INVARIANTS, SweepMode, SweepReport, Violation

__all__ = [
    "INVARIANTS",
    "CassetteReply",
    "ErrorReply",
    "FakeProviderServer",
    "JsonReply",
    "RecordedRequest",
    "Reply",
    "Script",
    "ScriptExhausted",
    "ScriptedModel",
    "ServerStats",
    "StreamOptions",
    "StreamReply",
    "SweepMode",
    "SweepReport",
    "Violation",
    "cancellation_sweep",
    "history_violations",
]
