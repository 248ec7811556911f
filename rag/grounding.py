"""Check an answer against the passages it cites: markers, support and abstention."""

from __future__ import annotations

import re

from rag.text import fold, normalize_numbers, words
from rag.types import Passage

_MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_ABSTAIN = (
    "khong tim thay", "khong co thong tin", "khong duoc de cap", "khong neu", "not found",
    "no information", "do not contain", "does not contain", "not mentioned",
)  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def markers(text: str) -> list[int]:
    out: list[int] = []
    for group in _MARKER.findall(text):
        out.extend(int(x) for x in re.split(r"\s*[,;]\s*", group))
    return out


def is_abstention(answer: str) -> bool:
    """The model said the passages do not hold the answer (and did not also answer)."""
    folded = fold(answer)
    hit = any(p in folded for p in _ABSTAIN)
    if not hit:
        return not answer.strip()
    return not markers(answer) or any(folded.strip().startswith(p) for p in _ABSTAIN)


def numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(normalize_numbers(text)))


def support(claim: str, passage_text: str) -> float:
    """Share of the claim's numbers and syllables found in the passage (numbers weigh double)."""
    claim_nums = numbers(claim)
    pass_nums = numbers(passage_text)
    cw = {fold(w) for w in words(_MARKER.sub(" ", claim)) if not w.isdigit()}
    pw = {fold(w) for w in words(passage_text)}
    total = len(cw) + 2 * len(claim_nums)
    if total == 0:
        return 0.0
    got = len(cw & pw) + 2 * len(claim_nums & pass_nums)
    return got / total


def ground_answer(answer: str, context: list[Passage]) -> tuple[str, list[int]]:
    """Keep markers that point at real passages; when the answer has none, cite the passage
    that supports it best. Returns the answer text and the cited passage numbers."""
    valid = range(1, len(context) + 1)

    def fix(m: re.Match[str]) -> str:
        ns = [n for n in markers(m.group(0)) if n in valid]
        return "".join(f"[{n}]" for n in dict.fromkeys(ns))

    text = _MARKER.sub(fix, answer).strip()
    cited = list(dict.fromkeys(markers(text)))
    if not cited and context:
        scores = [support(text, p.chunk.text) for p in context]
        best = max(range(len(context)), key=lambda i: scores[i])
        cited = [best + 1]
        text = f"{text} [{best + 1}]"
    return text, sorted(cited)
