"""Probe (issue 12): do worked examples in the prompt give better drafts?

Runs the service itself (``RAG.ask``: its retrieval, evidence, prompt, reader and current
calibration) on one gold split with the settings of the environment (``RAG_PROMPT_EXAMPLES=1``
for the worked examples) and writes per question the draft, whether it holds the gold strings,
the confidence, the decision and the prompt's token counts. ``prompt_summary.py`` compares a
run with the drafts of the committed evaluation report (same retrieval, same greedy decoding).

Usage from the repo root: ``RAG_PROMPT_EXAMPLES=1 .venv/bin/python eval/probes/prompt_drafts.py
dev examples``; a third argument keeps the question types (``english``) or ids (``q073``) it names; appends
to ``eval/probes/prompt_<name>_<split>.jsonl`` and resumes. ``PROBE_SYSTEM_VI=<file>``
replaces the instructions of Vietnamese questions (``rag.prompts.SYSTEM_VI``) with the file's
text for this run. ``RAG_CONTRAST_ALPHA=0.5`` (a setting) drafts by context-aware decoding
(``eval/reports/tried/contrast-decoding.md``). ``PROBE_NEIGHBOURS=<chars>`` gives each
evidence item the sentence before it in its passage as well (best items first, while the added
text stays within ``<chars>``): the same best sentences, with their context.
``RAG_EVIDENCE_ORDER=best-match-first`` (a setting) ranks the evidence items by their best
sentence's match to the question. ``PROBE_AS_QUESTION=1`` gives the model the question written as
one (first letter capitalised, a "?" where it ends without punctuation), as people type them
without both.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, resumable, split_items  # eval/probes/ (the script's folder)

from rag import prompts
from rag.evaluation.metrics import answer_correct
from rag.service import RAG
from rag.settings import Settings

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
name = sys.argv[2] if len(sys.argv) > 2 else "examples"
types = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else None  # e.g. "english"
path = ROOT / f"eval/probes/prompt_{name}_{split}.jsonl"
if os.environ.get("PROBE_NEIGHBOURS"):
    from neighbours import with_neighbours  # eval/probes/neighbours.py

    import rag.service

    rag.service.evidence_sentences = with_neighbours(  # type: ignore[assignment]
        rag.service.evidence_sentences, int(os.environ["PROBE_NEIGHBOURS"])
    )
if os.environ.get("PROBE_AS_QUESTION"):
    import rag.service

    def as_question(text: str) -> str:
        t = text.strip()
        t = t[:1].upper() + t[1:]
        return t if not t or t[-1] in ".?!…" else t + "?"

    _build = rag.service.build_messages
    rag.service.build_messages = lambda q, *a, **k: _build(as_question(q), *a, **k)  # type: ignore[assignment]
if os.environ.get("PROBE_SYSTEM_VI"):
    prompts.SYSTEM_VI = Path(os.environ["PROBE_SYSTEM_VI"]).read_text("utf-8").strip()
done, out = resumable(path)
rag = RAG.from_settings(Settings())
for g in split_items(split):
    if g.id in done or (types and g.type not in types and g.id not in types):
        continue
    a = rag.ask(g.question)
    trace = a.reader or {}
    draft = str(trace.get("draft", ""))
    row = {
        "id": g.id,
        "type": g.type,
        "answerable": g.answerable,
        "draft": draft,
        "draft_correct": bool(g.answers) and answer_correct(draft, g.answers),
        "answer": a.answer,
        "abstained": a.abstained,
        "correct": (
            a.abstained
            if not g.answers
            else (not a.abstained and answer_correct(a.answer, g.answers))
        ),
        "confidence": a.confidence,
        "signals": trace.get("signals", {}),
        "question_read": trace.get("question_read", g.question),
        "sources_found": [c.source for c in a.passages],
        "prompt_tokens": a.timings_ms.prompt_tokens,
        "first_token_ms": a.timings_ms.first_token,
    }
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    print(g.id, row["draft_correct"], draft[:80], flush=True)
rag.close()
