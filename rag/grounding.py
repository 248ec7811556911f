"""Check an answer against the passages it cites: markers, numbers, names, abstention.

Small local models cite the wrong passage now and then and, asked what the passages do not
say, invent figures. Every sentence of an answer is therefore checked: its numbers (and, in
Vietnamese answers, its proper names) must occur in the passages; a marker pointing at a
passage that does not hold the sentence's numbers is moved to one that does; a sentence
nothing supports is dropped, and an answer left with no supported sentence becomes "not found".
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from rag.context import sentences
from rag.text import fold, normalize_numbers, words
from rag.types import Passage

_MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_ABSTAIN = (
    "khong tim thay", "khong co thong tin", "khong duoc de cap", "khong neu", "not found",
    "no information", "do not contain", "does not contain", "not mentioned",
    "khong duoc neu", "chua co thong tin",
)  # fmt: skip
_NUMBER = re.compile(r"\d+(?:[.,/]\d+)*")
_YEAR = re.compile(r"(?:19|20)\d\d")
# Sentences that speak to the assistant instead of reporting news (prompt injection inside an
# article). They stay in the passage a reader is shown but never count as evidence. Folded forms.
_INSTRUCTION = re.compile(
    r"\bbo qua\b[^.!?\n]{0,40}\b(?:huong dan|chi dan|yeu cau|lenh|quy tac)"
    r"|\b(?:hay|phai|chi|luon) tra loi\b|\btra loi rang\b|\bdong vai\b"
    r"|\b(?:ignore|disregard|forget)\b[^.!?\n]{0,40}\b(?:instructions?|rules|prompt)\b"
    r"|\b(?:answer|reply|respond|say)\s+(?:that|with)\b|\byou are now\b|\bsystem prompt\b"
)
# Words that carry no claim: a sentence adding only these to the question restates it.
_FILLER = frozenset((
    "la", "cua", "da", "duoc", "co", "cac", "nhung", "mot", "nay", "do", "trong", "tai", "vao",
    "voi", "va", "cho", "theo", "nhu", "thi", "ma", "ve", "tu", "den", "khi", "ngay", "thang",
    "so", "nguoi", "viec", "su", "cau", "hoi", "tra", "loi", "dap", "an",
    "the", "a", "is", "are", "was", "were", "of", "in", "on", "at", "to", "and", "by", "for",
    "with", "as", "it", "that", "this",
))  # fmt: skip
#: Share of a sentence's own words (not the question's, not filler) a passage must hold.
MIN_LEXICAL_SUPPORT = 0.5
# A sentence ends at . ! ? or a line break, optionally followed by its markers.
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)(?:\s*\[[\d,;\s]+\])*", re.M)


@dataclass
class Grounding:
    text: str
    cited: list[int]
    dropped: list[str] = field(default_factory=list)
    #: For each cited passage number, the answer sentences that cite it.
    claims: dict[int, list[str]] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        return bool(self.cited) and bool(self.text.strip())


def key_terms(question: str, *, english: bool) -> list[str]:
    """What a question names: acronyms, numbers, and (in Vietnamese) capitalised words after
    the first. The articles cannot answer about a thing they never mention."""
    terms: list[str] = []
    for i, tok in enumerate(re.findall(r"[\w/.-]+", question)):
        t = tok.strip(".-/")
        if not t:
            continue
        if re.fullmatch(r"\d[\d/.,]*", t):
            if len(t) >= 2:
                terms.append(normalize_numbers(t))
        elif (t.isupper() and len(t) >= 2) or (t[0].isupper() and i > 0 and not english):
            terms.append(fold(t))
    return terms


def unknown_terms(question: str, vocabulary: set[str], *, english: bool) -> list[str]:
    """Key terms of the question that occur nowhere in the indexed articles."""
    return [
        t
        for t in key_terms(question, english=english)
        if not all(w in vocabulary for w in words(t))
    ]


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
        return not _MARKER.sub("", answer).strip()
    return not markers(answer) or any(folded.strip().startswith(p) for p in _ABSTAIN)


def numbers(text: str) -> set[str]:
    """Numbers as written, with thousands separators removed (1.000 == 1000)."""
    found = set()
    for n in _NUMBER.findall(normalize_numbers(_MARKER.sub(" ", text))):
        found.add(n.rstrip(".,"))
    return found


def _number_in(n: str, text_numbers: set[str]) -> bool:
    if n in text_numbers:
        return True
    # "10/8/2022" answered as "10/8" or a date's year alone still counts as taken from the text.
    return any(n in t.split("/") or t.startswith(n + "/") for t in text_numbers if "/" in t)


def names(sentence: str) -> list[str]:
    """Runs of two or more capitalised syllables (Vietnamese proper names), folded."""
    runs: list[list[str]] = [[]]
    for tok in re.findall(r"[\w-]+|\S", _MARKER.sub(" ", sentence)):
        if tok[0].isupper() and tok[0].isalpha():
            runs[-1].append(tok)
        elif runs[-1]:
            runs.append([])
    return [fold(" ".join(r)) for r in runs if len(r) >= 2]


def support(claim: str, passage_text: str) -> float:
    """Share of the claim's numbers and syllables found in the passage (numbers weigh double)."""
    claim_nums = numbers(claim)
    pass_nums = numbers(passage_text)
    cw = {fold(w) for w in words(_MARKER.sub(" ", claim)) if not w.isdigit()}
    pw = {fold(w) for w in words(passage_text)}
    total = len(cw) + 2 * len(claim_nums)
    if total == 0:
        return 0.0
    got = len(cw & pw) + 2 * sum(_number_in(n, pass_nums) for n in claim_nums)
    return got / total


