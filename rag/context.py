"""Choose what the answer model reads: the fewest, best sentences that fit a character budget.

Prompt reading dominates the wait for the first token on a CPU (about 85 tokens/s for the
1.5B model, about 3.5 characters per token in Vietnamese), so every passage is cut down to a
window of consecutive sentences around the ones that best match the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from itertools import pairwise

from rag.text import fold, normalize_numbers, words
from rag.types import Passage

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")


def sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of ``text`` (split at end punctuation and line breaks)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _terms(text: str) -> set[str]:
    toks = [fold(w) for w in words(normalize_numbers(text))]
    return set(toks) | {f"{a}_{b}" for a, b in pairwise(toks)}


#: Gives each sentence its similarity to the question (cosine of embeddings), or None.
SentenceScorer = Callable[[list[str]], list[float]]


def trim(
    passage: Passage,
    question_terms: set[str],
    budget: int,
    similarity: SentenceScorer | None = None,
) -> Passage:
    """Keep the window of consecutive sentences (≤ budget chars) that matches the question best:
    shared words (as a share of the question's) plus, with ``similarity``, each sentence's
    embedding similarity to the question — which also finds the sentence an English question
    asks about in a Vietnamese passage, where no word is shared."""
    text = passage.chunk.text
    if len(text) <= budget:
        return passage
    spans = sentences(text)
    if not spans:
        return passage
    n_terms = max(1, len(question_terms))
    scores = [len(question_terms & _terms(text[s:e])) / n_terms for s, e in spans]
    if similarity is not None:
        sims = similarity([text[s:e] for s, e in spans])
        scores = [a + b for a, b in zip(scores, sims, strict=True)]
    best_window = (0, 0)
    best_score = -1.0
    for i in range(len(spans)):
        j = i
        while j + 1 < len(spans) and spans[j + 1][1] - spans[i][0] <= budget:
            j += 1
        if spans[j][1] - spans[i][0] > budget and j == i:
            # A single sentence longer than the budget: keep its head.
            window_score = scores[i]
        else:
            window_score = sum(scores[i : j + 1])
        # Earlier windows win ties: the start of a passage usually carries its subject.
        if window_score > best_score:
            best_score, best_window = window_score, (i, j)
    i, j = best_window
    s, e = spans[i][0], min(spans[j][1], spans[i][0] + budget)
    return replace(passage, chunk=replace(passage.chunk, text=text[s:e]))


def select(
    passages: list[Passage],
    question: str,
    *,
    k: int,
    budget: int,
    similarity: SentenceScorer | None = None,
) -> list[Passage]:
    """The first ``k`` passages, each trimmed to its share of ``budget`` characters."""
    chosen = passages[:k]
    if not chosen:
        return []
    terms = _terms(question)
    share = budget // len(chosen)
    return [trim(p, terms, share, similarity) for p in chosen]
