"""Copy-constrained answers: which partial answers count as copied from the evidence."""

from __future__ import annotations

import pytest

from rag.generation.constraint import CopyConstraint

EVIDENCE = [
    "Năm 2024, Việt Nam ký kết 170 thỏa thuận hợp tác với các đối tác.",
    "Thủ tướng thăm Ấn Độ, Australia, New Zealand và Hàn Quốc.",
]
C = CopyConstraint([*EVIDENCE, "Không tìm thấy thông tin này trong các bài viết."])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "170",
        "170 thỏa thuận hợp tác [1]",
        "170 thỏa thuận hợp tác [1",  # a marker being written
        "Ấn Độ, Australia [2], Hàn Quốc",  # a list of copied phrases
        "- Ấn Độ\n- New Zealand",  # bullets
        "Ấn Độ và Hàn Quốc [2].",  # "và" joins two copied phrases
        "Việt Nam ký kết",  # case-insensitive
        "Không tìm thấy thông tin này",  # "not found" can always be said
        "Thủ tướ",  # a word being written
    ],
)
def test_copied_phrases_are_allowed(text: str) -> None:
    assert C.allows(text)


@pytest.mark.parametrize(
    "text",
    [
        "96 đại biểu",  # a figure no item holds
        "Viral hepatitis [1]",
        "Thủ tướng yêu cầu",  # the question's words, not the evidence's
        "với các đối tác Thủ tướng",  # no phrase runs from one item into the next
        "Ấn Độ, Nhật Bản",
    ],
)
def test_phrases_the_evidence_does_not_hold_are_refused(text: str) -> None:
    assert not C.allows(text)


def test_the_open_phrase_sets_markers_bullets_and_separators_aside() -> None:
    assert C.open_phrase("Ấn Độ [2], - Australia [2") == "Australia"
    assert C.open_phrase("170 [1].") == ""
