"""Summarise ``sampled_drafts.py`` runs: how many answerable questions have a right draft among
the greedy one and the samples, and what each way of choosing and deciding gives.

Ways (each fitted and thresholded on dev only; test, when given, is only scored):

- ``greedy``: the shipped reader (greedy draft, its confidence refitted on this run's dev);
- ``max-conf``: the draft of highest confidence among greedy and samples;
- ``agree``: the greedy draft, with one more signal in the confidence: the share of samples
  that agree with it (token F1 >= 0.5 after markers are stripped);
- ``vote``: the draft whose agreeing drafts' confidences sum highest, with the agreement
  signal too;
- ``cand-fit``: one confidence fitted on every draft of dev (greedy and samples alike, the
  agreement signal with them), the draft it trusts most given.

Usage from the repo root: ``.venv/bin/python eval/probes/sampled_summary.py [test]`` (dev alone
without an argument).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT

import rag.evaluation.calibrate as cal
from rag.evaluation.metrics import token_f1
from rag.grounding import MIN_LEXICAL_SUPPORT
from rag.reader import FEATURES

AGREE = 0.5


def f1(a: str, b: str) -> float:
    """Syllable F1 of two drafts (markers dropped): the evaluation's own measure."""
    return token_f1(a, [[b]])


def load(split: str) -> list[dict]:
    with (ROOT / f"eval/probes/sampled_{split}.jsonl").open() as f:
        return [json.loads(line) for line in f]


def candidates(r: dict) -> list[dict]:
    """Greedy first, then the samples; ``proposed`` as the calibration reads it."""
    g = {"draft": r["draft"], "signals": r["signals"], "correct": r["draft_correct"]}
    out = [g, *[{k: s[k] for k in ("draft", "signals", "correct")} for s in r["samples"]]]
    for c in out:
        sig = c["signals"] or {}
        c["proposed"] = (
            "lexical" in sig and not sig.get("uncited") and sig["lexical"] >= MIN_LEXICAL_SUPPORT
        )
    return out


def with_agreement(cands: list[dict], i: int) -> dict:
    others = [c for j, c in enumerate(cands) if j != i]
    share = sum(f1(cands[i]["draft"], c["draft"]) >= AGREE for c in others) / max(1, len(others))
    return {**cands[i]["signals"], "agree": share}


def point(r: dict, c: dict, signals: dict, split: str) -> cal.Point:
    return cal.Point(
        split=split, type=r["type"], answerable=r["answerable"], proposed=c["proposed"],
        right=bool(c["correct"]) and c["proposed"], signals=signals, legacy_answered=False,
    )  # fmt: skip


def choose(way: str, r: dict, conf_of) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    cands = candidates(r)
    if way in ("greedy", "agree"):
        i = 0
    elif way == "cand-fit":
        i = max(
            range(len(cands)),
            key=lambda j: conf_of(with_agreement(cands, j)) * cands[j]["proposed"],
        )
    elif way == "max-conf":
        i = max(
            range(len(cands)), key=lambda j: conf_of(cands[j]["signals"]) * cands[j]["proposed"]
        )
    else:  # vote

        def weight(j: int) -> float:
            return sum(
                conf_of(c["signals"]) * c["proposed"]
                for c in cands
                if f1(c["draft"], cands[j]["draft"]) >= AGREE
            )

        i = max(range(len(cands)), key=weight)
    agreeing = ("agree", "vote", "cand-fit")
    sig = with_agreement(cands, i) if way in agreeing else cands[i]["signals"]
    return cands[i], sig


