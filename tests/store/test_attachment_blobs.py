"""Attachments in a session store: their bytes live once, by content hash, in the ``blobs``
table; the history table holds only the hash; a session read back has them again."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from llm_worker.attachments import from_bytes
from llm_worker.items import DocumentPart, ImagePart, UserMessage
from llm_worker.store import SQLiteStore, StoreError
from llm_worker.testing import ScriptedModel
from llm_worker.worker import Worker

IMAGE = bytes(range(256)) * 400  # 100 KiB
PAPER = b"%PDF-1.4 " + b"x" * 5000


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_attachment_bytes_are_stored_once_by_hash_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    image = from_bytes(IMAGE, "image/png")
    linked = ImagePart(url="https://example.com/cat.png")
    first = UserMessage(text="look", parts=(image, linked, from_bytes(PAPER, "application/pdf")))
    again = UserMessage(text="again", parts=(image,))
    with SQLiteStore(path) as store, store.open_session("s") as session:
        session.extend([first, again])
    rows = _rows(path, "SELECT data FROM items ORDER BY seq")
    assert all(len(str(data)) < 1000 for (data,) in rows)  # the history table stays small
    blobs = _rows(path, "SELECT sha256, media_type, length(data) FROM blobs ORDER BY media_type")
    assert [(media, size) for _, media, size in blobs] == [
        ("application/pdf", len(PAPER)),
        ("image/png", len(IMAGE)),  # sent twice, stored once
    ]
    with SQLiteStore(path) as store, store.open_session("s") as session:
        assert session.history == [first, again]


async def test_a_worker_on_a_session_keeps_its_attachments(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    picture = from_bytes(IMAGE, "image/png")
    with SQLiteStore(path) as store, store.open_session("s") as session:
        worker = Worker(ScriptedModel(["A cat."]), history=session.history)
        session.attach(worker)
        await worker.run("What is it?", attachments=[picture])
    with SQLiteStore(path) as store, store.open_session("s") as session:
        [message] = [i for i in session.history if isinstance(i, UserMessage)]
    [part] = message.parts
    assert isinstance(part, ImagePart)
    assert base64.b64decode(part.data or "") == IMAGE
    assert part.blob is None


def test_a_missing_blob_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    document = DocumentPart(data=base64.b64encode(PAPER).decode(), media_type="application/pdf")
    with SQLiteStore(path) as store, store.open_session("s") as session:
        session.extend([UserMessage(text="read", parts=(document,))])
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM blobs")
    conn.commit()
    conn.close()
    with SQLiteStore(path) as store, pytest.raises(StoreError, match="missing from the store"):
        store.load_history("s")


def test_deleting_a_session_deletes_the_attachments_only_it_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    shared = from_bytes(IMAGE, "image/png")
    own = from_bytes(PAPER, "application/pdf")
    with SQLiteStore(path) as store:
        with store.open_session("a") as session:
            session.extend([UserMessage(text="both", parts=(shared, own))])
        with store.open_session("b") as session:
            session.extend([UserMessage(text="the image again", parts=(shared,))])
        store.delete_session("a")
        kinds = [media for (media,) in _rows(path, "SELECT media_type FROM blobs")]
        assert kinds == ["image/png"]  # the document went with "a"; "b" still names the image
        with store.open_session("b") as session:
            [message] = session.history
            assert message.parts == (shared,)
        store.delete_session("b")
    assert _rows(path, "SELECT count(*) FROM blobs") == [(0,)]
