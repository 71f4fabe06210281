"""Attachment bytes in a session store: once each, by content hash, out of the history table.

Invariants:
* A user message's attachment given as data is stored as a row of ``blobs`` keyed by the
  SHA-256 of its bytes, and its item row holds only that hash (``blob``): the history table stays
  small however many images a session holds, and the same image sent twice is stored once.
* Both directions run inside the caller's transaction (the blob and the item that names it
  commit together); an item read back has its bytes again (``data``) and no ``blob``, equal to
  the item that was written. A hash with no row is a `StoreError`, never a silent loss.
* Items without attachments are passed through untouched (one type check each).
* Deleting a session deletes the blobs only it named (`delete_unnamed`), in the same
  transaction: an attachment outlives its session only if another session's item names it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sqlite3

from ..items import DocumentPart, ImagePart, Item, UserMessage, UserPart, replace
from ._errors import StoreError


def stow(conn: sqlite3.Connection, item: Item) -> Item:
    """``item`` as its row holds it: attachment bytes moved to ``blobs``, named by hash."""
    if not isinstance(item, UserMessage) or not item.parts:
        return item
    parts: list[UserPart] = []
    for part in item.parts:
        if isinstance(part, ImagePart | DocumentPart) and part.data is not None:
            try:
                raw = base64.b64decode(part.data, validate=True)
            except binascii.Error:
                parts.append(part)  # not base64: kept inline, as it came
                continue
            digest = hashlib.sha256(raw).hexdigest()
            conn.execute(
                "INSERT OR IGNORE INTO blobs (sha256, media_type, data) VALUES (?, ?, ?)",
                (digest, part.media_type, raw),
            )
            part = replace(part, data=None, blob=digest)
        parts.append(part)
    return replace(item, parts=tuple(parts))


def restore(conn: sqlite3.Connection, item: Item, where: str) -> Item:
    """``item`` as it was written: the bytes its attachments name by hash put back."""
    if not isinstance(item, UserMessage) or not item.parts:
        return item
    parts: list[UserPart] = []
    for part in item.parts:
        if isinstance(part, ImagePart | DocumentPart) and part.blob is not None:
            row = conn.execute("SELECT data FROM blobs WHERE sha256 = ?", (part.blob,)).fetchone()
            if row is None:
                raise StoreError(f"{where}: attachment {part.blob} is missing from the store")
            encoded = base64.b64encode(row[0]).decode("ascii")
            part = replace(part, data=encoded, blob=None)
        parts.append(part)
    return replace(item, parts=tuple(parts))


def named_by(conn: sqlite3.Connection, session: str) -> set[str]:
    """The hashes of the blobs the items of ``session`` name."""
    names: set[str] = set()
    rows = conn.execute(
        "SELECT data FROM items WHERE session = ? AND type = 'user' AND data LIKE '%\"blob\"%'",
        (session,),
    )
    for (data,) in rows:
        try:
            parts = json.loads(data).get("parts") or ()
        except (ValueError, AttributeError):
            continue  # unreadable: reading the session reports it; nothing to learn here
        names.update(p["blob"] for p in parts if isinstance(p, dict) and p.get("blob"))
    return names


def delete_unnamed(conn: sqlite3.Connection, hashes: set[str]) -> None:
    """Delete the blobs among ``hashes`` that no item names any more.

    A hash is 64 hex digits: an item whose text merely contains one keeps that blob (the safe
    way to be wrong); none is ever deleted while an item names it.
    """
    for digest in hashes:
        conn.execute(
            "DELETE FROM blobs WHERE sha256 = ? AND NOT EXISTS "
            "(SELECT 1 FROM items WHERE type = 'user' AND instr(data, ?) > 0)",
            (digest, digest),
        )