def run(way: str, splits: dict[str, list[dict]]) -> dict[str, dict]:
    cal.FEATURES = FEATURES + (("agree",) if way in ("agree", "vote", "cand-fit") else ())
    base = cal.fit([point(r, candidates(r)[0], r["signals"], "dev") for r in splits["dev"]])
    if way == "cand-fit":
        every = [
            point(r, c, with_agreement(cs, i), "dev")
            for r in splits["dev"]
            for cs in [candidates(r)]
            for i, c in enumerate(cs)
        ]
        base = cal.fit(every)
    # Choose with the base confidence (no agreement signal), then refit on the chosen drafts.
    picked = {
        s: [(r, *choose(way, r, base.probability)) for r in rows] for s, rows in splits.items()
    }
    model = cal.fit([point(r, c, sig, "dev") for r, c, sig in picked["dev"]])
    dev_ps = [point(r, c, sig, "dev") for r, c, sig in picked["dev"]]
    model.threshold = cal.choose_threshold(dev_ps, cal.confidences(model, dev_ps))
    out = {}
    for s, rows in picked.items():
        ps = [point(r, c, sig, s) for r, c, sig in rows]
        conf = cal.confidences(model, ps)
        res = cal.outcome(ps, conf, model.threshold)
        res["drafts right"] = sum(p.right for p in ps if p.answerable)
        res["auc"] = cal.auc(ps, conf)
        out[s] = res
    cal.FEATURES = FEATURES
    return out


splits = {"dev": load("dev")}
if len(sys.argv) > 1:
    splits["test"] = load(sys.argv[1])
for s, rows in splits.items():
    ans = [r for r in rows if r["answerable"]]
    k = max(len(r["samples"]) for r in rows)
    union = sum(any(c["correct"] for c in candidates(r)) for r in ans)
    samples_right = sum(sum(x["correct"] for x in r["samples"]) for r in ans)
    ms = sorted(r["sample_ms"] for r in rows)[len(rows) // 2]
    print(
        f"{s}: {len(rows)} q ({len(ans)} answerable), greedy right "
        f"{sum(r['draft_correct'] for r in ans)}, right in greedy or {k} samples {union}, "
        f"samples right {samples_right}/{k * len(ans)}, sampling p50 {ms / 1000:.1f} s"
    )
for way in ("greedy", "max-conf", "agree", "vote", "cand-fit"):
    res = run(way, splits)
    for s, o in res.items():
        auc = f"{o['auc']:.3f}" if o["auc"] is not None else "-"
        print(
            f"  {way:9s} {s:4s} drafts right {o['drafts right']:3d}  acc {o['accuracy']:.3f}  "
            f"ans refused {o['answerable_refused']:.3f}  ans wrong {o['answerable_wrong']:.3f}  "
            f"una refused {o['unanswerable_refused']:.3f}  utility {o['utility']:.3f}  AUC {auc}"
        )

# Samples as a fallback only: the greedy draft where the shipped decision gives it; else the
# sample of highest confidence, given at or above a second threshold (dev only: it loses at
# every one, so none is chosen and test is not scored).
cal.FEATURES = FEATURES
model = cal.fit([point(r, candidates(r)[0], r["signals"], "dev") for r in splits["dev"]])
dev_g = [point(r, candidates(r)[0], r["signals"], "dev") for r in splits["dev"]]
model.threshold = cal.choose_threshold(dev_g, cal.confidences(model, dev_g))


def fallback(rows: list[dict], split: str, second: float) -> tuple[list, list]:
    ps, conf = [], []
    for r in rows:
        cands = candidates(r)
        g = point(r, cands[0], r["signals"], split)
        [c0] = cal.confidences(model, [g])
        if c0 >= model.threshold:
            ps.append(g)
            conf.append(1.0)
            continue
        sp = [point(r, c, c["signals"], split) for c in cands[1:]]
        sc = cal.confidences(model, sp) if sp else []
        if sc and max(sc) >= second:
            i = max(range(len(sc)), key=lambda j: sc[j])
            ps.append(sp[i])
            conf.append(1.0)
        else:
            ps.append(g)
            conf.append(0.0)
    return ps, conf


for t in (0.5, 0.8, 0.9, 0.95, 0.99):
    o = cal.outcome(*fallback(splits["dev"], "dev", t), 0.5)
    print(f"  fallback  dev  at {t:.2f}: utility {o['utility']:.3f}")
