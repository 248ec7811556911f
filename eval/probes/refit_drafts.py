"""Probe (issue 12): a prompt or evidence variant judged with the confidence refitted on its
own drafts, as ``rag calibrate`` would refit it if the variant were adopted.

For the baseline drafts and the variant's (``prompt_drafts.py`` runs, or the dev/test records of
an evaluation report), on each: choose the signals and L2 and fit on **dev** exactly as ``rag
calibrate`` does (``rag.evaluation.calibrate.select``, grouped out-of-fold log-loss), choose the
threshold on dev; report dev (in-sample) and, where the run has it, **test** (never used to
fit): drafts right, answers right, wrong answers, unanswerable refused, utility (right minus
wrong answers per question), AUC. No model runs.

Usage from the repo root::

    .venv/bin/python eval/probes/refit_drafts.py <baseline> <variant>

where each is a probe name (``eval/probes/prompt_<name>_{dev,test}.jsonl``) or a folder holding
an evaluation ``report.json``. ``PROBE_FEATURES=a,b`` offers the selection signals beyond
``rag.reader.FEATURES`` that the variant's records carry (``self_check.py``'s ``self_check``).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rag.evaluation import calibrate as c

ROOT = Path(__file__).resolve().parents[2]
if os.environ.get("PROBE_FEATURES"):
    c.FEATURES = (*c.FEATURES, *os.environ["PROBE_FEATURES"].split(","))


def load(name: str) -> list[dict]:
    """Records in the shape ``calibrate.points`` reads."""
    folder = ROOT / name
    if (folder / "report.json").exists():
        records = json.loads((folder / "report.json").read_text("utf-8"))["records"]
        return [r for r in records if r.get("split") in ("dev", "test")]
    out = []
    for split in ("dev", "test"):
        path = ROOT / f"eval/probes/prompt_{name}_{split}.jsonl"
        if path.exists():
            for line in path.open():
                r = json.loads(line)
                out.append({**r, "split": split, "sources": [1] if r["answerable"] else []})
    return out


def summary(records: list[dict]) -> tuple[str, dict[str, str]]:
    ps = c.points(records)
    dev = [p for p in ps if p.split == "dev"]
    feats, l2, table = c.select(dev)
    cal = c.fit(dev, feats, l2)
    cal.threshold = c.choose_threshold(dev, c.confidences(cal, dev))
    oof = min(r["logloss"] for r in table)
    head = (
        f"{len(feats)} signals, L2 {l2:g}, threshold {cal.threshold:.3f}, "
        f"dev oof log-loss {oof:.3f}"
    )
    rows: dict[str, str] = {}
    for split in ("dev", "test"):
        part = [p for p in ps if p.split == split]
        if not part:
            continue
        conf = c.confidences(cal, part)
        o = c.outcome(part, conf, cal.threshold)
        n_ans, n_una = o["answerable"], o["unanswerable"]
        refused_una = round((o["unanswerable_refused"] or 0) * n_una)
        wrong = round((o["answerable_wrong"] or 0) * n_ans) + n_una - refused_una
        auc = c.auc(part, conf)
        rows[split] = (
            f"{len(part):3d} q | drafts right {sum(p.right for p in part):3d}/{n_ans} | "
            f"answered right {round((o['accuracy'] or 0) * n_ans):3d} | wrong answers "
            f"{wrong:3d} | unanswerable refused {refused_una}/{n_una} | utility "
            f"{o['utility']:.3f} | AUC {auc if auc is None else round(auc, 3)}"
        )
    return head, rows


def main() -> None:
    for name in sys.argv[1:]:
        head, rows = summary(load(name))
        print(f"{name}: {head}")
        for split, row in rows.items():
            print(f"  {split:4s} {row}")


if __name__ == "__main__":
    main()
