"""Put the diacritics back on a question typed without them, from the corpus's own text.

People type Vietnamese without accents ("chi thi 15 ban hanh ngay nao"); retrieval copes (BM25
runs on folded syllables), but a small answer model reads such a question badly. Every folded
syllable has few spellings in the articles, and the neighbouring syllable picks among them:
a bigram model of the indexed text, decoded with Viterbi, restores "chỉ thị 15 ban hành ngày
nào". The spellings of syllables the articles never use ("khoang" -> "khoảng") come from the
syllable frequencies of general Vietnamese text (``wordfreq``), weighted against the corpus;
a syllable neither knows stays as typed. Nothing here is a list of words written for this:
the counts come from whatever corpus is indexed and from wordfreq's general-language list.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from itertools import pairwise

from rag.text import fold, has_vietnamese_marks, nfc

_TOKEN = re.compile(r"\w+|\W+", re.UNICODE)
#: News text rarely asks questions, so the interrogative words a question needs are added as
#: a small prior of general Vietnamese (not taken from any gold question).
QUESTION_PRIOR = (
    "bao nhiêu người? có bao nhiêu? là bao nhiêu? nước nào? năm nào? ngày nào? ai? là ai? "
    "ở đâu? tại đâu? là gì? những gì? gì? khi nào? bao giờ? như thế nào? thế nào? vì sao? "
    "tại sao? có phải không? mấy? bao lâu? những nước nào? những ai? điều gì? việc gì? "
) * 5


#: The general syllable frequencies' weight against the corpus (pseudo-counts worth 0.3 times its
#: running text): chosen on the gold set's dev questions, folded and restored (syllables right
#: 0.943 -> 0.959; test, not used to choose: 0.943 -> 0.956) — eval/probes/restorer_accuracy.py.
GENERAL_WEIGHT = 0.3


def general_vietnamese() -> dict[str, float]:
    """Each syllable's share of general Vietnamese text (wordfreq's list, about 10,700)."""
    import wordfreq

    return dict(wordfreq.get_frequency_dict("vi"))


class DiacriticRestorer:
    def __init__(
        self,
        texts: Iterable[str],
        *,
        emit: float = 1.0,
        back_off: float = 0.1,
        prior: Mapping[str, float] | None = None,
        prior_weight: float = 0.0,
    ) -> None:
        self.emit = emit
        self.back_off = back_off
        self.uni: Counter[str] = Counter()
        self.bi: Counter[tuple[str, str]] = Counter()
        self.forms: dict[str, Counter[str]] = defaultdict(Counter)
        for text in [*texts, QUESTION_PRIOR]:
            prev = ""
            for tok in re.findall(r"\w+|[.!?;:,\n]", nfc(text).lower()):
                if not tok[0].isalnum():
                    prev = ""
                    continue
                self.uni[tok] += 1
                self.forms[fold(tok)][tok] += 1
                if prev:
                    self.bi[(prev, tok)] += 1
                prev = tok
        self.total = sum(self.uni.values()) or 1
        # General Vietnamese syllable frequencies (``prior``: word -> share of running text)
        # as pseudo-counts worth ``prior_weight`` times the corpus: spellings for syllables
        # the articles never use, and a general-language pull where they use few.
        self.general: dict[str, float] = {}
        if prior and prior_weight > 0:
            for word, share in prior.items():
                w = nfc(word).lower()
                if w.isalpha():
                    count = prior_weight * share * self.total
                    self.general[w] = self.general.get(w, 0.0) + count
                    self.forms[fold(w)][w] += count  # type: ignore[assignment]

    def _log_emit(self, form: str, folded: str) -> float:
        counts = self.forms[folded]
        return self.emit * math.log(counts[form] / sum(counts.values()))

    def _log_trans(self, prev: str, form: str) -> float:
        # Add-k smoothing with a unigram back-off: an unseen pair costs, but does not forbid.
        back_off = self.back_off * (self.uni[form] + self.general.get(form, 0.0)) / self.total
        return math.log((self.bi[(prev, form)] + back_off) / (self.uni[prev] + 1))

    def restore(self, text: str) -> str:
        """``text`` with its unaccented syllables spelled as the corpus spells them; a text
        that already has Vietnamese marks is returned unchanged."""
        if has_vietnamese_marks(text) or not self.uni:
            return text
        parts = _TOKEN.findall(text)
        out = list(parts)
        # Runs of word tokens separated only by spaces are decoded together.
        run: list[int] = []
        for i, part in enumerate([*parts, "."]):
            is_word = part[:1].isalnum() or part[:1] == "_"
            if is_word and part.isascii() and fold(part.lower()) in self.forms:
                run.append(i)
                continue
            if i < len(parts) and part.strip() == "" and "\n" not in part:
                continue  # plain spaces keep a run together
            if run:
                self._decode(parts, out, run)
                run = []
        return "".join(out)

    def _decode(self, parts: list[str], out: list[str], run: list[int]) -> None:
        # Split the run where something other than plain space separates two words.
        groups: list[list[int]] = [[run[0]]]
        for a, b in pairwise(run):
            gap = "".join(parts[a + 1 : b])
            if b == a + 2 and gap.strip() == "":
                groups[-1].append(b)
            else:
                groups.append([b])
        for group in groups:
            tokens = [parts[i] for i in group]
            best = self._viterbi([t.lower() for t in tokens])
            for i, tok, form in zip(group, tokens, best, strict=True):
                out[i] = _same_case(tok, form)

    def _viterbi(self, tokens: list[str]) -> list[str]:
        folded = [fold(t) for t in tokens]
        cands = [list(self.forms[f]) for f in folded]
        scores = {c: self._log_emit(c, folded[0]) for c in cands[0]}
        back: list[dict[str, str]] = []
        for i in range(1, len(tokens)):
            nxt: dict[str, float] = {}
            ptr: dict[str, str] = {}
            for c in cands[i]:
                emit = self._log_emit(c, folded[i])
                p, s = max(((p, s + self._log_trans(p, c)) for p, s in scores.items()),
                           key=lambda x: x[1])  # fmt: skip
                nxt[c], ptr[c] = s + emit, p
            scores = nxt
            back.append(ptr)
        last = max(scores, key=lambda c: scores[c])
        path = [last]
        for ptr in reversed(back):
            path.append(ptr[path[-1]])
        return path[::-1]


def _same_case(typed: str, form: str) -> str:
    if typed.isupper() and len(typed) > 1:
        return form.upper()
    if typed[:1].isupper():
        return form[:1].upper() + form[1:]
    return form
