"""Probe (issue 12): would another rule for choosing the abstention threshold on dev do better
on test?

No model runs: it re-scores the committed evaluation records (``eval/reports/latest/
report.json``, each answer's signals and whether its draft was right) with the shipped
calibration (``rag/calibration.json``) and applies the decision ``Reader.read`` takes at each
threshold. Rules compared, each chosen on **dev** only and then read on test:

- ``shipped``: most right answers minus wrong answers on dev (``calibrate.choose_threshold``);
- ``dev unanswerable refused >= r``: the lowest threshold at which dev still refuses a share
  ``r`` of its unanswerable questions (the issue's target is 0.80), which answers as many
  answerable questions as that constraint allows;
- fixed thresholds around the shipped one, for the shape of the trade-off.

Usage from the repo root: ``.venv/bin/python eval/probes/threshold_rules.py [report.json]``.
"""

import json
import sys
from pathlib import Path

from rag.evaluation.calibrate import confidences, outcome, points
from rag.reader import Calibration


def main(report: Path) -> None:
    records = json.loads(report.read_text("utf-8"))["records"]  # as ``rag calibrate`` reads it
    cal = Calibration.load()
    assert cal is not None, "rag/calibration.json is missing"
    ps = points(records)
    dev = [p for p in ps if p.split == "dev"]
    test = [p for p in ps if p.split == "test"]
    dev_conf, test_conf = confidences(cal, dev), confidences(cal, test)

    def cells(o: dict) -> str:
        return (
            f"{o['accuracy']:.3f} | {o['answerable_refused']:.3f} | {o['answerable_wrong']:.3f}"
            f" | {o['unanswerable_refused']:.3f} | {o['utility']:.3f}"
        )

    print(
        "| rule | threshold | dev: accuracy | refused ans. | wrong ans. | unans. refused | utility"
        " | test: accuracy | refused ans. | wrong ans. | unans. refused | utility |"
    )
    print("|---|---:|" + "---:|" * 10)

    def row(name: str, t: float) -> None:
        d, q = outcome(dev, dev_conf, t), outcome(test, test_conf, t)
        print(f"| {name} | {t:.3f} | {cells(d)} | {cells(q)} |")

    row("shipped (most right minus wrong on dev)", cal.threshold)
    cands = sorted({0.0, *dev_conf})
    for r in (0.80, 0.85, 0.90):
        ok = [t for t in cands if outcome(dev, dev_conf, t)["unanswerable_refused"] >= r]
        row(f"dev unanswerable refused >= {r:.2f}", min(ok))
    for t in (0.30, 0.40, 0.45, 0.55, 0.60):
        row("fixed", t)
    # The ceiling of any threshold: a confidence that knew which drafts are right.
    oracle = [outcome(part, [1.0 if p.right else 0.0 for p in part], 0.5) for part in (dev, test)]
    print(f"| a confidence that knew (ceiling) | — | {cells(oracle[0])} | {cells(oracle[1])} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "eval/reports/latest/report.json"))
