"""Probe (issue 12): the model's likelihood of candidate spans of the evidence, beside its draft.

Per gold question (same retrieval, evidence and prompt as the service): the greedy draft with
its token log-probabilities, the "not found" reply scored, and every candidate of
``rag.candidates`` scored as a complete reply (its tokens, then end-of-turn), the draft
without its markers scored the same way. Nothing is decided here: ``candidate_rules.py``
reads the file and compares selection rules chosen on dev against test.

Usage from the repo root: ``.venv/bin/python eval/probes/candidate_scores.py dev``;
appends to ``/tmp/cands_<split>.jsonl`` (or the path given second) and resumes.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common import resumable, split_items  # eval/probes/ (the script's folder is on the path)
from spans import candidates

from rag.context import evidence_sentences
from rag.evaluation.metrics import answer_correct, strip_markers
from rag.generation.factory import local_engine
from rag.prompts import NOT_FOUND_EN, NOT_FOUND_VI, build_messages
from rag.service import RAG, _narrow
from rag.settings import Settings
from rag.text import looks_english

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(f"/tmp/cands_{split}.jsonl")
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
    picked = evidence_sentences(
        passages,
        q_read,
        budget=s.context_chars,
        max_sentences=s.context_sentences,
        similarity=rag._sentence_similarity(q_read),
    )
    ctx = [_narrow(p) for p in picked]
    msgs = build_messages(q_read, ctx, english=english, history=[])
    texts = [p.chunk.text for p in ctx]
    t0 = time.perf_counter()
    c = gen.complete(msgs, max_tokens=s.max_tokens, temperature=0.0)
    t1 = time.perf_counter()
    draft = c.text.strip()
    cands = candidates(texts, q_read)
    nf = NOT_FOUND_EN if english else NOT_FOUND_VI
    bare = strip_markers(draft).strip()
    scored = gen.score(msgs, [nf, bare or nf, *[x.text for x in cands]])
    t2 = time.perf_counter()
    rec = {
        "id": g.id,
        "split": split,
        "type": g.type,
        "answerable": g.answerable,
        "english": english,
        "question": q,
        "answers": g.answers,
        "items": texts,
        "sources": [p.chunk.source for p in ctx],
        "draft": draft,
        "draft_lps": c.token_logprobs,
        "nf_lps": scored[0],
        "bare": bare,
        "bare_lps": scored[1],
        "cands": [
            {
                "text": x.text,
                "item": x.item,
                "kind": x.kind,
                "lps": lp,
                "ok": bool(g.answerable and answer_correct(x.text, g.answers)),
            }
            for x, lp in zip(cands, scored[2:], strict=True)
        ],
        "draft_ok": bool(g.answerable and answer_correct(draft, g.answers)),
        "any_has": bool(g.answerable and any(answer_correct(t, g.answers) for t in texts)),
        "draft_ms": (t1 - t0) * 1000,
        "score_ms": (t2 - t1) * 1000,
        "prompt_tokens": c.prompt_tokens,
        "cand_tokens": sum(len(x) for x in scored[2:]),
    }
    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    out.flush()
    best = max(rec["cands"], key=lambda x: sum(x["lps"]) / len(x["lps"]), default=None)
    print(
        g.id,
        g.type,
        rec["draft_ok"],
        best and best["ok"],
        len(cands),
        rec["cand_tokens"],
        round(rec["draft_ms"]),
        round(rec["score_ms"]),
        flush=True,
    )
