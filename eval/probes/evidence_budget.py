"""Probe (issue 12): how much evidence should the answer model read?

For each gold question of one split, the service's own retrieval and evidence selection
(``context.evidence_sentences``, the sentence similarity the service uses) at several budgets
(most sentences, characters): does the evidence hold the gold strings (the draft's ceiling),
and how long is it (the prompt the first token waits for)? No answer model runs here.

Usage from the repo root: ``.venv/bin/python eval/probes/evidence_budget.py dev``.
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import split_items  # eval/probes/ (the script's folder)

from rag.context import evidence_sentences
from rag.evaluation.metrics import answer_correct
from rag.service import RAG
from rag.settings import Settings
from rag.text import looks_english

BUDGETS = [(3, 500), (4, 700), (6, 1000), (8, 1400), (10, 1800), (12, 2400)]

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
rag = RAG.from_settings(Settings())
s = rag.settings
held = {b: 0 for b in BUDGETS}
chars: dict[tuple[int, int], list[int]] = {b: [] for b in BUDGETS}
n = 0
for g in split_items(split):
    if not g.answerable:
        continue
    n += 1
    english = looks_english(g.question)
    q_read = g.question if english else rag.restorer().restore(g.question)
    passages = rag.retrieve(g.question, s.top_k, None)
    similarity = rag._sentence_similarity(q_read)
    for b in BUDGETS:
        picked = evidence_sentences(
            passages, q_read, budget=b[1], max_sentences=b[0], similarity=similarity
        )
        text = "\n".join(p.chunk.text for p in picked)
        held[b] += answer_correct(text, g.answers)
        chars[b].append(len(text))
print(f"{split}: {n} answerable questions")
print("| most sentences | characters | gold strings in the evidence | evidence chars p50 |")
print("|---:|---:|---:|---:|")
for b in BUDGETS:
    print(
        f"| {b[0]} | {b[1]} | {held[b]} ({held[b] / n:.0%}) | {statistics.median(chars[b]):.0f} |"
    )
