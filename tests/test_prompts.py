"""Prompts: a passage state's prefix is exactly how every prompt with that top passage starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.prompts import (
    EXAMPLES_EN,
    EXAMPLES_VI,
    build_messages,
    prefix_messages,
    without_evidence,
)
from rag.text import fold, words
from rag.types import Chunk, Passage

ARTICLES = Path(__file__).resolve().parents[1] / "data/articles"


def _p(text: str) -> Passage:
    return Passage(Chunk("id", "f.txt", 0, len(text), text, "h"), 1.0, text)


@pytest.mark.parametrize("english", [False, True])
@pytest.mark.parametrize("others", [0, 2])
@pytest.mark.parametrize("worked", [False, True])
def test_every_prompt_starts_with_its_top_passages_prefix(
    english: bool, others: int, worked: bool
) -> None:
    top = "Hơn 170 thỏa thuận hợp tác đã được ký kết."
    passages = [_p(top)] + [_p(f"Đoạn khác số {i}.") for i in range(others)]
    messages = build_messages(
        "Bao nhiêu thỏa thuận?", passages, english=english, history=[], worked=worked
    )
    prefix, tails = prefix_messages(top, english=english, worked=worked)
    assert len(messages) == len(prefix) == (6 if worked else 2)
    assert messages[:-1] == prefix[:-1]  # the same instructions (and worked examples)
    body, start = messages[-1]["content"], prefix[-1]["content"]
    assert body.startswith(start)
    assert any(body[len(start) :].startswith(t) for t in tails)


def test_history_or_another_top_passage_breaks_the_prefix() -> None:
    prefix, _ = prefix_messages("Đoạn A.", english=False)
    other = build_messages("Câu hỏi?", [_p("Đoạn B.")], english=False, history=[])
    assert not other[1]["content"].startswith(prefix[1]["content"])
    turns = [{"role": "user", "content": "Trước"}, {"role": "assistant", "content": "Đáp"}]
    followed = build_messages("Câu hỏi?", [_p("Đoạn A.")], english=False, history=turns)
    assert followed[1] != prefix[1]  # earlier turns come first: no stored state applies


@pytest.mark.parametrize("english", [False, True])
def test_worked_examples_come_before_the_evidence_and_name_nothing_of_the_corpus(
    english: bool,
) -> None:
    messages = build_messages("Câu hỏi?", [_p("Đoạn A.")], english=english, history=[], worked=True)
    examples = EXAMPLES_EN if english else EXAMPLES_VI
    assert messages[1 : 1 + len(examples)] == examples
    assert [m["role"] for m in examples] == ["user", "assistant"] * (len(examples) // 2)
    assert messages[-1]["content"].endswith("Câu hỏi?")
    # An example's answer copied into a real answer would be a claim no article makes: their
    # names must not be the corpus's (an answer naming them then has no evidence at all).
    corpus = " ".join(fold(w) for f in sorted(ARTICLES.glob("*.txt"))
                      for w in words(f.read_text("utf-8")))  # fmt: skip
    text = " ".join(m["content"] for m in examples)
    for name in ("Hòa Lâm", "Trần Thu Hà" if english else "Lê Quang Minh"):
        assert name in text
        assert " ".join(fold(w) for w in words(name)) not in corpus


def test_an_english_question_shows_its_vietnamese_version_after_it() -> None:
    body = build_messages(
        "How many?", [_p("Đoạn A.")], english=True, history=[], vietnamese="Bao nhiêu?"
    )[-1]["content"]
    assert body.endswith("Question: How many?\n(In Vietnamese: Bao nhiêu?)")
    vi = build_messages("Bao nhiêu?", [_p("A.")], english=False, history=[], vietnamese="x")
    assert "In Vietnamese" not in vi[-1]["content"]  # only English questions get it


def test_without_evidence_keeps_instructions_turns_and_question_only() -> None:
    passage = _p("Đoàn ký 25 thỏa thuận tại Hoa Kỳ.")
    history = [{"role": "user", "content": "Câu trước?"}, {"role": "assistant", "content": "X"}]
    for english, question in ((False, "Ký bao nhiêu thỏa thuận?"), (True, "How many deals?")):
        full = build_messages(question, [passage], english=english, history=history)  # type: ignore[arg-type]
        bare = without_evidence(full, english=english)
        assert bare[:-1] == full[:-1]
        label = "Question" if english else "Câu hỏi"
        assert bare[-1] == {"role": "user", "content": f"{label}: {question}"}
        assert "25 thỏa thuận" in full[-1]["content"]
