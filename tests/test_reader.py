"""The reader: signals of a proposed answer, the calibrated decision, per-model calibrations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag import reader as reader_module
from rag.generation import Completion, FakeGenerator
from rag.prompts import NOT_FOUND_VI, build_messages
from rag.reader import FEATURES, Calibration, Reader, calibration_path, measure
from rag.settings import DEFAULT_GENERATOR, SMALL_GENERATOR
from rag.types import Chunk, Passage

TEXT = "Thủ tướng Phạm Minh Chính đã chứng kiến 25 thỏa thuận được ký kết tại Hoa Kỳ."
QUESTION = "Thủ tướng đã chứng kiến bao nhiêu thỏa thuận được ký kết?"


def _ctx() -> list[Passage]:
    return [Passage(Chunk("c", "f.txt", 0, len(TEXT), TEXT, "h"), 1.0, TEXT)]


def _calibration(threshold: float = 0.5) -> Calibration:
    """Confidence rises with the answer's mean log-probability only."""
    zero = dict.fromkeys(FEATURES, 0.0)
    return Calibration(
        weights={**zero, "lp_mean": 4.0}, bias=0.0, mean={**zero, "lp_mean": -1.0},
        scale=dict.fromkeys(FEATURES, 1.0), threshold=threshold,
    )  # fmt: skip


def _read(generator: FakeGenerator, cal: Calibration) -> object:
    ctx = _ctx()
    return Reader(cal).read(
        generator, build_messages(QUESTION, ctx, english=False, history=[]), ctx,
        question=QUESTION, not_found=NOT_FOUND_VI, max_tokens=60, temperature=0.0,
        dense_top=0.6, unknown_terms=0, english=False,
    )  # fmt: skip


def test_signals_of_an_answer_held_by_the_evidence() -> None:
    done = Completion("25 thỏa thuận [1]", token_logprobs=[-0.1, -0.3, -0.05])
    sig = measure(
        "25 thỏa thuận [1]", done, [-2.0, -2.0], _ctx(), question=QUESTION,
        dense_top=0.7, unknown_terms=1, english=False, item_similarity=[0.8],
    )  # fmt: skip
    assert set(FEATURES) <= set(sig)
    assert sig["lp_mean"] == pytest.approx(-0.15) and sig["lp_min"] == pytest.approx(-0.3)
    assert sig["nf_margin"] == pytest.approx(-0.15 + 2.0)
    assert sig["numbers_found"] == 1.0 and sig["lexical"] == 1.0
    assert sig["unknown_terms"] == 1.0 and sig["dense_top"] == 0.7


def test_where_in_the_evidence_the_answer_comes_from() -> None:
    """The item that supports the answer best, and how it stands against the question: here the
    answer's figure is in the second item, which is less similar to the question than the first."""
    other = "Năm 2023 có 170 thỏa thuận hợp tác được ký kết."
    ctx = [Passage(Chunk("d", "g.txt", 0, len(other), other, "i"), 1.0, other), *_ctx()]
    done = Completion("25 thỏa thuận [2]", token_logprobs=[-0.1])
    sig = measure(
        "25 thỏa thuận [2]", done, [], ctx, question=QUESTION, dense_top=0.7,
        unknown_terms=0, english=False, item_similarity=[0.9, 0.6],
    )  # fmt: skip
    assert sig["ans_support"] == 1.0 and sig["ans_sim"] == 0.6
    assert sig["ans_rank"] == 1.0 and sig["sim_gap"] == pytest.approx(0.3)
    # Without the items' similarities (or with a list that does not match them) none is given.
    for sims in (None, [0.9]):
        got = measure(
            "25 thỏa thuận [2]", done, [], ctx, question=QUESTION, dense_top=0.7,
            unknown_terms=0, english=False, item_similarity=sims,
        )  # fmt: skip
        assert not {"ans_support", "ans_sim", "ans_rank", "sim_gap"} & set(got)


def test_a_number_no_passage_holds_is_measured_as_such() -> None:
    done = Completion("99 thỏa thuận [1]", token_logprobs=[-0.1])
    sig = measure(
        "99 thỏa thuận [1]", done, [], _ctx(), question=QUESTION,
        dense_top=0.7, unknown_terms=0, english=False,
    )  # fmt: skip
    assert sig["numbers_found"] == 0.0


