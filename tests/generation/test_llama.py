"""The llama.cpp engine with the real small model: token probabilities and candidate scoring."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.generation.llama import (
    SCORE_SEQUENCES,
    LlamaCppGenerator,
    _contrasted,
    use_extra_buffers,
)
from rag.models import ModelError, resolve
from rag.settings import SMALL_GENERATOR, Settings

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PROMPT = [
    {"role": "system", "content": "Trả lời ngắn gọn bằng số, chỉ dùng đoạn trích."},
    {"role": "user", "content": "[1]\nThủ tướng chứng kiến 25 thỏa thuận được ký kết.\n\n"
     "Câu hỏi: Thủ tướng chứng kiến bao nhiêu thỏa thuận?"},
]  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppGenerator]:
    s = Settings(models_dir=ROOT / "models", _env_file=None)  # type: ignore[call-arg]
    try:
        path = Path(resolve(SMALL_GENERATOR, s.models_dir, "generator"))
    except ModelError as exc:
        pytest.fail(f"the small model is needed: {exc}")
    gen = LlamaCppGenerator(path, n_ctx=2048, n_threads=2)
    yield gen
    gen.close()


def test_the_greedy_answer_carries_its_token_probabilities(engine: LlamaCppGenerator) -> None:
    got = engine.complete(PROMPT, max_tokens=20)
    assert "25" in got.text
    assert got.finished and len(got.token_logprobs) >= 2
    assert all(lp <= 0 for lp in got.token_logprobs)
    assert got.prompt_tokens > 20


def test_a_sampled_answer_is_the_same_for_the_same_seed(engine: LlamaCppGenerator) -> None:
    got = [
        engine.complete(PROMPT, max_tokens=8, temperature=1.5, seed=s).text for s in (1, 1, 2, 3)
    ]
    assert got[0] == got[1]
    assert len(set(got)) > 1  # other seeds, other samples at this temperature


def test_candidates_scored_side_by_side_match_one_at_a_time(engine: LlamaCppGenerator) -> None:
    cands = ["25", "25 thỏa thuận", "99 tỷ USD", "Không tìm thấy thông tin này."]
    together = engine.score(PROMPT, cands)
    alone = [engine.score(PROMPT, [c])[0] for c in cands]
    assert [len(t) for t in together] == [len(a) for a in alone]
    for t, a in zip(together, alone, strict=True):
        assert t[0] == a[0]  # the first token is read off the prompt's logits: identical
        # Later tokens come from batches of another size: CPU kernels differ in rounding only.
        assert max(abs(x - y) for x, y in zip(t, a, strict=True)) < 0.5
    means = [sum(t) / len(t) for t in together]
    assert means[0] > means[2] and means[1] > means[2]  # the evidence's number wins
    assert all(math.isfinite(x) for t in together for x in t)


def test_more_candidates_than_one_batch_holds(engine: LlamaCppGenerator) -> None:
    cands = [f"{n} thỏa thuận" for n in range(SCORE_SEQUENCES * 2 + 3)]
    scored = engine.score(PROMPT, cands)
    assert len(scored) == len(cands)
    best = max(range(len(cands)), key=lambda i: sum(scored[i]))
    assert cands[best] == "25 thỏa thuận"
    # The prompt's cache is intact afterwards: the same answer as before.
    assert "25" in engine.complete(PROMPT, max_tokens=20).text


def test_a_stored_passage_state_gives_the_answer_a_cold_read_gives(
    engine: LlamaCppGenerator, tmp_path: Path
) -> None:
    from rag.prompts import build_messages, prefix_messages
    from rag.types import Chunk, Passage

    def passage(text: str) -> Passage:
        chunk = Chunk(id=text[:8], source="a.txt", start=0, end=len(text), text=text, hash="h")
        return Passage(chunk=chunk, score=1.0, original_text=text)

    top = "Riêng chuyến thăm Mỹ, Thủ tướng đã chứng kiến 25 thỏa thuận được ký kết."
    other = "Hội nghị có 96 đại biểu tham dự."
    question = "Thủ tướng chứng kiến bao nhiêu thỏa thuận?"
    messages = build_messages(question, [passage(top), passage(other)], english=False, history=[])
    cold = engine.complete(messages, max_tokens=16)

    warm = LlamaCppGenerator(engine.model_path, n_ctx=2048, n_threads=2,
                             states_dir=tmp_path, states_max_bytes=200_000_000)  # fmt: skip
    try:
        prefix, tails = prefix_messages(top, english=False)
        report = warm.prepare_prefixes([prefix], tails=tails)
        assert (report.computed, report.skipped) == (1, 0) and report.bytes > 0
        again = warm.prepare_prefixes([prefix], tails=tails)
        assert (again.computed, again.kept) == (0, 1)  # incremental: unchanged, kept
        warm.complete([{"role": "user", "content": "xin chào"}], max_tokens=2)  # cache elsewhere
        got = warm.complete(messages, max_tokens=16)
        assert got.state_tokens > 40 and got.state_tokens < got.prompt_tokens
        assert got.text == cold.text and "25" in got.text
        # A new prompt template (or another passage) invalidates the old state.
        gone = warm.prepare_prefixes([prefix_messages(other, english=False)[0]], tails=tails)
        assert (gone.computed, gone.removed) == (1, 1)
        assert warm.complete(messages, max_tokens=16).state_tokens == 0
    finally:
        del warm


def test_a_full_store_keeps_the_passages_used_last(
    engine: LlamaCppGenerator, tmp_path: Path
) -> None:
    from rag.prompts import build_messages, prefix_messages
    from rag.types import Chunk, Passage

    def prompt(text: str) -> list:  # type: ignore[type-arg]
        chunk = Chunk(id="c", source="a.txt", start=0, end=len(text), text=text, hash="h")
        p = Passage(chunk=chunk, score=1.0, original_text=text)
        return build_messages("Bao nhiêu thỏa thuận?", [p], english=False, history=[])

    a = "Thủ tướng đã chứng kiến 25 thỏa thuận được ký kết trong chuyến thăm Mỹ."
    b = "Hội nghị có 96 đại biểu tham dự, bàn về ngoại giao kinh tế năm 2024."
    warm = LlamaCppGenerator(engine.model_path, n_ctx=2048, n_threads=2,
                             states_dir=tmp_path, states_max_bytes=1)  # fmt: skip
    prefix_a, tails = prefix_messages(a, english=False)
    prefix_b, _ = prefix_messages(b, english=False)
    try:
        assert warm.states is not None
        warm.states.max_bytes = 10**9
        warm.prepare_prefixes([prefix_a], tails=tails)
        warm.states.max_bytes = int(warm.states.usage() * 1.5)  # room for one state, not two
        report = warm.prepare_prefixes([prefix_a, prefix_b], tails=tails)
        assert (report.kept, report.skipped) == (1, 1) and report.messages  # full: said so
        assert warm.complete(prompt(b), max_tokens=4).state_tokens == 0  # b was skipped
        assert warm.remember_prefix(prefix_b, tails=tails)  # a, not used since, makes room
        warm.complete([{"role": "user", "content": "xin chào"}], max_tokens=2)
        assert warm.complete(prompt(b), max_tokens=4).state_tokens > 0
        warm.complete([{"role": "user", "content": "xin chào"}], max_tokens=2)
        assert warm.complete(prompt(a), max_tokens=4).state_tokens == 0
    finally:
        del warm


def test_contrast_decoding_prefers_what_the_evidence_makes_likelier() -> None:
    # Three tokens: 0 is likeliest with evidence and without (the model's prior), 1 is what the
    # evidence raised, 2 is implausible with evidence however much it rose.
    with_evidence = np.log(np.array([0.5, 0.4, 0.01]))
    without = np.log(np.array([0.8, 0.05, 0.0001]))
    assert int(_contrasted(with_evidence, without, 0.0).argmax()) == 0
    got = _contrasted(with_evidence, without, 0.5)
    assert int(got.argmax()) == 1 and got[2] == -np.inf


def test_contrast_with_the_request_itself_is_plain_decoding(engine: LlamaCppGenerator) -> None:
    plain = engine.complete(PROMPT, max_tokens=20)
    same = engine.complete(PROMPT, max_tokens=20, contrast=PROMPT, alpha=0.5)
    assert same.text == plain.text and same.finished
    assert (
        max(abs(a - b) for a, b in zip(same.token_logprobs, plain.token_logprobs, strict=True))
        < 0.1
    )
    # Against the question alone: the second sequence is freed, the cache is intact after.
    bare = [PROMPT[0], {"role": "user", "content": "Câu hỏi: Thủ tướng chứng kiến bao nhiêu?"}]
    contrasted = engine.complete(PROMPT, max_tokens=20, contrast=bare, alpha=1.0)
    assert "25" in contrasted.text
    assert engine.complete(PROMPT, max_tokens=20).text == plain.text


@pytest.mark.parametrize(
    ("info", "why"),
    [
        ("CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |", "AMX"),
        ("CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |", "AVX-512"),
        ("CPU : AVX = 1 | AVX2 = 1 | FMA = 1 | REPACK = 1 |", "AVX2"),
    ],
)
def test_extra_buffers_are_off_unless_asked_for(info: str, why: str) -> None:
    on, reason = use_extra_buffers("auto", info)
    assert not on and why in reason
    assert use_extra_buffers("on", info)[0] and not use_extra_buffers("off", info)[0]
