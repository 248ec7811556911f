"""Probe (issue 12): which signals earn a place in the reader's confidence, fitted on dev and
judged on test, with no model run.

Reads the records of ``candidate_scores.py`` (then ``evidence_signals.py`` and
``prior_scores.py``) and an evaluation report whose records hold the shipped signals of the same
drafts (joined by id; a question whose draft differs between the two runs is left out). For each
signal set: a logistic model fitted on dev (``rag.evaluation.calibrate.fit``), the threshold
chosen on dev (most right minus wrong), then the outcome on dev and on test; also each new
signal's AUC alone (right drafts against wrong drafts and unanswerable questions).

Usage from the repo root (the report of the run the probe reproduced, commit 9a1143d)::

    git show 9a1143d:eval/reports/latest/report.json > /tmp/report-9a1143d.json
    .venv/bin/python eval/probes/signal_sets.py /tmp/report-9a1143d.json \\
        eval/probes/candidate_scores_dev.jsonl.gz eval/probes/candidate_scores_test.jsonl.gz
"""

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import rag.evaluation.calibrate as cal_module

# The signals shipped before this probe (rag/reader.py FEATURES at commit 9a1143d).
SHIPPED = (
    "lp_mean",
    "lp_min",
    "nf_margin",
    "numbers_found",
    "names_found",
    "lexical",
    "dense_top",
    "unknown_terms",
    "english",
)
EVIDENCE = ("ans_support", "ans_sim", "ans_rank", "sim_gap")
SETS = {
    "shipped": SHIPPED,
    "+ bare draft rescored": (*SHIPPED, "bare_lp", "bare_first", "nf_margin_bare"),
    "+ pmi (evidence vs no evidence)": (*SHIPPED, "pmi"),
    "+ evidence position (adopted)": (*SHIPPED, *EVIDENCE),
    "+ pmi + evidence position": (*SHIPPED, "pmi", *EVIDENCE),
}


def mean(xs):
    return sum(xs) / len(xs) if xs else -99.0


def load(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def points(report, rows):
    out = []
    for r in rows:
        rec = report.get(r["id"])
        if rec is None or rec["draft"] != r["draft"]:
            continue
        sig = {
            k: v
            for k, v in (rec.get("signals") or {}).items()
            if k in SHIPPED or k in ("uncited", "legacy_answered")
        }
        proposed = "lexical" in sig and not sig.get("uncited")
        if r["bare_lps"]:
            sig["bare_lp"] = mean(r["bare_lps"])
            sig["bare_first"] = r["bare_lps"][0]
            sig["nf_margin_bare"] = mean(r["bare_lps"]) - mean(r["nf_lps"])
        if "pmi" in r:
            sig["pmi"] = r["pmi"]
        sig.update(r.get("ev") or {})
        out.append(
            cal_module.Point(
                split=r["split"],
                type=r["type"],
                answerable=r["answerable"],
                proposed=proposed,
                right=r["draft_ok"] and proposed,
                signals=sig,
                legacy_answered=False,
            )
        )
    return out


def auc(pos, neg):
    if not pos or not neg:
        return float("nan")
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def main():
    report = {r["id"]: r for r in json.loads(Path(sys.argv[1]).read_text("utf-8"))["records"]}
    rows = [r for path in sys.argv[2:] for r in load(path)]
    ps = points(report, rows)
    dev = [p for p in ps if p.split == "dev"]
    test = [p for p in ps if p.split == "test"]
    print(f"questions with the same draft in both runs: dev {len(dev)}, test {len(test)}")
    print(
        "\n| signals | split | accuracy | answerable refused | answerable wrong | "
        "unanswerable refused | utility | AUC | threshold |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, feats in SETS.items():
        cal_module.FEATURES = feats
        cal = cal_module.fit(dev)
        cal.threshold = cal_module.choose_threshold(dev, cal_module.confidences(cal, dev))
        for split, part in (("dev", dev), ("test", test)):
            conf = cal_module.confidences(cal, part)
            o = cal_module.outcome(part, conf, cal.threshold)
            print(
                f"| {name} | {split} | {o['accuracy']:.3f} | {o['answerable_refused']:.3f} | "
                f"{o['answerable_wrong']:.3f} | {o['unanswerable_refused']:.3f} | "
                f"{o['utility']:.3f} | {cal_module.auc(part, conf):.3f} | "
                f"{cal.threshold:.3f} |"
            )
    print("\n| signal alone | dev AUC | test AUC |\n|---|---:|---:|")
    for f in ("bare_lp", "bare_first", "nf_margin_bare", "pmi", *EVIDENCE):
        cells = []
        for part in (dev, test):
            pos = [p.signals[f] for p in part if p.right and f in p.signals]
            neg = [p.signals[f] for p in part if not p.right and f in p.signals]
            cells.append(f"{auc(pos, neg):.3f}")
        print(f"| {f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
