from __future__ import annotations

from rag.context import evidence_sentences, sentences
from rag.types import Chunk, Passage


def _p(text: str, source: str = "f.txt", start: int = 100) -> Passage:
    return Passage(Chunk("id", source, start, start + len(text), text, "h"), 1.0, text)


TEXT = (
    "Hội nghị khai mạc lúc 14 giờ. Các đại biểu thảo luận về thương mại. "
    "Hơn 170 thỏa thuận hợp tác đã được ký kết. Quan hệ đối ngoại được mở rộng.\n"
    "Thủ tướng kết luận hội nghị."
)
OTHER = "Xuất khẩu tăng mạnh. Việt Nam ký 25 thỏa thuận với Hoa Kỳ. Giá dầu tăng."


def test_sentences_split_at_end_punctuation_and_lines() -> None:
    spans = sentences(TEXT)
    assert [TEXT[s:e] for s, e in spans][2] == "Hơn 170 thỏa thuận hợp tác đã được ký kết."
    assert len(spans) == 5


def test_a_title_or_an_initial_before_a_name_does_not_end_the_sentence() -> None:
    text = (
        "Các địa phương gồm Thái Bình, TP. Hồ Chí Minh và Vĩnh Phúc. PGS. TS. Lê Văn An "
        "phát biểu. Ông Nguyễn V. Bình dự. Hàng đi Mỹ. Trong năm tăng 5. Giá dầu tăng."
    )
    assert [text[s:e] for s, e in sentences(text)] == [
        "Các địa phương gồm Thái Bình, TP. Hồ Chí Minh và Vĩnh Phúc.",
        "PGS. TS. Lê Văn An phát biểu.",
        "Ông Nguyễn V. Bình dự.",
        "Hàng đi Mỹ.",  # a two-letter word that is not a title still ends its sentence
        "Trong năm tăng 5.",
        "Giá dầu tăng.",
    ]


def test_evidence_keeps_the_sentences_that_match_the_question_from_every_passage() -> None:
    items = evidence_sentences(
        [_p(TEXT), _p(OTHER, "g.txt")], "Bao nhiêu thỏa thuận được ký kết?", budget=120,
        max_sentences=2,
    )  # fmt: skip
    texts = [p.chunk.text for p in items]
    assert texts == [
        "Hơn 170 thỏa thuận hợp tác đã được ký kết.",
        "Việt Nam ký 25 thỏa thuận với Hoa Kỳ.",
    ]
    assert [p.chunk.source for p in items] == ["f.txt", "g.txt"]
    assert sum(map(len, texts)) <= 120


def test_best_match_first_ranks_the_items_by_their_best_sentence() -> None:
    question = "Việt Nam ký bao nhiêu thỏa thuận với Hoa Kỳ?"
    passages = [_p(TEXT), _p(OTHER, "g.txt")]
    reading = evidence_sentences(passages, question, budget=120, max_sentences=2)
    ranked = evidence_sentences(
        passages, question, budget=120, max_sentences=2, best_match_first=True
    )
    assert [p.chunk.source for p in reading] == ["f.txt", "g.txt"]  # passage rank first
    assert [p.chunk.text for p in ranked] == [
        "Việt Nam ký 25 thỏa thuận với Hoa Kỳ.",
        "Hơn 170 thỏa thuận hợp tác đã được ký kết.",
    ]


def test_neighbouring_sentences_become_one_item_in_reading_order() -> None:
    items = evidence_sentences(
        [_p(TEXT)], "thỏa thuận hợp tác ký kết, quan hệ đối ngoại mở rộng", budget=200,
        max_sentences=2,
    )  # fmt: skip
    assert [p.chunk.text for p in items] == [
        "Hơn 170 thỏa thuận hợp tác đã được ký kết. Quan hệ đối ngoại được mở rộng."
    ]
    assert items[0].chunk.text in TEXT


def test_the_budget_and_the_sentence_cap_hold() -> None:
    items = evidence_sentences([_p(TEXT)], "hội nghị", budget=1000, max_sentences=1)
    assert len(items) == 1
    assert evidence_sentences([_p(TEXT)], "x", budget=10)[0].chunk.text == TEXT[:10]
    assert evidence_sentences([], "x", budget=100) == []


def test_similarity_finds_the_sentence_no_word_of_the_question_shares() -> None:
    text = "Câu mở đầu nói chuyện khác. " * 6 + "Đích đến là Battambang."
    plain = evidence_sentences([_p(text)], "which city", budget=60, max_sentences=1)
    assert "Battambang" not in plain[0].chunk.text  # no shared word: the first sentence wins

    def similarity(sents: list[str]) -> list[float]:
        return [0.9 if "Battambang" in s else 0.1 for s in sents]

    found = evidence_sentences(
        [_p(text)], "which city", budget=60, max_sentences=1, similarity=similarity
    )
    assert found[0].chunk.text == "Đích đến là Battambang."


def test_the_top_passage_layout_gives_it_whole_then_sentences_of_the_others() -> None:
    from rag.context import top_passage_evidence

    items = top_passage_evidence(
        [_p(TEXT), _p(OTHER, "g.txt")], "Việt Nam ký bao nhiêu thỏa thuận với Hoa Kỳ?",
        budget=60, max_sentences=2,
    )  # fmt: skip
    assert items[0].chunk.text == TEXT  # whole, first: the prefix a stored state stands for
    rest = [p.chunk.text for p in items[1:]]
    assert rest and all(t in OTHER for t in rest)
    assert any("Việt Nam ký 25 thỏa thuận với Hoa Kỳ." in t for t in rest)
    assert sum(map(len, rest)) <= 60
    assert top_passage_evidence([], "x", budget=60, max_sentences=2) == []


def test_best_last_reverses_the_passages_not_their_sentences() -> None:
    from dataclasses import replace

    from rag.context import best_last

    def item(pid: str, text: str) -> Passage:
        p = _p(text, f"{pid}.txt")
        return replace(p, chunk=replace(p.chunk, id=pid))

    items = [
        item("a", "A1."),
        item("a", "A2."),
        item("b", "B1."),
        item("c", "C1."),
        item("c", "C2."),
    ]
    assert [p.chunk.text for p in best_last(items)] == ["C1.", "C2.", "B1.", "A1.", "A2."]
    assert best_last([]) == []
