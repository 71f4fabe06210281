"""What the API accepts (the body ``useChat`` sends; a Stop's reason) and its JSON errors.

Invariants:
* A body is read with a byte limit before it is parsed: a huge body is refused (413) without
  being held in memory; malformed JSON or a body of the wrong shape is a 400 naming the field.
* Fields the AI SDK may add (``messageId``, ``metadata``, a user's own ``body`` extras) are
  accepted and ignored; only the last user message's text is new input, because the server's
  session (not the client's copy of the messages) is the history.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from .._error_base import LLMWorkerError

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "ApiError",
    "CancelRequest",
    "ChatRequest",
    "error_response",
    "read_model",
]


class ApiError(LLMWorkerError):
    """A request the API refuses: an HTTP status and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, *, close: bool = False) -> JSONResponse:
    """``{"error": message}``; ``close`` when the request's body was left unread (a refusal,
    a body too big), so that the client does not send its next request on this connection."""
    headers = {"connection": "close"} if close or status == 413 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class UIMessagePart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class UIMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = ""
    role: Literal["user", "assistant", "system"]
    parts: list[UIMessagePart] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """``useChat``'s body: the chat id, its messages, and what triggered the request.

    ``resume`` (an extra of this server) continues an interrupted answer with no new input, as
    ``trigger: "regenerate-message"`` does.
    """

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)
    messages: list[UIMessageIn] = Field(default_factory=list)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    resume: bool = False

    @property
    def continues(self) -> bool:
        return self.resume or self.trigger == "regenerate-message"

    def user_text(self) -> str:
        """The text of the last user message; raises `ApiError` when there is none."""
        for message in reversed(self.messages):
            if message.role == "user":
                text = "".join(p.text or "" for p in message.parts if p.type == "text")
                if text.strip():
                    return text
                break
        raise ApiError(400, "the last user message has no text")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


async def read_model(request: Request, model: type[M], *, limit: int, empty_ok: bool = False) -> M:
    """The request's JSON body as ``model``. Raises `ApiError` (413 too big, 400 malformed).

    Cancellation: safe; a body half-read is simply dropped.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes")
    body = bytearray()
    async with contextlib.aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes")
    if not body.strip() and empty_ok:
        return model()
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        raise ApiError(400, _describe(exc.errors(include_url=False))) from None


def _describe(errors: list[Any]) -> str:
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    return f"invalid request body at {where}: {first.get('msg', 'invalid')}"
