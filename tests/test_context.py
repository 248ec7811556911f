from __future__ import annotations

from rag.context import select, sentences, trim
from rag.types import Chunk, Passage


def _p(text: str) -> Passage:
    return Passage(Chunk("id", "f.txt", 100, 100 + len(text), text, "h"), 1.0, text)


TEXT = (
    "Hội nghị khai mạc lúc 14 giờ. Các đại biểu thảo luận về thương mại. "
    "Hơn 170 thỏa thuận hợp tác đã được ký kết. Quan hệ đối ngoại được mở rộng.\n"
    "Thủ tướng kết luận hội nghị."
)


def test_sentences_split_at_end_punctuation_and_lines() -> None:
    spans = sentences(TEXT)
    assert [TEXT[s:e] for s, e in spans][2] == "Hơn 170 thỏa thuận hợp tác đã được ký kết."
    assert len(spans) == 5


def test_trim_keeps_the_window_that_matches_the_question() -> None:
    p = trim(_p(TEXT), {"thoa", "thuan", "ky", "ket", "thoa_thuan"}, budget=80)
    assert "170 thỏa thuận" in p.chunk.text
    assert len(p.chunk.text) <= 80
    assert p.chunk.text in TEXT


def test_short_passages_are_left_whole() -> None:
    p = _p("Ngắn gọn.")
    assert trim(p, {"x"}, budget=100) is p


def test_select_shares_the_budget_between_the_first_k() -> None:
    chosen = select(
        [_p(TEXT), _p(TEXT), _p(TEXT)], "Bao nhiêu thỏa thuận được ký kết?", k=2, budget=160
    )
    assert len(chosen) == 2
    assert all(len(p.chunk.text) <= 80 for p in chosen)
    assert all("170" in p.chunk.text for p in chosen)


def test_similarity_finds_the_sentence_no_word_of_the_question_shares() -> None:
    from rag.context import trim
    from rag.types import Chunk, Passage

    text = "Câu mở đầu nói chuyện khác. " * 6 + "Đích đến là Battambang."
    chunk = Chunk(id="c", source="x.txt", start=0, end=len(text), text=text, hash="h")
    p = Passage(chunk=chunk, score=1.0, original_text=text)
    plain = trim(p, {"which", "city"}, 60)
    assert "Battambang" not in plain.chunk.text  # no shared word: the first window wins

    def similarity(sents: list[str]) -> list[float]:
        return [0.9 if "Battambang" in s else 0.1 for s in sents]

    assert "Battambang" in trim(p, {"which", "city"}, 60, similarity).chunk.text
