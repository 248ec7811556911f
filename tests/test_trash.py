"""Deleted and replaced articles are moved aside and can be restored until purged."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.service import RAG

NAME = "003_1f44b7b7ded05db5.txt"


def test_a_deleted_article_is_restorable_byte_for_byte(rag: RAG, corpus: Path) -> None:
    original = (corpus / NAME).read_bytes()
    rag.delete_document(NAME)
    assert not (corpus / NAME).exists()
    assert NAME not in rag.index.files
    assert all(h.source != NAME for h in rag.search("thỏa thuận hợp tác năm 2024", 10))
    [entry] = rag.trashed()
    assert (entry.name, entry.reason, entry.size) == (NAME, "deleted", len(original))

    rag.restore_document(entry.id)
    assert (corpus / NAME).read_bytes() == original
    assert NAME in rag.index.files and rag.trashed() == []
    assert NAME in {h.source for h in rag.search("thỏa thuận hợp tác năm 2024", 5)}


def test_an_overwritten_article_keeps_its_old_version(rag: RAG, corpus: Path) -> None:
    original = (corpus / NAME).read_bytes()
    rag.add_document(NAME, "Bản mới của bài viết.".encode())
    [entry] = rag.trashed()
    assert entry.reason == "replaced by an upload"
    # Restoring by file name takes its newest entry; the current version goes aside in turn.
    rag.restore_document(NAME)
    assert (corpus / NAME).read_bytes() == original
    [newer] = rag.trashed()
    assert rag.trash.data(newer) == "Bản mới của bài viết.".encode()


def test_uploading_identical_bytes_trashes_nothing(rag: RAG, corpus: Path) -> None:
    rag.add_document(NAME, (corpus / NAME).read_bytes())
    assert rag.trashed() == []


def test_purge_deletes_for_good(rag: RAG, corpus: Path) -> None:
    rag.delete_document(NAME)
    [entry] = rag.trashed()
    assert rag.purge_document(entry.id).name == NAME
    assert rag.trashed() == []
    with pytest.raises(KeyError):
        rag.restore_document(entry.id)


def test_the_trash_lives_beside_the_corpus_not_in_it(rag: RAG, corpus: Path) -> None:
    rag.delete_document(NAME)
    assert rag.settings.trash_path == corpus.parent / "trash"
    report = rag.ingest()  # the trash is never indexed
    assert NAME not in rag.index.files and not report.added


def test_unknown_trash_entries_are_key_errors(rag: RAG) -> None:
    for key in ("nothing.txt", "../../etc/passwd", "20260101T000000-deadbeef"):
        with pytest.raises(KeyError):
            rag.restore_document(key)
