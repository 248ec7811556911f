"""Probe (issue 12): search with the question as typed, or with its diacritics restored?

The service restores the diacritics of an unaccented question for what the model reads
(``rag/diacritics.py``) but searched with the question as typed. For each answerable gold
question of one split whose restoration changes it, the service's own retrieval and evidence
selection with each query: file hit@1, passage hit@1/3/5 (the evaluation's own metrics) and
whether the evidence sentences the model reads hold the gold strings (the draft's ceiling).
No answer model runs here (the embedder only; seconds).

Usage from the repo root: ``.venv/bin/python eval/probes/restored_search.py dev`` (or test).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import split_items  # eval/probes/ (the script's folder)

from rag.context import evidence_sentences
from rag.evaluation.metrics import answer_correct, file_hit_at_k, passage_hit_at_k
from rag.service import RAG
from rag.settings import Settings
from rag.text import looks_english

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
rag = RAG.from_settings(Settings())
s = rag.settings
WAYS = ("typed", "restored")
figures = {w: {"file@1": 0, "passage@1": 0, "passage@3": 0, "passage@5": 0, "evidence": 0}
           for w in WAYS}  # fmt: skip
n = changed = 0
for g in split_items(split):
    if not g.answerable or looks_english(g.question):
        continue
    q_read = rag.restorer().restore(g.question)
    if q_read == g.question:
        continue
    n += 1
    similarity = rag._sentence_similarity(q_read)
    rows = []
    for way, query in zip(WAYS, (g.question, q_read), strict=True):
        passages = rag.retrieve(query, s.top_k, None)
        pairs = [(p.chunk.source, p.chunk.text) for p in passages]
        f = figures[way]
        f["file@1"] += file_hit_at_k([p.chunk.source for p in passages], g.sources, 1)
        for k in (1, 3, 5):
            f[f"passage@{k}"] += passage_hit_at_k(pairs, g.answers, g.sources, k)
        picked = evidence_sentences(
            passages, q_read, budget=s.context_chars, max_sentences=s.context_sentences,
            similarity=similarity,
        )  # fmt: skip
        held = answer_correct("\n".join(p.chunk.text for p in picked), g.answers)
        f["evidence"] += held
        rows.append(held)
    changed += rows[0] != rows[1]
    if rows[0] != rows[1]:
        print(f"  {g.id}: evidence holds the answer typed={rows[0]} restored={rows[1]}  {q_read}")
print(f"{split}: {n} answerable unaccented questions; evidence changes for {changed}")
print("| search with | " + " | ".join(figures["typed"]) + " |")
print("|---|" + "---:|" * len(figures["typed"]))
for way in WAYS:
    print(f"| {way} | " + " | ".join(str(v) for v in figures[way].values()) + " |")
