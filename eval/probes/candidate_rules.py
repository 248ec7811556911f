"""Probe (issue 12): selection rules over ``candidate_scores.py`` output, chosen on dev, judged
on test. No model run: re-scores the recorded log-probabilities.

Usage from the repo root (the second part, spans as a fallback for refused drafts, needs the
report and calibration of the run the probe reproduced)::

    git show 9a1143d:eval/reports/latest/report.json > /tmp/report-9a1143d.json
    git show 9a1143d:rag/calibration.json > /tmp/calibration-9a1143d.json
    .venv/bin/python eval/probes/candidate_rules.py eval/probes/candidate_scores_dev.jsonl.gz \
        eval/probes/candidate_scores_test.jsonl.gz /tmp/report-9a1143d.json \
        /tmp/calibration-9a1143d.json
"""

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def load(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def mean(xs):
    return sum(xs) / len(xs) if xs else -99.0


def auc(pos, neg):
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def choose(r, margin, score=mean, kinds=None, max_item=99):
    """(text, ok, confidence, from_span) of the rule: the best span if its score beats the bare
    draft's by ``margin``, else the draft."""
    draft_s = score(r["bare_lps"])
    cands = [
        c for c in r["cands"] if (kinds is None or c["kind"] in kinds) and c["item"] <= max_item
    ]
    best = max(cands, key=lambda c: score(c["lps"]), default=None)
    if best is not None and score(best["lps"]) > draft_s + margin:
        return best["text"], best["ok"], score(best["lps"]), True
    return r["draft"], r["draft_ok"], draft_s, False


def summary(rows, margin, **kw):
    ans = [r for r in rows if r["answerable"]]
    picks = [choose(r, margin, **kw) for r in rows]
    acc = sum(p[1] for p, r in zip(picks, rows, strict=True) if r["answerable"]) / max(1, len(ans))
    pos = [p[2] for p, r in zip(picks, rows, strict=True) if r["answerable"] and p[1]]
    neg = [p[2] for p, r in zip(picks, rows, strict=True) if not (r["answerable"] and p[1])]
    span = sum(p[3] for p in picks) / len(rows)
    return acc, auc(pos, neg), span


def fallback(rows, report_path, calibration_path):
    """Spans only where the shipped reader refuses its draft: the best span if its mean
    log-probability passes ``smin``."""
    from rag.reader import Calibration, Reader

    cal = Calibration.load(Path(calibration_path))
    reader = Reader(cal)
    report = {r["id"]: r for r in json.loads(Path(report_path).read_text("utf-8"))["records"]}
    rows = [r for r in rows if r["id"] in report and report[r["id"]]["draft"] == r["draft"]]

    def decide(r, smin):
        sig = report[r["id"]].get("signals") or {}
        if (
            "lexical" in sig
            and not sig.get("uncited")
            and reader.answers(cal.probability(sig), sig)
        ):
            return "draft", r["draft_ok"]
        best = max(r["cands"], key=lambda c: mean(c["lps"]), default=None)
        if best is not None and mean(best["lps"]) > smin:
            return "span", best["ok"]
        return "refuse", False

    print("\nspans as a fallback where the shipped reader refuses (smin 99 = never)")
    print("split smin  accuracy  unanswerable-refused  answerable-wrong  spans-given")
    for split in ("dev", "test"):
        part = [r for r in rows if r["split"] == split]
        ans = [r for r in part if r["answerable"]]
        una = [r for r in part if not r["answerable"]]
        for smin in (99, -1.0, -0.7, -0.5, -0.35):
            d = [decide(r, smin) for r in part]
            acc = sum(x[1] for x, r in zip(d, part, strict=True) if r["answerable"]) / len(ans)
            ur = sum(
                x[0] == "refuse" for x, r in zip(d, part, strict=True) if not r["answerable"]
            ) / len(una)
            wrong = sum(
                x[0] != "refuse" and not x[1]
                for x, r in zip(d, part, strict=True)
                if r["answerable"]
            )
            spans = sum(x[0] == "span" for x in d)
            print(f"{split:5} {smin:5}  {acc:.3f}  {ur:.3f}  {wrong}  {spans}")


def main():
    dev, test = load(sys.argv[1]), load(sys.argv[2]) if len(sys.argv) > 2 else []
    for name, rows in (("dev", dev), ("test", test)):
        if not rows:
            continue
        ans = [r for r in rows if r["answerable"]]
        print(f"{name}: {len(rows)} questions, {len(ans)} answerable")
        print(
            "  draft right",
            sum(r["draft_ok"] for r in ans),
            "| a span right",
            sum(any(c["ok"] for c in r["cands"]) for r in ans),
            "| gold in evidence",
            sum(r["any_has"] for r in ans),
        )
        print(
            "  draft lp_mean AUC",
            round(
                auc(
                    [mean(r["draft_lps"]) for r in ans if r["draft_ok"]],
                    [mean(r["draft_lps"]) for r in rows if not (r["answerable"] and r["draft_ok"])],
                ),
                3,
            ),
        )
    print("margin  dev acc/AUC/span-share   test acc/AUC/span-share")
    for margin in (-99, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 99):
        d = summary(dev, margin)
        t = summary(test, margin) if test else (0, 0, 0)
        print(f"{margin:6}  {d[0]:.3f} {d[1]:.3f} {d[2]:.2f}    {t[0]:.3f} {t[1]:.3f} {t[2]:.2f}")
    if len(sys.argv) > 4:
        fallback(dev + test, sys.argv[3], sys.argv[4])


if __name__ == "__main__":
    main()
