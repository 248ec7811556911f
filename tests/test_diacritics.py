"""Diacritics restoration from the corpus's own text."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.diacritics import DiacriticRestorer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def restorer() -> DiacriticRestorer:
    texts = [p.read_text("utf-8") for p in sorted((ROOT / "data" / "articles").glob("*.txt"))]
    return DiacriticRestorer(texts)


@pytest.mark.parametrize(
    ("typed", "restored"),
    [
        ("chi thi 15 ban hanh ngay nao", "chỉ thị 15 ban hành ngày nào"),
        ("6 thang dau nam 2021", "6 tháng đầu năm 2021"),
        ("Thu tuong Pham Minh Chinh", "Thủ tướng Phạm Minh Chính"),
    ],
)
def test_the_neighbouring_syllable_picks_the_spelling(
    restorer: DiacriticRestorer, typed: str, restored: str
) -> None:
    assert restorer.restore(typed) == restored


def test_text_with_marks_and_unknown_words_stay_as_typed(restorer: DiacriticRestorer) -> None:
    assert restorer.restore("Chỉ thị 15 ban hanh") == "Chỉ thị 15 ban hanh"
    assert restorer.restore("xyzzy qwerty?") == "xyzzy qwerty?"
    assert restorer.restore("") == ""


def test_an_empty_corpus_restores_nothing() -> None:
    assert DiacriticRestorer([]).restore("chi thi") == "chi thi"
