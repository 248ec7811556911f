"""Prompts: a passage state's prefix is exactly how every prompt with that top passage starts."""

from __future__ import annotations

import pytest

from rag.prompts import build_messages, prefix_messages
from rag.types import Chunk, Passage


def _p(text: str) -> Passage:
    return Passage(Chunk("id", "f.txt", 0, len(text), text, "h"), 1.0, text)


@pytest.mark.parametrize("english", [False, True])
@pytest.mark.parametrize("others", [0, 2])
def test_every_prompt_starts_with_its_top_passages_prefix(english: bool, others: int) -> None:
    top = "Hơn 170 thỏa thuận hợp tác đã được ký kết."
    passages = [_p(top)] + [_p(f"Đoạn khác số {i}.") for i in range(others)]
    messages = build_messages("Bao nhiêu thỏa thuận?", passages, english=english, history=[])
    prefix, tails = prefix_messages(top, english=english)
    assert messages[0] == prefix[0]  # the same instructions
    body, start = messages[1]["content"], prefix[1]["content"]
    assert body.startswith(start)
    assert any(body[len(start) :].startswith(t) for t in tails)


def test_history_or_another_top_passage_breaks_the_prefix() -> None:
    prefix, _ = prefix_messages("Đoạn A.", english=False)
    other = build_messages("Câu hỏi?", [_p("Đoạn B.")], english=False, history=[])
    assert not other[1]["content"].startswith(prefix[1]["content"])
    turns = [{"role": "user", "content": "Trước"}, {"role": "assistant", "content": "Đáp"}]
    followed = build_messages("Câu hỏi?", [_p("Đoạn A.")], english=False, history=turns)
    assert followed[1] != prefix[1]  # earlier turns come first: no stored state applies
