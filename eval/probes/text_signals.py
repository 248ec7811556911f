"""Probe (issue 12): do signals of the draft's own text earn a place in the confidence?

A wrong draft often restates the question ("Thủ tướng yêu cầu … theo tinh thần phát triển mạnh
mẽ.") or is long where the answer is a phrase. From the committed evaluation report alone (no
model runs): each draft's share of words the question already gave (``echo``), its length in
words (``length``, log), and its count of new words (``new_words``, log); their AUC alone
(right against wrong proposals, dev and test), then the shipped signal set with each added,
fitted on dev (``rag.evaluation.calibrate.fit``), the threshold chosen on dev, judged on test.

Usage from the repo root: ``.venv/bin/python eval/probes/text_signals.py``.
"""

import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rag.evaluation.calibrate as cal_module
from rag.grounding import own_words
from rag.reader import FEATURES
from rag.text import words

ROOT = Path(__file__).resolve().parents[2]
MARKER = r"\[\d+\]"


def text_signals(draft: str, question: str) -> dict[str, float]:
    w = words(re.sub(MARKER, " ", draft))
    own = own_words(draft, question)
    return {
        "echo": 1.0 - len(own) / len(w) if w else 1.0,
        "length": math.log1p(len(w)),
        "new_words": math.log1p(len(own)),
    }


records = json.loads((ROOT / "eval/reports/latest/report.json").read_text())["records"]
for r in records:
    if r.get("signals") and "lexical" in r["signals"]:
        r["signals"].update(text_signals(r.get("draft") or "", r["question"]))
ps = cal_module.points(records)
NEW = ("echo", "length", "new_words")

print("| signal | AUC dev | AUC test |")
print("|---|---:|---:|")
for f in NEW:
    row = []
    for split in ("dev", "test"):
        sp = [p for p in ps if p.split == split]
        conf = [p.signals.get(f, 0.0) if p.proposed else 0.0 for p in sp]
        a = cal_module.auc(sp, conf)
        row.append(f"{a:.2f}" if a is not None else "—")
    print(f"| {f} | {' | '.join(row)} |")

SETS = {
    "shipped": FEATURES,
    **{f"+ {f}": (*FEATURES, f) for f in NEW},
    "+ all three": (*FEATURES, *NEW),
}
print()
print(
    "| signals | dev utility | test utility | test accuracy | test answerable wrong "
    "| test unanswerable refused | test AUC |"
)
print("|---|---:|---:|---:|---:|---:|---:|")
for name, feats in SETS.items():
    cal_module.FEATURES = feats  # fit() reads the module's FEATURES
    dev = [p for p in ps if p.split == "dev"]
    test = [p for p in ps if p.split == "test"]
    cal = cal_module.fit(dev)
    cd = cal_module.confidences(cal, dev)
    t = cal_module.choose_threshold(dev, cd)
    ct = cal_module.confidences(cal, test)
    od, ot = cal_module.outcome(dev, cd, t), cal_module.outcome(test, ct, t)
    print(
        f"| {name} | {od['utility']:.3f} | {ot['utility']:.3f} | {ot['accuracy']:.3f} | "
        f"{ot['answerable_wrong']:.3f} | {ot['unanswerable_refused']:.3f} | "
        f"{cal_module.auc(test, ct):.2f} |"
    )
