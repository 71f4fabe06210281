"""What the providers share to send a user's attachments: data URLs, and the typed refusal.

Invariants: pure functions of a part; an attachment a provider cannot take is refused with
`UnsupportedAttachment` (a `ModelError`, never retried) naming the provider and what it lacks —
never silently dropped, never sent in a shape the API would reject with an opaque 400.
"""

from __future__ import annotations

from ..errors import UnsupportedAttachment
from ..items import DocumentPart, ImagePart

__all__ = ["UnsupportedAttachment", "data_url", "file_name", "refuse"]


def data_url(part: ImagePart | DocumentPart) -> str:
    """``part`` as a URL: its own, or a ``data:`` URL of its bytes."""
    if part.url is not None:
        return part.url
    return f"data:{part.media_type};base64,{_data(part)}"


def file_name(part: DocumentPart) -> str:
    return part.name or ("document.pdf" if part.media_type == "application/pdf" else "document")


def _data(part: ImagePart | DocumentPart) -> str:
    if part.data is None:
        raise UnsupportedAttachment(
            f"the attachment's bytes are not loaded (blob {part.blob}): read the history "
            "through its session store"
        )
    return part.data


def base64_data(part: ImagePart | DocumentPart) -> str:
    """The part's bytes, base64 (a part given by URL has none)."""
    return _data(part)


def refuse(provider: str, what: str) -> UnsupportedAttachment:
    return UnsupportedAttachment(f"{provider} cannot take {what}")
