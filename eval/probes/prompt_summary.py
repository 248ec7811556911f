"""Compare a ``prompt_drafts.py`` run with the committed evaluation report's drafts on the same
split: drafts right on answerable questions (and how many moved each way, and per type),
answers right at the current threshold, wrong answers, unanswerable questions refused, and the
prompt's size and first-token time.

Usage from the repo root: ``python eval/probes/prompt_summary.py dev examples``; a third
argument names another run of the same split to compare with instead (``... dev english
english-base``, both ``prompt_drafts.py`` runs on this machine); ``PROBE_BASE=<folder>`` takes
the drafts of another evaluation report than ``eval/reports/latest``.
"""

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
name = sys.argv[2] if len(sys.argv) > 2 else "examples"
if len(sys.argv) > 3:  # another probe run of the same split (the same machine's baseline)
    with (ROOT / f"eval/probes/prompt_{sys.argv[3]}_{split}.jsonl").open() as f:
        base = {
            r["id"]: {**r, "sources": [1] if r["answerable"] else []} for r in map(json.loads, f)
        }
else:
    base = {
        r["id"]: r
        for r in json.loads(
            (ROOT / os.environ.get("PROBE_BASE", "eval/reports/latest") / "report.json").read_text()
        )["records"]
        if r["split"] == split
    }
new = [json.loads(line) for line in (ROOT / f"eval/probes/prompt_{name}_{split}.jsonl").open()]


def tally(rows: list[dict]) -> dict[str, float]:
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    right = sum(r["correct"] for r in ans)
    wrong = sum(not r["abstained"] and not r["correct"] for r in rows)  # unanswerable too
    return {
        "drafts right": sum(r["draft_correct"] for r in ans),
        "answered right": sum(r["correct"] for r in ans),
        "answerable answered wrongly": sum(not r["abstained"] and not r["correct"] for r in ans),
        "unanswerable refused": sum(r["abstained"] for r in una),
        "utility": (right - wrong) / len(rows),
        "prompt tokens p50": statistics.median(r["prompt_tokens"] for r in rows),
        "first token p50 (s)": statistics.median(r["first_token_ms"] for r in rows) / 1000,
    }


ids = [r["id"] for r in new]
old = [{**base[i], "answerable": bool(base[i]["sources"])} for i in ids]
print(f"{split}: {len(new)} questions ({sum(r['answerable'] for r in new)} answerable)")
a, b = tally(old), tally(new)
for k in a:
    print(f"  {k:30s} {a[k]:8.3f} -> {b[k]:8.3f}")
pairs = list(zip(new, old, strict=True))
gain = [r["id"] for r, o in pairs if r["draft_correct"] and not o["draft_correct"]]
loss = [r["id"] for r, o in pairs if o["draft_correct"] and not r["draft_correct"]]
print(f"  drafts newly right {len(gain)}, newly wrong {len(loss)}")
types = sorted({r["type"] for r in new if r["answerable"]})
for t in types:
    o = [x for x in old if x["type"] == t and x["answerable"]]
    n = [x for x in new if x["type"] == t and x["answerable"]]
    print(
        f"  {t:14s} drafts {sum(x['draft_correct'] for x in o):3d} -> "
        f"{sum(x['draft_correct'] for x in n):3d} of {len(n)}"
    )
