"""Reader decisions on the committed gold run's signals with the signals a remote model server
cannot give removed (absent = dev mean in the shipped calibration). Same drafts, no new run."""
import copy
import json

from rag.evaluation.calibrate import auc, confidences, outcome, points
from rag.reader import Calibration

d = json.load(open("eval/reports/latest/report.json"))
cal = Calibration.load()
ps = points(d["records"])
print("| split | signals | accuracy | answerable refused | answerable wrong | unanswerable refused | utility | AUC |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for split in ("dev", "test"):
    sp = [p for p in ps if p.split == split]
    for label, drop in (("all (local engine)", ()), ("no not-found score (model server)", ("nf_margin",)),
                        ("no token log-probabilities either", ("nf_margin", "lp_mean", "lp_min"))):
        q = copy.deepcopy(sp)
        for p in q:
            for k in drop:
                p.signals.pop(k, None)
        c = confidences(cal, q)
        o = outcome(q, c, cal.threshold)
        print(f"| {split} | {label} | {o['accuracy']:.3f} | {o['answerable_refused']:.3f} | "
              f"{o['answerable_wrong']:.3f} | {o['unanswerable_refused']:.3f} | {o['utility']:.3f} | {auc(q, c):.3f} |")