def test_the_confidence_decides_and_the_answer_cites_its_evidence() -> None:
    sure = FakeGenerator(["25 thỏa thuận [1]"])  # every word is in the passage: log-prob 0
    got = _read(sure, _calibration(threshold=0.5))
    assert not got.abstained and got.text.startswith("25 thỏa thuận") and got.cited == [1]
    assert got.confidence == pytest.approx(1 / (1 + 2.718281828**-4), rel=1e-3)
    unsure = FakeGenerator(["25 thỏa thuận [1]"])
    refused = _read(unsure, _calibration(threshold=0.99))
    assert refused.abstained and refused.text == NOT_FOUND_VI
    assert refused.draft == "25 thỏa thuận [1]"  # the trace keeps what was not given


def test_a_draft_that_says_not_found_is_not_scored() -> None:
    got = _read(FakeGenerator([NOT_FOUND_VI]), _calibration())
    assert got.abstained and got.confidence == 0.0 and not got.signals


def test_invented_words_stay_below_the_lexical_floor_however_sure() -> None:
    cal = _calibration(threshold=0.0)  # would give anything
    got = _read(FakeGenerator(["Hãy truy cập trang web khuyến mãi ngay hôm nay [1]"]), cal)
    assert got.abstained and got.signals["lexical"] < 0.5


def test_each_answer_model_has_its_own_calibration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert calibration_path(DEFAULT_GENERATOR).name == "calibration.json"
    assert calibration_path(SMALL_GENERATOR).name == f"calibration.{SMALL_GENERATOR}.json"
    assert calibration_path(f"/models/{SMALL_GENERATOR}.gguf") == calibration_path(SMALL_GENERATOR)
    default = tmp_path / "calibration.json"
    monkeypatch.setattr(reader_module, "CALIBRATION", default)
    monkeypatch.setattr(Calibration, "load", classmethod(lambda cls, path=default: path))
    # No file of its own: the default model's; with one: its own.
    assert Calibration.for_model("other-model") == default
    own = tmp_path / "calibration.other-model.json"
    own.write_text("{}")
    assert Calibration.for_model("other-model") == own


def test_the_shipped_calibration_reads_known_signals_fitted_on_dev() -> None:
    # Read the file itself: the fake-engine tests pin ``Calibration.load`` (conftest).
    shipped = json.loads(reader_module.CALIBRATION.read_text("utf-8"))
    assert set(shipped["weights"]) == set(shipped["mean"]) == set(shipped["scale"])
    assert set(shipped["weights"]) <= set(FEATURES) and "lp_mean" in shipped["weights"]
    assert 0.0 < shipped["threshold"] < 1.0 and "dev split" in shipped["fitted_on"]


def test_signals_an_engine_cannot_give_are_left_out_and_count_as_no_information() -> None:
    """A remote model server gives no reply scores (and maybe no token probabilities): those
    signals are absent, and the calibration reads an absent signal as its dev mean."""
    no_score = measure(
        "25 thỏa thuận [1]", Completion("25 thỏa thuận [1]", token_logprobs=[-0.1, -0.3]), [],
        _ctx(), question=QUESTION, dense_top=0.7, unknown_terms=0, english=False,
    )  # fmt: skip
    assert "nf_margin" not in no_score and no_score["lp_mean"] == pytest.approx(-0.2)
    no_logprobs = measure(
        "25 thỏa thuận [1]", Completion("25 thỏa thuận [1]"), [], _ctx(), question=QUESTION,
        dense_top=0.7, unknown_terms=0, english=False,
    )  # fmt: skip
    assert not {"lp_mean", "lp_min", "nf_margin"} & set(no_logprobs)
    assert no_logprobs["numbers_found"] == 1.0 and no_logprobs["lexical"] == 1.0
    cal = _calibration()
    # lp_mean is the only weighted signal: absent, it is its mean, so z = bias = 0.
    assert cal.probability(no_logprobs) == pytest.approx(0.5)
    assert cal.probability({**no_logprobs, "lp_mean": 0.0}) > 0.9
