"""Probe (issue 12): the confidence's signals and regularisation chosen on dev alone (grouped
cross-validation, ``rag.evaluation.calibrate.select``), fitted on the dev records of one or both
committed runs, judged on each run's test split. No model runs: it replays the signals the
committed evaluation runs recorded.

Rows: the shipped calibration (``rag/calibration.json``, fitted on an older run), the old
procedure (all 13 signals, L2 1) refitted on today's dev records, and the new procedure
(``select``; what ``rag calibrate`` now does), each on AMD dev alone and on AMD + Intel dev
pooled (the same questions drafted on two CPUs; one question's drafts share a fold).

Usage from the repo root::

    .venv/bin/python eval/probes/signal_selection.py > eval/probes/signal_selection.txt
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rag.evaluation import calibrate as c  # noqa: E402
from rag.reader import FEATURES, Calibration  # noqa: E402

RUNS = {
    "amd": Path("eval/reports/latest/report.json"),
    "intel": Path("eval/reports/2026-12-02-intel/report.json"),
}
COLS = ("accuracy", "answerable_refused", "answerable_wrong", "unanswerable_refused", "utility")


def scored(cal, parts):
    out = {}
    for name, part in parts.items():
        conf = c.confidences(cal, part)
        out[name] = {**c.outcome(part, conf, cal.threshold), "auc": c.auc(part, conf)}
    return out


def line(label, cal, res):
    cells = " | ".join(" ".join(f"{res[k][col]:.3f}" for col in (*COLS, "auc")) for k in res)
    return f"{label:<40} {len(cal.weights):>2} sig thr {cal.threshold:.3f} | {cells}"


def main():
    records = {r: json.loads(p.read_text("utf-8"))["records"] for r, p in RUNS.items()}
    pts = {r: c.points(rs) for r, rs in records.items()}
    parts = {f"{s}-{r}": [p for p in pts[r] if p.split == s] for s in ("dev", "test") for r in RUNS}
    print("columns per split: " + ", ".join((*COLS, "AUC")))
    print("splits: " + " | ".join(parts))
    shipped = Calibration.load()
    print(line("shipped rag/calibration.json", shipped, scored(shipped, parts)))
    for train_name, runs in (("amd", ["amd"]), ("amd+intel", ["amd", "intel"])):
        train = [p for r in runs for p in pts[r] if p.split == "dev"]
        old = c.fit(train, FEATURES, c.L2)
        old.threshold = c.choose_threshold(train, c.confidences(old, train))
        print(line(f"old procedure, dev of {train_name}", old, scored(old, parts)))
        cal, result = c.study(records["amd"], also=[records[r] for r in runs[1:]])
        print(line(f"new procedure, dev of {train_name}", cal, scored(cal, parts)))
        print("   " + cal.fitted_on)
        print("   signals: " + ", ".join(f"{f} {w:+.2f}" for f, w in cal.weights.items()))
        for row in result["selection"]:
            feats = "all" if len(row["features"]) == len(FEATURES) else ", ".join(row["features"])
            print(f"   L2 {row['l2']:>4}: log-loss {row['logloss']:.4f}  {feats}")


if __name__ == "__main__":
    main()
