"""Metric functions on hand-made cases whose expected values are worked out by hand."""

from __future__ import annotations

import unicodedata

import pytest

from rag.evaluation import metrics as m

LIST = [["tiêu dùng", "đầu tư", "xuất khẩu"]]


# --- normalisation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.000 tỷ", "1000 tỷ"),
        ("1,000 tỷ", "1000 tỷ"),
        ("1.000.000", "1000000"),
        ("2,5%", "2.5%"),
        ("  Thủ   tướng\n", "thủ tướng"),
        ("đột phá – mở đường", "đột phá-mở đường"),
        ("“phục vụ”", '"phục vụ"'),
        (unicodedata.normalize("NFD", "Việt Nam"), "việt nam"),
    ],
)
def test_normalize_makes_these_equal(a: str, b: str) -> None:
    assert m.normalize(a) == m.normalize(b)


def test_normalize_keeps_a_plain_space_between_numbers() -> None:
    # "năm 2022 100 container" must not become one number 2022100.
    assert m.normalize("năm 2022 100 container") == "năm 2022 100 container"


@pytest.mark.parametrize(
    ("text", "required", "found"),
    [
        ("chứng kiến 25 thỏa thuận", "25", True),
        ("năm 2025", "25", False),
        ("100 container", "10", False),
        ("tăng 2,5 lần", "2", False),
        ("10/8/2022", "10/8/2022", True),
        ("Cộng hòa Dominicana", "Dominican", True),
        ("khoảng 1.000 doanh nghiệp", "1000", True),
        ("CHỈ THỊ 15", "chỉ thị 15", True),
        ("chi thi 15", "chỉ thị 15", False),  # diacritics matter
    ],
)
def test_contains(text: str, required: str, found: bool) -> None:
    assert m.contains(text, required) is found


# --- answers -----------------------------------------------------------------------------------
def test_a_right_answer() -> None:
    answer = "Thủ tướng đã chứng kiến 25 thỏa thuận được ký kết [1]."
    assert m.answer_correct(answer, [["25"]])
    assert m.item_correct(answer, False, [["25"]])


def test_a_wrong_answer() -> None:
    assert not m.answer_correct("Có 2025 thỏa thuận [1].", [["25"]])
    # A list answer needs every part of one alternative.
    assert not m.answer_correct("Gồm tiêu dùng và đầu tư [1].", LIST)
    assert m.answer_correct("Gồm tiêu dùng, đầu tư và xuất khẩu [1].", LIST)


def test_citation_markers_are_not_answer_text() -> None:
    assert not m.answer_correct("Xem đoạn [25].", [["25"]])
    assert not m.answer_correct("Xem [1, 25].", [["25"]])


def test_any_alternative_will_do() -> None:
    alts = [["ba mục tiêu"], ["3 mục tiêu"]]
    assert m.answer_correct("thực hiện 3 mục tiêu", alts)
    assert m.answer_correct("thực hiện Ba mục tiêu", alts)
    assert not m.answer_correct("thực hiện các mục tiêu", alts)


def test_a_correct_abstention_and_the_wrong_ones() -> None:
    not_found = "Không tìm thấy thông tin này trong các bài viết."
    assert m.item_correct(not_found, True, [])  # unanswerable, abstained: right
    assert not m.item_correct("Giá vàng là 80 triệu [1].", False, [])  # answered anyway: wrong
    # Abstaining on an answerable question is wrong even if the text happens to hold the string.
    assert not m.item_correct("Không tìm thấy 25.", True, [["25"]])


def test_token_f1_by_hand() -> None:
    # pred {có, 25, thỏa, thuận}, gold {25}: P = 1/4, R = 1, F1 = 2·(1/4)/(5/4) = 0.4
    assert m.token_f1("Có 25 thỏa thuận [1]", [["25"]]) == pytest.approx(0.4)
    # pred gồm tiêu dùng và đầu tư (6), gold tiêu dùng đầu tư xuất khẩu (6), 4 shared: 2/3
    assert m.token_f1("Gồm tiêu dùng và đầu tư", LIST) == pytest.approx(2 / 3)
    # The best alternative counts: "3 mục tiêu" matches the second one exactly.
    assert m.token_f1("3 mục tiêu", [["ba mục tiêu"], ["3 mục tiêu"]]) == pytest.approx(1.0)
    # Numbers are normalised before tokenising: "1.000" is the token "1000".
    assert m.token_f1("1.000", [["1000"]]) == pytest.approx(1.0)
    assert m.token_f1("Không biết", [["25"]]) == 0.0
    assert m.token_f1("25", []) == 0.0


# --- retrieval ---------------------------------------------------------------------------------
def test_file_hits_and_reciprocal_rank() -> None:
    ranked = ["a.txt", "b.txt", "a.txt", "c.txt", "b.txt"]
    gold = ["c.txt"]
    assert [m.file_hit_at_k(ranked, gold, k) for k in (1, 3, 4, 5)] == [False, False, True, True]
    assert m.reciprocal_rank(ranked, gold) == pytest.approx(0.25)
    assert m.reciprocal_rank(ranked, gold, k=3) == 0.0
    # Any gold file counts (multi-document questions list two).
    assert m.reciprocal_rank(ranked, ["b.txt", "c.txt"]) == pytest.approx(0.5)
    assert m.reciprocal_rank([], gold) == 0.0


