"""Pure metric functions for the evaluation: normalisation, answer, retrieval, citation, speed."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rag.text import nfc

Alternatives = Sequence[Sequence[str]]

_PUNCT = str.maketrans(
    {
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2018": "'", "\u2019": "'",
    }
)  # fmt: skip
_MARKER = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")
_SPACE = re.compile(r"\s+")
# Thousands separators only: a plain space is left alone because "năm 2022 100 container"
# would otherwise fuse into one number.
_THOUSANDS = re.compile(r"(?<=\d)[.,\u00a0\u202f](?=\d{3}(?!\d))")
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_HYPHEN = re.compile(r"\s*-\s*")
_WORD = re.compile(r"\w+", re.UNICODE)


# --- normalisation ---------------------------------------------------------------------------
def strip_markers(text: str) -> str:
    """Drop the [n] citation markers, which are not part of what the answer says."""
    return _MARKER.sub(" ", text)


def normalize(text: str) -> str:
    """NFC, lower case, one kind of dash and quote, single spaces, and one number format.

    "1.000", "1,000" and "1000" all become "1000"; a decimal comma becomes a point ("2,5" ->
    "2.5"); "đột phá – mở đường" and "đột phá-mở đường" compare equal.
    """
    t = _SPACE.sub(" ", nfc(text).translate(_PUNCT).lower())
    t = _THOUSANDS.sub("", t)
    t = _DECIMAL_COMMA.sub(".", t)
    t = _HYPHEN.sub("-", t)
    return t.strip()


def tokens(text: str) -> list[str]:
    """Syllable tokens of an answer (markers dropped, normalised), for token F1."""
    return _WORD.findall(normalize(strip_markers(text)))


def contains(text: str, required: str) -> bool:
    """``required`` occurs in ``text`` after normalisation.

    A required string that starts or ends with a digit must not continue a longer number there,
    so "25" is not found in "2025" and "10" not in "100"; letters match as plain substrings
    (the gold relies on "Dominican" matching "Dominicana").
    """
    needle = normalize(required)
    if not needle:
        return False
    hay = normalize(text)
    before = r"(?<!\d)(?<!\d[.,])" if needle[0].isdigit() else ""
    after = r"(?!\d)(?![.,]\d)" if needle[-1].isdigit() else ""
    return re.search(before + re.escape(needle) + after, hay) is not None


def contains_all(text: str, alternative: Sequence[str]) -> bool:
    return bool(alternative) and all(contains(text, s) for s in alternative)


# --- answers ---------------------------------------------------------------------------------
def answer_correct(answer_text: str, alternatives: Alternatives) -> bool:
    """The answer holds every required string of at least one alternative."""
    text = strip_markers(answer_text)
    return any(contains_all(text, alt) for alt in alternatives)


def item_correct(answer_text: str, abstained: bool, alternatives: Alternatives) -> bool:
    """Correctness of one item: an unanswerable one (no alternatives) is right when the service
    abstained; an answerable one is right when it answered and the answer is correct."""
    if not alternatives:
        return abstained
    return not abstained and answer_correct(answer_text, alternatives)


def token_f1(answer_text: str, alternatives: Alternatives) -> float:
    """Syllable-level F1 against the best alternative (its strings joined), SQuAD style."""
    pred = Counter(tokens(answer_text))
    best = 0.0
    for alt in alternatives:
        gold = Counter(tokens(" ".join(alt)))
        common = sum((pred & gold).values())
        if common:
            p = common / sum(pred.values())
            r = common / sum(gold.values())
            best = max(best, 2 * p * r / (p + r))
    return best


# --- retrieval -------------------------------------------------------------------------------
def file_hit_at_k(ranked_sources: Sequence[str], gold_sources: Collection[str], k: int) -> bool:
    """A passage from a gold file is among the first ``k`` passages (k counts passages)."""
    return any(s in gold_sources for s in ranked_sources[:k])


def reciprocal_rank(
    ranked_sources: Sequence[str], gold_sources: Collection[str], k: int = 10
) -> float:
    """1/rank of the first passage from a gold file within the first ``k``, else 0 (MRR@k)."""
    for rank, s in enumerate(ranked_sources[:k], 1):
        if s in gold_sources:
            return 1.0 / rank
    return 0.0


def answer_bearing(
    source: str, text: str, alternatives: Alternatives, gold_sources: Collection[str]
) -> bool:
    """The passage comes from a gold file and alone holds every string of some alternative.

    The source check keeps a short answer ("27", a name) that happens to occur in an unrelated
    article from counting as evidence.
    """
    return source in gold_sources and any(contains_all(text, alt) for alt in alternatives)


def passage_hit_at_k(
    passages: Sequence[tuple[str, str]],
    alternatives: Alternatives,
    gold_sources: Collection[str],
    k: int,
) -> bool:
    """The first ``k`` passages (source, text) hold the answer: every string of some alternative
    sits in one of them that comes from a gold file.

    For a one-string answer this is "an answer-bearing passage is in the top k"; a list answer
    split over two chunks, or a multi-document answer, counts when all its parts were retrieved.
    """
    texts = [t for s, t in passages[:k] if s in gold_sources]
    return supported(texts, alternatives)


# --- citations -------------------------------------------------------------------------------
def citation_precision(cited_sources: Sequence[str], gold_sources: Collection[str]) -> float | None:
    """Share of the distinct cited files that are gold files; None when nothing is cited."""
    cited = set(cited_sources)
    if not cited:
        return None
    return len(cited & set(gold_sources)) / len(cited)


def citation_recall(cited_sources: Sequence[str], gold_sources: Collection[str]) -> float | None:
    """Share of the gold files that are cited; None when there are no gold files."""
    gold = set(gold_sources)
    if not gold:
        return None
    return len(gold & set(cited_sources)) / len(gold)


def supported(cited_texts: Sequence[str], alternatives: Alternatives) -> bool:
    """The cited passages hold the answer: every string of some alternative is in one of them.

    Strings may come from different cited passages, since a list answer can straddle a chunk
    boundary; each string must sit whole inside one passage.
    """
    return any(
        bool(alt) and all(any(contains(t, s) for t in cited_texts) for s in alt)
        for alt in alternatives
    )


# --- abstention ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PRF:
    precision: float | None
    recall: float | None
    f1: float | None


def prf(predicted: Sequence[bool], gold: Sequence[bool]) -> PRF:
    """Precision, recall and F1 of the positive class; a ratio with a zero denominator is None."""
    if len(predicted) != len(gold):
        raise ValueError("predicted and gold differ in length")
    tp = sum(p and g for p, g in zip(predicted, gold, strict=True))
    fp = sum(p and not g for p, g in zip(predicted, gold, strict=True))
    fn = sum(g and not p for p, g in zip(predicted, gold, strict=True))
    return PRF(
        precision=tp / (tp + fp) if tp + fp else None,
        recall=tp / (tp + fn) if tp + fn else None,
        # 2tp/(2tp+fp+fn) equals 2PR/(P+R) and stays defined (0) when one side is empty.
        f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    )


# --- aggregation and speed -------------------------------------------------------------------
def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None when there are none."""
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def percentile(values: Sequence[float | None], q: float) -> float | None:
    """The q-th percentile (0-100) of the defined values, interpolated linearly like numpy."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def decode_tokens(generated_tokens: int, first_token_ms: float | None, total_ms: float) -> float:
    """Tokens produced after the first one (the first token's time is prompt processing)."""
    if first_token_ms is None or generated_tokens < 2 or total_ms <= first_token_ms:
        return 0.0
    return float(generated_tokens - 1)


def decode_seconds(generated_tokens: int, first_token_ms: float | None, total_ms: float) -> float:
    if not decode_tokens(generated_tokens, first_token_ms, total_ms):
        return 0.0
    assert first_token_ms is not None
    return (total_ms - first_token_ms) / 1000


def tokens_per_second(
    timings: Sequence[tuple[int, float | None, float]],
) -> float | None:
    """Decoding speed over many answers (generated_tokens, first_token_ms, total_ms): all tokens
    after the first divided by all the time after the first token, so long answers weigh more
    than a mean of per-answer rates would let them."""
    toks = sum(decode_tokens(*t) for t in timings)
    secs = sum(decode_seconds(*t) for t in timings)
    return toks / secs if secs > 0 else None
