"""Probe (issue 12): how well are diacritics restored, and does the emission term help?

The gold set's Vietnamese questions typed with diacritics (not the English ones that name a
Vietnamese person, which the service does not restore) are folded ("chỉ thị" -> "chi thi")
and restored by ``rag/diacritics.py`` trained on the indexed articles; the score is the share
of syllables (and of whole questions) spelled as typed, against the accented original. No
model runs (seconds). Variants: ``emit`` weights the term log P(form | folded syllable) of the
Viterbi path (1: as shipped; 0: the path's bigram likelihood alone, the HMM whose emission is
deterministic), ``back_off`` the unigram back-off of unseen pairs, ``general prior`` the weight
of wordfreq's general Vietnamese syllable frequencies against the corpus (0: the corpus alone).

Usage from the repo root: ``.venv/bin/python eval/probes/restorer_accuracy.py dev`` (or test).
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, split_items  # eval/probes/ (the script's folder)

from rag.diacritics import DiacriticRestorer, general_vietnamese
from rag.index import IndexStore
from rag.settings import Settings
from rag.text import fold, has_vietnamese_marks, looks_english, nfc

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
settings = Settings()
index = IndexStore(ROOT / settings.index_dir).load()
texts = [c.text for c in index.chunks]
questions = [
    nfc(g.question)
    for g in split_items(split)
    if has_vietnamese_marks(g.question) and not looks_english(g.question)  # as the service
]
SYL = re.compile(r"\w+")
GENERAL = general_vietnamese()
GRID = [(1.0, 0.1, 0.0), (0.5, 0.1, 0.0), (0.0, 0.1, 0.0), (1.0, 1.0, 0.0)]
GRID += [(1.0, 0.1, w) for w in (0.01, 0.03, 0.1, 0.3, 1.0)]
print(f"{split}: {len(questions)} accented questions, "
      f"{sum(len(SYL.findall(q)) for q in questions)} syllables")  # fmt: skip
print("| emit | back_off | general prior | syllables right | questions exact |")
print("|---:|---:|---:|---:|---:|")
for emit, back_off, w in GRID:
    r = DiacriticRestorer(texts, emit=emit, back_off=back_off, prior=GENERAL, prior_weight=w)
    syl = ok = exact = 0
    for q in questions:
        want = SYL.findall(q.lower())
        got = SYL.findall(r.restore(fold(q)).lower())
        syl += len(want)
        ok += sum(a == b for a, b in zip(want, got, strict=True))
        exact += want == got
    right = f"{ok / syl:.3f} ({ok}/{syl})"
    print(f"| {emit:g} | {back_off:g} | {w:g} | {right} | {exact}/{len(questions)} |")