def test_passage_hit_needs_the_answer_in_a_gold_file() -> None:
    passages = [
        ("a.txt", "Thủ tướng chứng kiến 25 thỏa thuận"),  # holds "25" but a.txt is not gold
        ("b.txt", "Năm 2025 có nhiều thỏa thuận"),  # gold file, but "25" only inside 2025
        ("b.txt", "đã chứng kiến 25 thỏa thuận"),  # the answer-bearing passage
    ]
    hits = [m.passage_hit_at_k(passages, [["25"]], ["b.txt"], k) for k in (1, 2, 3)]
    assert hits == [False, False, True]
    assert not m.answer_bearing(*passages[0], [["25"]], ["b.txt"])
    assert m.answer_bearing(*passages[2], [["25"]], ["b.txt"])


def test_passage_hit_accepts_a_list_split_over_two_gold_passages() -> None:
    passages = [("b.txt", "gồm tiêu dùng, đầu tư"), ("b.txt", "và xuất khẩu")]
    assert not m.passage_hit_at_k(passages, LIST, ["b.txt"], 1)
    assert m.passage_hit_at_k(passages, LIST, ["b.txt"], 2)
    assert not m.passage_hit_at_k(passages, LIST, ["c.txt"], 2)
    assert not m.passage_hit_at_k(passages, [], [], 2)


# --- citations ---------------------------------------------------------------------------------
def test_a_wrong_citation() -> None:
    assert m.citation_precision(["x.txt"], ["a.txt"]) == 0.0
    assert m.citation_recall(["x.txt"], ["a.txt"]) == 0.0
    assert not m.supported(["Đoạn văn không có đáp án."], [["25"]])


def test_citation_precision_and_recall_by_hand() -> None:
    # Distinct cited files {a, x}: one of two is gold; gold {a, b}: one of two is cited.
    cited = ["a.txt", "a.txt", "x.txt"]
    assert m.citation_precision(cited, ["a.txt", "b.txt"]) == pytest.approx(0.5)
    assert m.citation_recall(cited, ["a.txt", "b.txt"]) == pytest.approx(0.5)
    assert m.citation_precision([], ["a.txt"]) is None
    assert m.citation_recall([], ["a.txt"]) == 0.0
    assert m.citation_recall(["a.txt"], []) is None


def test_support_across_cited_passages() -> None:
    assert m.supported(["chứng kiến 25 thỏa thuận"], [["25"]])
    assert m.supported(["gồm tiêu dùng, đầu tư", "và xuất khẩu"], LIST)
    assert not m.supported(["gồm tiêu dùng, đầu tư"], LIST)
    assert not m.supported([], [["25"]])


# --- abstention, percentiles, speed ------------------------------------------------------------
def test_abstention_prf_by_hand() -> None:
    # tp = 1 (item 0), fp = 2 (items 1, 4), fn = 1 (item 2)
    r = m.prf([True, True, False, False, True], [True, False, True, False, False])
    assert r.precision == pytest.approx(1 / 3)
    assert r.recall == pytest.approx(1 / 2)
    assert r.f1 == pytest.approx(0.4)  # 2·(1/3)(1/2) / (1/3 + 1/2)


def test_abstention_prf_edge_cases() -> None:
    assert m.prf([False, False], [False, False]) == m.PRF(None, None, None)
    never = m.prf([False, False], [True, False])
    assert (never.precision, never.recall, never.f1) == (None, 0.0, 0.0)
    assert m.prf([True], [True]) == m.PRF(1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        m.prf([True], [])


def test_percentiles_interpolate_like_numpy() -> None:
    xs = [4.0, 1.0, None, 3.0, 2.0]
    assert m.percentile(xs, 50) == pytest.approx(2.5)
    assert m.percentile(xs, 95) == pytest.approx(3.85)  # 3 + 0.85·(4 - 3)
    assert m.percentile([7.0], 95) == 7.0
    assert m.percentile([None], 50) is None


def test_tokens_per_second_counts_decoding_only() -> None:
    timings: list[tuple[int, float | None, float]] = [
        (11, 100.0, 1100.0),  # 10 tokens after the first in 1.0 s
        (6, 0.0, 250.0),  # 5 tokens in 0.25 s
        (1, 50.0, 60.0),  # a single token: no decoding to time
        (4, None, 500.0),  # no first token (abstained before the model)
    ]
    assert m.tokens_per_second(timings) == pytest.approx(15 / 1.25)
    assert m.tokens_per_second([(1, 5.0, 9.0)]) is None


def test_mean_and_rate_skip_what_is_undefined() -> None:
    assert m.mean([1.0, None, 0.0]) == pytest.approx(0.5)
    assert m.mean([None]) is None
    assert m.rate([True, False, False, True]) == pytest.approx(0.5)
    assert m.rate([]) is None
