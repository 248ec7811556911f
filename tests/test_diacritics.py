"""Diacritics restoration from the corpus's own text."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.diacritics import GENERAL_WEIGHT, DiacriticRestorer, general_vietnamese

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


def test_general_vietnamese_spells_syllables_the_articles_never_use() -> None:
    texts = [p.read_text("utf-8") for p in sorted((ROOT / "data" / "articles").glob("*.txt"))]
    corpus_only = DiacriticRestorer(texts)
    general = DiacriticRestorer(texts, prior=general_vietnamese(), prior_weight=GENERAL_WEIGHT)
    typed = "khoang 14 trieu lieu vaccine"
    assert corpus_only.restore(typed) == "khoang 14 triệu liều vaccine"
    assert general.restore(typed) == "khoảng 14 triệu liều vaccine"
    assert general.restore("co bao nhieu loai") == "có bao nhiêu loại"
    # The corpus still decides where it speaks: the prior does not undo its bigrams.
    assert general.restore("chi thi 15 ban hanh ngay nao") == "chỉ thị 15 ban hành ngày nào"


def test_a_prior_alone_restores_without_a_corpus() -> None:
    restorer = DiacriticRestorer([], prior={"khoảng": 0.7, "khoang": 0.03}, prior_weight=1.0)
    assert restorer.restore("khoang") == "khoảng"
