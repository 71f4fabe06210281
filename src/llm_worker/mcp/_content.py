"""An MCP ``tools/call`` result as a `ToolOutput`: text for the model, everything else kept.

Invariants:
* Text blocks, joined, are the result the model reads; a result with only structured content
  gives its JSON. Images, audio, embedded resources and resource links become `Attachment`s on
  the `ToolResult`, unchanged (base64 stays base64), and the model reads a one-line mention of
  each, so nothing the server returned is silently dropped.
* ``isError`` results are error results the model sees, never exceptions.
"""

from __future__ import annotations

import json

import mcp_types as types

from ..items import Attachment
from ..tools import ToolOutput

__all__ = ["tool_output"]


def tool_output(result: types.CallToolResult) -> ToolOutput:
    """What the worker keeps of one ``tools/call`` result."""
    texts: list[str] = []
    attachments: list[Attachment] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            texts.append(block.text)
            continue
        attachment = _attachment(block)
        if attachment is not None:
            attachments.append(attachment)
            texts.append(_mention(attachment))
    has_text = any(isinstance(block, types.TextContent) for block in result.content)
    if not has_text and result.structured_content is not None:
        texts.insert(0, json.dumps(result.structured_content, ensure_ascii=False))
    return ToolOutput(
        text="\n".join(texts),
        status="error" if result.is_error else "ok",
        attachments=tuple(attachments),
    )


def _attachment(block: object) -> Attachment | None:
    if isinstance(block, types.ImageContent):
        return Attachment(type="image", mime_type=block.mime_type, data=block.data)
    if isinstance(block, types.AudioContent):
        return Attachment(type="audio", mime_type=block.mime_type, data=block.data)
    if isinstance(block, types.ResourceLink):
        return Attachment(
            type="resource_link", uri=str(block.uri), name=block.name, mime_type=block.mime_type
        )
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        uri = str(resource.uri)
        if isinstance(resource, types.TextResourceContents):
            return Attachment(
                type="resource", uri=uri, mime_type=resource.mime_type, text=resource.text
            )
        return Attachment(
            type="resource", uri=uri, mime_type=resource.mime_type, data=resource.blob
        )
    return None


def _mention(attachment: Attachment) -> str:
    what = attachment.type.replace("_", " ")
    where = f" {attachment.uri}" if attachment.uri else ""
    mime = f" ({attachment.mime_type})" if attachment.mime_type else ""
    if attachment.text is not None:
        return f"[{what}{where}{mime}]\n{attachment.text}"
    return f"[{what}{where}{mime} attached]"
