"""Probe (issue 12): where in the evidence the draft comes from, as signals of its confidence.

For each record of ``candidate_scores.py`` (``rag.reader.evidence_position``): the evidence item
that supports the bare draft best (``grounding.support``), that item's embedding similarity to
the question and its rank among the items by that similarity, and the gap to the most similar
item. An answer read from a sentence
about something else (another trip's figure, another conference) sits in a low-ranked item.
No answer model runs here; the embedder does (sentence vectors, as the service computes them).

Usage: ``.venv/bin/python eval/probes/evidence_signals.py /tmp/cands_dev.jsonl`` (adds the
signals to each record, rewriting the file).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rag.reader import evidence_position
from rag.service import RAG
from rag.settings import Settings

path = Path(sys.argv[1])
rows = [json.loads(line) for line in path.open()]
rag = RAG.from_settings(Settings())
for r in rows:
    q_read = r["question"] if r["english"] else rag.restorer().restore(r["question"])
    sims = rag._sentence_similarity(q_read)(r["items"]) if r["items"] else []
    if not sims or not r["bare"]:
        continue
    r["ev"] = evidence_position(r["bare"], r["items"], sims)  # what the reader measures
path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
print(sum("ev" in r for r in rows), "of", len(rows))
