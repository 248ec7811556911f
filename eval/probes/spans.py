"""Probe helper (issue 12): candidate answers taken from the evidence itself, the spans a short
answer usually is. Measured and not adopted (eval/reports/tried/candidate-spans.md).

``candidate_scores.py`` scores each candidate as a complete reply after the prompt
(``Generator.score``), beside the model's own free draft; ``candidate_rules.py`` compares
answering with the one the model finds most likely against the draft. A span is copied from
an evidence sentence, so its number or name is the article's, and its citation is the sentence
it came from.

Kinds of span, all found by their shape, none by a word list about the question:

- numbers and dates as written (``25``, ``3,5``, ``20/12``, ``10/8/2022``), alone and with the
  one or two words that follow them (``25 thỏa thuận``, ``14 triệu liều``);
- runs of capitalised words (``Phạm Minh Chính``, ``ASEAN``, ``Covid-19``, ``Italy``), a
  sentence's first word only when the run goes on past it;
- quoted text (``"Made in Vietnam"``) and what follows a colon up to the sentence end (the
  items of a list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A candidate longer than this (characters) is not a span but a sentence; the draft covers it.
MAX_CHARS = 120
#: At most this many candidates per question (scoring cost grows with their tokens).
MAX_CANDIDATES = 48

_TOKEN = re.compile(r"[\w][\w./%,-]*[\w%]|[\w]|[^\w\s]")
_NUMBER = re.compile(r"^\d[\d.,/]*%?$")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
_WORD = re.compile(r"^\w+$")


@dataclass(frozen=True)
class Candidate:
    """A span of evidence item ``item`` (1-based, as numbered in the prompt)."""

    text: str
    item: int
    kind: str  # "number", "name", "quote", "list"


def _spans(text: str) -> list[tuple[str, str]]:
    toks = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    out: list[tuple[str, str]] = []
    # Numbers, alone and with the one or two plain words after them.
    for i, (tok, s, _e) in enumerate(toks):
        if not _NUMBER.match(tok):
            continue
        tok = tok.rstrip(".,")
        out.append(("number", tok))
        tail = []
        for nxt, _, ne in toks[i + 1 : i + 3]:
            if not _WORD.match(nxt):
                break
            tail.append(ne)
        if tail:
            out.append(("number", text[s : tail[-1]]))
            if len(tail) == 2:
                out.append(("number", text[s : tail[0]]))
    # Runs of capitalised words (a hyphenated or digit-bearing word such as Covid-19 counts).
    run: list[tuple[str, int, int]] = []
    for word, s, e in [*toks, ("", len(text), len(text))]:
        cap = bool(word) and word[0].isalpha() and word[0].isupper()
        if cap:
            run.append((word, s, e))
            continue
        if run:
            first = run[0][1]
            at_start = first == 0 or text[:first].rstrip()[-1:] in ".!?:\n"
            if not (at_start and len(run) == 1):
                out.append(("name", text[first : run[-1][2]]))
            elif at_start and len(run) > 1:
                out.append(("name", text[run[1][1] : run[-1][2]]))
            run = []
    for m in _QUOTED.finditer(text):
        out.append(("quote", m.group(1).strip()))
    if ":" in text:
        tail = text.split(":", 1)[1].strip().rstrip(".;")
        if 2 < len(tail) <= MAX_CHARS:
            out.append(("list", tail))
    return out


def candidates(items: list[str], question: str) -> list[Candidate]:
    """The spans of ``items`` (the evidence texts, in prompt order) worth scoring as answers:
    each once (its first item), none the question already says, best items first."""
    asked = f" {' '.join(m.group() for m in _TOKEN.finditer(question.casefold()))} "
    seen: set[str] = set()
    out: list[Candidate] = []
    for n, text in enumerate(items, 1):
        for kind, span in _spans(text):
            span = span.strip(" ,;.-–")
            key = span.casefold()
            spaced = f" {' '.join(m.group() for m in _TOKEN.finditer(key))} "
            if not span or key in seen or len(span) > MAX_CHARS or spaced in asked:
                continue
            seen.add(key)
            out.append(Candidate(span, n, kind))
    return out[:MAX_CANDIDATES]
