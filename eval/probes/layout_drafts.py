"""Probe (issues 12 and 13): does the passage-state layout lose answers?

Layout "whole top passage first": item [1] is the top retrieved passage whole (the prefix a
per-passage state would hold: instructions + [1]), then the best sentences of the other
retrieved passages (``evidence_sentences`` over passages 2..k, ``budget`` characters), then the
question — read fresh. Compared with the shipped reader's evidence (best sentences of all
passages, ``v0`` from ``out_<split>.jsonl`` of the quote probe on branch try/quote-then-answer,
same retrieval and code). Per question: the greedy draft, whether it holds the gold strings,
whether any item holds them, prompt / prefix / fresh token counts.

Usage from the repo root: ``.venv/bin/python eval/probes/layout_drafts.py dev [budget]``;
appends to ``eval/probes/layout_<split>_<budget>.jsonl`` and resumes.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common import resumable, split_items  # eval/probes/ (the script's folder is on the path)

from rag.context import evidence_sentences
from rag.evaluation.metrics import answer_correct
from rag.generation.factory import local_engine
from rag.prompts import build_messages
from rag.service import RAG, _narrow
from rag.settings import Settings
from rag.text import looks_english

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
budget = int(sys.argv[2]) if len(sys.argv) > 2 else 500
root = Path(__file__).resolve().parents[2]
path = root / f"eval/probes/layout_{split}_{budget}.jsonl"
done, out = resumable(path)
s = Settings()
rag = RAG.from_settings(s)
gen = local_engine(s.model_dump())
items = split_items(split)

for g in items:
    if g.id in done:
        continue
    q = g.question
    english = looks_english(q)
    passages = rag.retrieve(q, s.top_k)
    q_read = q if english else rag.restorer().restore(q)
    rest = evidence_sentences(
        passages[1:], q_read, budget=budget, max_sentences=max(1, s.context_sentences - 2),
        similarity=rag._sentence_similarity(q_read),
    )
    ctx = [passages[0]] + [_narrow(p) for p in rest]
    msgs = build_messages(q_read, ctx, english=english, history=[])
    prompt = gen._prompt_tokens(msgs)
    prefix_msgs = [msgs[0], {"role": "user", "content": msgs[1]["content"].split("\n\n[2]\n")[0]}]
    pre = gen._prompt_tokens(prefix_msgs)
    n = 0
    while n < min(len(pre), len(prompt)) and pre[n] == prompt[n]:
        n += 1
    t0 = time.perf_counter()
    c = gen.complete(msgs, max_tokens=96, temperature=0.0)
    rec = {
        "id": g.id, "type": g.type, "answerable": g.answerable, "n_ctx": len(ctx),
        "draft": c.text.strip(), "prompt_tokens": len(prompt), "prefix_tokens": n,
        "fresh_tokens": len(prompt) - n, "ms": (time.perf_counter() - t0) * 1000,
        "chars": sum(len(p.chunk.text) for p in ctx),
    }
    if g.answerable:
        rec["ok"] = answer_correct(rec["draft"], g.answers)
        rec["any_has"] = any(answer_correct(p.chunk.text, g.answers) for p in ctx)
    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    out.flush()
    print(g.id, rec.get("ok"), rec.get("any_has"), rec["fresh_tokens"], round(rec["ms"]), flush=True)