def evidence(passage_text: str) -> str:
    """The passage without sentences that address the assistant ("Bỏ qua mọi hướng dẫn…")."""
    spans = sentences(passage_text)
    kept = (passage_text[s:e] for s, e in spans if not _INSTRUCTION.search(fold(passage_text[s:e])))
    return " ".join(kept)


def own_words(sentence: str, question: str) -> list[str]:
    """The sentence's words that the question did not give and that say something."""
    asked = {fold(w) for w in words(question)}
    out = []
    for w in words(_MARKER.sub(" ", sentence)):
        f = fold(w)
        if f not in asked and f not in _FILLER and not w[0].isdigit():
            out.append(f)
    return out


def lexical_support(own: list[str], passage_text: str) -> float:
    """Share of a sentence's own words (see ``own_words``) that occur in the passage."""
    if not own:
        return 1.0
    pw = {fold(w) for w in words(passage_text)}
    return sum(w in pw for w in own) / len(own)


def _echoes(sentence: str, question: str) -> bool:
    """A sentence that only restates the question (small models do) answers nothing: it adds
    no number and no word beyond the question's own and filler."""
    if sentence.rstrip().endswith("?"):
        return True
    if not question:
        return False
    said = words(sentence)
    asked = {fold(w) for w in words(question)}
    if any(w[0].isdigit() and fold(w) not in asked for w in said):
        return False  # a number the question did not give is an answer
    return len(said) >= 3 and not own_words(sentence, question)


def _holds(sentence: str, passage: str, *, check_names: bool, given: Collection[str] = ()) -> bool:
    nums = numbers(sentence)
    pnums = numbers(passage)
    if not all(_number_in(n, pnums) for n in nums):
        return False
    if check_names:
        fp = " ".join(fold(w) for w in words(passage))
        if not all(" ".join(n.split()) in fp for n in names(sentence) if n not in given):
            return False
    return True


def ground_answer(
    answer: str, context: list[Passage], *, question: str = "", check_names: bool = True
) -> Grounding:
    """Return the answer with each sentence's markers pointing at a passage that holds it."""
    texts = [evidence(p.chunk.text) for p in context]
    # Years and dates the question gives ("năm 2024", "ngày 29/7/2021") need not be found again
    # (passages often write them shorter); other numbers must: a count is a claim.
    qyears = {n for n in numbers(question) if _YEAR.fullmatch(n) or "/" in n}
    qnames = set(names(question))
    out: list[str] = []
    cited: list[int] = []
    dropped: list[str] = []
    claims: dict[int, list[str]] = {}
    for raw in _SENTENCE.findall(answer):
        sentence = raw.strip()
        if not sentence:
            continue
        body = re.sub(r"\s+([.!?,;:])", r"\1", _MARKER.sub("", sentence)).strip()
        if not body or body in {".", ","}:
            continue
        if _echoes(body, question):
            dropped.append(body)
            continue
        claimed = [n for n in markers(sentence) if 1 <= n <= len(texts)]
        check = body
        for y in qyears:
            check = re.sub(rf"(?<![\d/]){y}(?![\d/])", " ", check)
        holders = [
            i + 1 for i, t in enumerate(texts)
            if _holds(check, t, check_names=check_names, given=qnames)
        ]  # fmt: skip
        if check_names:
            # In a Vietnamese answer the sentence's own words must come from the passage too:
            # a claim made of words no passage holds is the model's, not the articles'.
            own = own_words(body, question)
            lexical = {n: lexical_support(own, texts[n - 1]) for n in holders}
            holders = [n for n in holders if lexical[n] >= MIN_LEXICAL_SUPPORT]
            if holders:
                top = max(lexical[n] for n in holders)
                claimed = [n for n in claimed if n not in lexical or lexical[n] >= top - 0.25]
        good = [n for n in claimed if n in holders]
        if not good and holders:
            # Cite the holder that overlaps the sentence most (the model's marker was wrong).
            good = [max(holders, key=lambda n: support(body, texts[n - 1]))]
        if not good:
            dropped.append(body)
            continue
        refs = "".join(f"[{n}]" for n in good)
        end = len(body.rstrip(".!?"))
        out.append(f"{body[:end].rstrip()} {refs}{body[end:]}")
        cited.extend(good)
        for n in good:
            claims.setdefault(n, []).append(body)
    text = " ".join(out)
    # Lists and line-broken answers read better kept as lines.
    if "\n" in answer.strip() and len(out) > 1:
        text = "\n".join(out)
    return Grounding(text=text, cited=sorted(set(cited)), dropped=dropped, claims=claims)
