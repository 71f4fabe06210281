"""Attachments a user sends with a prompt: images and documents, by path, URL or bytes.

``worker.run("What is in this picture?", attachments=[attach("cat.png")])``. The parts are
`ImagePart` and `DocumentPart` (`llm_worker.items`), kept in the user message; each provider
converts them (OpenAI Chat ``image_url``/``file``, Responses ``input_image``/``input_file``,
Anthropic ``image``/``document`` blocks) or refuses with `UnsupportedAttachment`.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path

from .errors import UnsupportedAttachment
from .items import DocumentPart, ImagePart

__all__ = ["DocumentPart", "ImagePart", "UnsupportedAttachment", "attach", "from_bytes"]


def from_bytes(
    data: bytes, media_type: str, *, name: str | None = None
) -> ImagePart | DocumentPart:
    """An image (``image/*``) or a document (anything else) holding ``data``."""
    encoded = base64.b64encode(data).decode("ascii")
    if media_type.startswith("image/"):
        return ImagePart(data=encoded, media_type=media_type)
    return DocumentPart(data=encoded, media_type=media_type, name=name)


def attach(source: str | Path) -> ImagePart | DocumentPart:
    """An attachment from an ``http(s)://`` URL (sent as a URL) or a file path (its bytes, read
    now: call it before the run, not on a busy event loop). The media type comes from the name;
    an unknown one is refused (ValueError) rather than guessed."""
    text = str(source)
    if isinstance(source, str) and text.startswith(("http://", "https://")):
        media_type, _ = mimetypes.guess_type(text.split("?", 1)[0])
        if media_type is not None and media_type.startswith("image/"):
            return ImagePart(url=text, media_type=media_type)
        return DocumentPart(url=text, media_type=media_type)
    path = Path(source)
    media_type, _ = mimetypes.guess_type(path.name)
    if media_type is None:
        raise ValueError(f"cannot tell the media type of {path.name!r} from its name")
    return from_bytes(path.read_bytes(), media_type, name=path.name)
