"""Probe (issue 12): does the model's own yes/no check of its draft tell right drafts from wrong?

Runs the service itself (``RAG.ask``: its retrieval, evidence, prompt, reader and current
calibration) on one gold split. After each draft, the same prompt with the draft as the
model's turn and one more user turn asking whether that answer is right according to the
evidence is scored for the two replies "Có" / "Không" ("Yes" / "No" for English questions) by
``Generator.score`` (the prompt up to the draft is already in llama.cpp's cache: one small
decode). The row keeps everything ``prompt_drafts.py`` keeps plus ``signals["self_check"]``:
the log-probability of "yes" minus that of "no" (each whole reply, end-of-turn included).
``refit_drafts.py`` with ``PROBE_FEATURES=self_check`` then asks whether the dev
cross-validation takes the signal and what it does on test.

Usage from the repo root: ``.venv/bin/python eval/probes/self_check.py dev`` (then ``test``);
appends to ``eval/probes/prompt_selfcheck_<split>.jsonl`` and resumes.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, resumable, split_items  # eval/probes/ (the script's folder)

from rag import reader as reader_module
from rag.evaluation.metrics import answer_correct
from rag.grounding import is_abstention
from rag.service import RAG
from rag.settings import Settings

CHECK_VI = (
    "Câu trả lời trên có đúng và được các đoạn trích nêu rõ không? "
    "Chỉ trả lời một từ: Có hoặc Không."
)
CHECK_EN = "Is that answer correct and clearly stated in the passages? Reply with one word: Yes or No."

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
path = ROOT / f"eval/probes/prompt_selfcheck_{split}.jsonl"
done, out = resumable(path)
rag = RAG.from_settings(Settings())
last: dict = {}
original = reader_module.Reader.read


def read(self, generator, messages, context, **kw):  # type: ignore[no-untyped-def]
    reading = original(self, generator, messages, context, **kw)
    last.clear()
    draft = reading.draft
    if draft and not is_abstention(draft):
        english = kw.get("english", False)
        check = [
            *messages,
            {"role": "assistant", "content": draft},
            {"role": "user", "content": CHECK_EN if english else CHECK_VI},
        ]
        t0 = time.perf_counter()
        yes, no = generator.score(check, ["Yes", "No"] if english else ["Có", "Không"])
        last["self_check"] = sum(yes) - sum(no)
        last["self_check_first"] = yes[0] - no[0]
        last["check_ms"] = (time.perf_counter() - t0) * 1000
    return reading


reader_module.Reader.read = read  # type: ignore[method-assign]
for g in split_items(split):
    if g.id in done:
        continue
    a = rag.ask(g.question)
    trace = a.reader or {}
    draft = str(trace.get("draft", ""))
    signals = dict(trace.get("signals", {}))
    if "self_check" in last:
        signals["self_check"] = last["self_check"]
        signals["self_check_first"] = last["self_check_first"]
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
        "signals": signals,
        "check_ms": last.get("check_ms"),
        "question_read": trace.get("question_read", g.question),
        "sources_found": [c.source for c in a.passages],
        "prompt_tokens": a.timings_ms.prompt_tokens,
        "first_token_ms": a.timings_ms.first_token,
    }
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    print(g.id, row["draft_correct"], round(signals.get("self_check", 0), 2), draft[:70], flush=True)
rag.close()
