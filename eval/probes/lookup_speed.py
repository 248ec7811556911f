"""Probe (issue 13): what prompt lookup decoding saves of the answer's decode, and so of the
first token (the reader decides on the whole draft before the answer streams).

Runs the service itself (``RAG.ask``) on the first ``N`` questions of one split twice each,
with ``lookup_tokens`` 0 and ``K`` (order alternating per question; the model's prompt cache is
emptied before every ask, so both read the whole prompt), and writes per question the first
token, the decode time, the tokens generated and whether the two drafts are the same.

Needs the engine of commit 40b6428 (``lookup_tokens``; removed after it, as it did not pay):
``git checkout 40b6428`` first. Usage from the repo root: ``RAG_GENERATOR_PROCESS=0 .venv/bin/python
eval/probes/lookup_speed.py dev [N] [K]``; writes ``eval/probes/lookup_<split>.jsonl``.
"""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, split_items

from rag.service import RAG
from rag.settings import Settings

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 30
K = int(sys.argv[3]) if len(sys.argv) > 3 else 8
rag = RAG.from_settings(Settings())
assert not rag.settings.generator_process, "set RAG_GENERATOR_PROCESS=0"
engine = rag.generator
rows = []
for n, g in enumerate(split_items(split)[:N]):
    got = {}
    for k in [0, K] if n % 2 == 0 else [K, 0]:
        engine.lookup_tokens = k  # type: ignore[attr-defined]
        engine._llm.n_tokens = 0  # type: ignore[attr-defined]  # nothing cached: a cold read
        a = rag.ask(g.question)
        t = a.timings_ms
        got[k] = {
            "first_token_ms": t.first_token, "decode_ms": t.decode,
            "generated": t.generated_tokens, "draft": (a.reader or {}).get("draft", ""),
        }  # fmt: skip
    row = {
        "id": g.id,
        "same": got[0]["draft"] == got[K]["draft"],
        "plain": got[0],
        "lookup": got[K],
    }
    rows.append(row)
    print(
        g.id, row["same"], f"{got[0]['decode_ms']:.0f} -> {got[K]['decode_ms']:.0f} ms", flush=True
    )
(ROOT / f"eval/probes/lookup_{split}.jsonl").write_text(
    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
)
steps, kept = engine.lookup_steps, engine.lookup_kept  # type: ignore[attr-defined]
med = statistics.median
for key in ("first_token_ms", "decode_ms"):
    a, b = med(r["plain"][key] for r in rows), med(r["lookup"][key] for r in rows)
    print(f"{key} p50: {a:.0f} -> {b:.0f} ({b / a:.2f}x)")
dec = sum(r["lookup"]["decode_ms"] for r in rows) / sum(r["plain"]["decode_ms"] for r in rows)
print(f"decode time in all: {dec:.2f}x; same drafts {sum(r['same'] for r in rows)}/{len(rows)}")
print(f"guessing steps {steps}, guessed tokens kept {kept}")
rag.close()
