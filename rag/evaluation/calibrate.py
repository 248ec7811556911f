"""Fit the reader's confidence on the gold set's dev split, and measure it on test.

Input: the per-item records of an evaluation run (``report.json``), whose reader traces hold
each proposed answer (``draft``), whether it was right, and its signals. A logistic model over
``rag.reader.FEATURES`` is fitted on **dev** items only (L2-regularised, Newton steps, numpy);
the abstention threshold is the one that maximises, on dev, right answers minus wrong answers
(a wrong answer costs more than an honest "not found"). Which signals the model reads, and how
strongly it is regularised, are chosen on dev too: greedy forward selection by out-of-fold
log-loss, folds grouped by question (``select``), so that a signal enters only when it predicts
held-out dev questions. Dev records of other runs (the same questions drafted on another CPU)
may join the fit. Test items are only scored.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.reader import FEATURES, Calibration, Reader

L2 = 1.0
#: Regularisation strengths ``select`` tries, and its cross-validation.
L2_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
FOLDS, REPEATS = 5, 4


@dataclass
class Point:
    id: str
    split: str
    type: str
    answerable: bool
    proposed: bool  # the model proposed an answer that could be cited
    right: bool  # that answer holds the gold strings
    signals: dict[str, float]
    legacy_answered: bool


def points(records: Sequence[dict[str, Any]]) -> list[Point]:
    out: list[Point] = []
    for r in records:
        sig = r.get("signals") or {}
        # A proposal has the reader's signals; a draft that said "not found" has none.
        proposed = "lexical" in sig and not sig.get("uncited")
        out.append(Point(
            id=str(r.get("id", len(out))), split=r.get("split") or "", type=r["type"],
            answerable=bool(r["sources"]),
            proposed=proposed, right=bool(r.get("draft_correct")) and proposed,
            signals={k: float(v) for k, v in sig.items()},
            legacy_answered=proposed and bool(sig.get("legacy_answered")),
        ))  # fmt: skip
    return out


def _matrix(ps: Sequence[Point], features: Sequence[str] = FEATURES) -> np.ndarray:
    """Signals as rows; one an engine could not give is its column's mean (no information,
    as ``Calibration.probability`` reads it), 0 where no point has it."""
    x = np.array([[p.signals.get(f, np.nan) for f in features] for p in ps], dtype=float)
    if not x.size:
        return x.reshape(len(ps), len(features))
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    means = np.where(present, x, 0.0).sum(axis=0) / np.maximum(counts, 1)
    return np.where(present, x, means)


def fit(ps: Sequence[Point], features: Sequence[str] = FEATURES, l2: float = L2) -> Calibration:
    """Logistic regression (standardised ``features``, L2 penalty ``l2``) on proposed answers:
    P(right)."""
    xs = [p for p in ps if p.proposed]
    x = _matrix(xs, features)
    y = np.array([p.right for p in xs], dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[0] = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Calibration(
        weights={f: float(v) for f, v in zip(features, w[1:], strict=True)},
        bias=float(w[0]),
        mean={f: float(v) for f, v in zip(features, mean, strict=True)},
        scale={f: float(v) for f, v in zip(features, scale, strict=True)},
        threshold=0.5,
    )


def oof_logloss(ps: Sequence[Point], features: Sequence[str], l2: float) -> float:
    """Mean out-of-fold log-loss of P(right) over the proposed answers of ``ps``: ``FOLDS``
    folds grouped by question id (one question's drafts from several runs stay together),
    ``REPEATS`` shuffles with fixed seeds."""
    props = [p for p in ps if p.proposed]
    ids = sorted({p.id for p in props})
    losses: list[float] = []
    for rep in range(REPEATS):
        order = ids[:]
        random.Random(rep).shuffle(order)
        fold = {q: i % FOLDS for i, q in enumerate(order)}
        for k in range(FOLDS):
            cal = fit([p for p in props if fold[p.id] != k], features, l2)
            for p in props:
                if fold[p.id] == k:
                    pr = min(max(cal.probability(p.signals), 1e-6), 1 - 1e-6)
                    losses.append(-math.log(pr if p.right else 1 - pr))
    return float(np.mean(losses)) if losses else math.inf


def forward(ps: Sequence[Point], l2: float) -> tuple[tuple[str, ...], float]:
    """Greedy forward selection over ``FEATURES`` by ``oof_logloss``: add the signal that
    lowers it most, stop when none does."""
    chosen: list[str] = []
    best = oof_logloss(ps, chosen, l2)
    while len(chosen) < len(FEATURES):
        loss, f = min((oof_logloss(ps, [*chosen, f], l2), f) for f in FEATURES if f not in chosen)
        if loss >= best - 1e-4:
            break
        chosen.append(f)
        best = loss
    return tuple(chosen), best


def select(ps: Sequence[Point]) -> tuple[tuple[str, ...], float, list[dict[str, Any]]]:
    """The signal set and L2 strength with the lowest out-of-fold log-loss on ``ps`` (dev):
    for each strength in ``L2_GRID``, all signals and the forward selection. Returns the
    choice and every candidate's loss."""
    table: list[dict[str, Any]] = []
    for l2 in L2_GRID:
        table.append({"features": tuple(FEATURES), "l2": l2,
                      "logloss": oof_logloss(ps, FEATURES, l2)})  # fmt: skip
        feats, loss = forward(ps, l2)
        table.append({"features": feats, "l2": l2, "logloss": loss})
    best = min(table, key=lambda r: r["logloss"])
    return best["features"], best["l2"], table


def confidences(cal: Calibration, ps: Sequence[Point]) -> list[float]:
    """Each item's confidence; 0 where the service would not answer whatever the threshold
    (no proposal, or the lexical floor of ``Reader.answers``)."""
    reader = Reader(cal, threshold=0.0)
    return [
        cal.probability(p.signals)
        if p.proposed and reader.answers(cal.probability(p.signals), p.signals)
        else 0.0
        for p in ps
    ]


def outcome(ps: Sequence[Point], conf: Sequence[float], threshold: float) -> dict[str, Any]:
    """What the service does at ``threshold``: answered right / wrong, refused, per kind."""
    ans = [(p, c) for p, c in zip(ps, conf, strict=True) if p.answerable]
    una = [(p, c) for p, c in zip(ps, conf, strict=True) if not p.answerable]

    def answered(p: Point, c: float) -> bool:
        return p.proposed and c >= threshold

    right = sum(answered(p, c) and p.right for p, c in ans)
    wrong_ans = sum(answered(p, c) and not p.right for p, c in ans)
    refused_ans = sum(not answered(p, c) for p, c in ans)
    refused_una = sum(not answered(p, c) for p, c in una)
    return {
        "n": len(ps),
        "answerable": len(ans),
        "unanswerable": len(una),
        "accuracy": right / len(ans) if ans else None,
        "answerable_refused": refused_ans / len(ans) if ans else None,
        "answerable_wrong": wrong_ans / len(ans) if ans else None,
        "unanswerable_refused": refused_una / len(una) if una else None,
        "utility": (right + refused_una - wrong_ans - (len(una) - refused_una)) / max(1, len(ps)),
    }


def legacy_outcome(ps: Sequence[Point]) -> dict[str, Any]:
    """The rules this reader replaced (unknown terms, echo, names, lexical support), applied
    to the same drafts."""
    conf = [1.0 if p.legacy_answered else 0.0 for p in ps]
    return outcome(ps, conf, 0.5)


def choose_threshold(ps: Sequence[Point], conf: Sequence[float]) -> float:
    cands = sorted({0.0, *conf})
    best = max(cands, key=lambda t: (outcome(ps, conf, t)["utility"], -t))
    # Midway to the next confidence up: the same decisions on dev, less brittle on new items.
    above = [c for c in cands if c > best]
    return (best + above[0]) / 2 if above else best


def auc(ps: Sequence[Point], conf: Sequence[float]) -> float | None:
    """Area under the ROC curve of confidence for right vs not-right proposed answers."""
    pos = [c for p, c in zip(ps, conf, strict=True) if p.proposed and p.right]
    neg = [c for p, c in zip(ps, conf, strict=True) if p.proposed and not p.right]
    if not pos or not neg:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def risk_coverage(ps: Sequence[Point], conf: Sequence[float]) -> dict[str, Any]:
    """Accuracy of the answered questions against the share answered, as the threshold moves
    (over all questions: an unanswerable one answered is a wrong answer)."""
    order = sorted(
        [(c, p.right) for p, c in zip(ps, conf, strict=True) if p.proposed], reverse=True
    )
    n = len(ps)
    curve, right = [], 0
    for i, (c, ok) in enumerate(order, 1):
        right += ok
        curve.append({"coverage": i / n, "accuracy": right / i, "threshold": c})
    area = sum(pt["accuracy"] for pt in curve) / len(curve) if curve else None
    return {"curve": curve, "area": area}


def calibration_table(ps: Sequence[Point], conf: Sequence[float], bins: int = 5) -> list[Any]:
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = [p.right for p, c in zip(ps, conf, strict=True)
               if p.proposed and (lo <= c < hi or (b == bins - 1 and c == 1.0))]  # fmt: skip
        rows.append({"bin": f"{lo:.1f}–{hi:.1f}", "n": len(sel),
                     "accuracy": sum(sel) / len(sel) if sel else None})  # fmt: skip
    return rows


def by_type(ps: Sequence[Point], conf: Sequence[float], threshold: float) -> dict[str, Any]:
    out = {}
    for t in sorted({p.type for p in ps}):
        idx = [i for i, p in enumerate(ps) if p.type == t]
        out[t] = outcome([ps[i] for i in idx], [conf[i] for i in idx], threshold)
    return out


def study(
    records: Sequence[dict[str, Any]],
    cal: Calibration | None = None,
    also: Sequence[Sequence[dict[str, Any]]] = (),
) -> tuple[Calibration, dict[str, Any]]:
    """Measure the reader's decision on dev and test. Without ``cal``, first choose the signals
    and regularisation (``select``), fit the model and choose the threshold on dev — the dev
    items of ``records`` and of each run in ``also`` (test is never looked at for that)."""
    ps = points(records)
    dev = [p for p in ps if p.split == "dev"]
    test = [p for p in ps if p.split == "test"]
    selection: list[dict[str, Any]] = []
    if cal is None:
        train = dev + [p for run in also for p in points(run) if p.split == "dev"]
        features, l2, selection = select(train)
        cal = fit(train, features, l2)
        cal.threshold = choose_threshold(train, confidences(cal, train))
        runs = f"{1 + len(also)} runs' " if also else ""
        cal.fitted_on = (
            f"{runs}dev split, {len(train)} drafts ({sum(p.proposed for p in train)} proposed "
            f"answers); {len(features)} signals and L2 {l2:g} chosen by grouped 5-fold "
            "cross-validation on dev"
        )
    result: dict[str, Any] = {
        "threshold": cal.threshold, "features": list(FEATURES), "signals": list(cal.weights),
        "fitted_on": cal.fitted_on, "weights": cal.weights,
        "selection": [{**r, "features": list(r["features"])} for r in selection],
    }  # fmt: skip
    for name, part in (("dev", dev), ("test", test)):
        conf = confidences(cal, part)
        result[name] = {
            "reader": outcome(part, conf, cal.threshold),
            "answer_everything": outcome(part, [1.0] * len(part), 0.5),
            "legacy_rules": legacy_outcome(part),
            "auc": auc(part, conf),
            "single_signal_auc": {
                f: auc(
                    part, [p.signals.get(f, -math.inf) if p.proposed else -math.inf for p in part]
                )
                for f in FEATURES
            },
            "risk_coverage": risk_coverage(part, conf),
            "calibration": calibration_table(part, conf),
            "by_type": by_type(part, conf, cal.threshold),
            "draft_accuracy": (
                sum(p.right for p in part if p.answerable) / max(1, sum(p.answerable for p in part))
            ),
        }
    return cal, result


def _f(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "—"
    return f"{100 * x:.0f} %" if pct else f"{x:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The reader section of the report: dev and test side by side against the targets."""
    d, t = result["dev"], result["test"]
    rows = [
        ("accuracy, answerable (target ≥ 85 %)", "accuracy"),
        ("answerable refused (target ≤ 5 %)", "answerable_refused"),
        ("answerable answered wrongly", "answerable_wrong"),
        ("unanswerable refused (target ≥ 80 %)", "unanswerable_refused"),
    ]
    signals = ", ".join(result.get("signals", result["features"]))
    lines = [
        "# The reader's decision: dev and test",
        "",
        f"Confidence: a logistic model over {signals}, fitted on "
        f"{result['fitted_on']}; abstention threshold **{result['threshold']:.3f}** (chosen on "
        "dev: most right answers minus wrong answers). Test was never used to fit or choose.",
        "",
        f"Questions: dev {d['reader']['n']} ({d['reader']['unanswerable']} unanswerable), "
        f"test {t['reader']['n']} ({t['reader']['unanswerable']} unanswerable).",
        "",
        "| figure | dev: reader | dev: old rules | dev: answer all | **test: reader** | "
        "test: old rules | test: answer all |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        cells = [
            _f(x[k][key]) for x in (d, t) for k in ("reader", "legacy_rules", "answer_everything")
        ]
        cells[3] = f"**{cells[3]}**"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        f"| proposed answers right (the model's ceiling) | {_f(d['draft_accuracy'])} | | | "
        f"{_f(t['draft_accuracy'])} | | |",
        f"| AUC of the confidence (right vs wrong proposals) | {_f(d['auc'], False)} | | | "
        f"**{_f(t['auc'], False)}** | | |",
        f"| area under the risk–coverage curve | {_f(d['risk_coverage']['area'], False)} | | | "
        f"{_f(t['risk_coverage']['area'], False)} | | |",
        "",
        '"old rules" applies the rules this reader replaced (unknown terms, echo, capitalised '
        'names, lexical support) to the same proposed answers; "answer all" gives every '
        "cited proposal.",
        "",
        "## Single signals (AUC, right vs wrong proposed answers)",
        "",
        "| signal | dev | test |",
        "|---|---:|---:|",
    ]
    for f in result["features"]:
        lines.append(
            f"| {f} | {_f(d['single_signal_auc'][f], False)} | "
            f"{_f(t['single_signal_auc'][f], False)} |"
        )
    if result.get("selection"):
        lines += [
            "",
            "## Choosing the signals (dev only)",
            "",
            "Out-of-fold log-loss of P(right) on dev (5 folds grouped by question, 4 shuffles; "
            "lower is better): all signals, and the greedy forward selection, at each L2 "
            "strength. The lowest is the shipped model.",
            "",
            "| L2 | signals | log-loss |",
            "|---:|---|---:|",
        ]
        best = min(r["logloss"] for r in result["selection"])
        for r in result["selection"]:
            feats = r["features"]
            label = "all" if len(feats) == len(FEATURES) else ", ".join(feats) or "none"
            mark = " **(chosen)**" if r["logloss"] == best else ""
            lines.append(f"| {r['l2']:g} | {label}{mark} | {r['logloss']:.4f} |")
    lines += [
        "",
        "## Calibration (confidence bin → accuracy of those answers)",
        "",
        "| bin | dev n | dev accuracy | test n | test accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for a, b in zip(d["calibration"], t["calibration"], strict=True):
        lines.append(f"| {a['bin']} | {a['n']} | {_f(a['accuracy'])} | {b['n']} | "
                     f"{_f(b['accuracy'])} |")  # fmt: skip
    lines += [
        "", "## By question type (reader at the threshold)", "",
        "| type | dev n | dev accuracy | dev refused | test n | test accuracy | test refused |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for typ in sorted(set(d["by_type"]) | set(t["by_type"])):
        a, b = d["by_type"].get(typ), t["by_type"].get(typ)

        lines.append(f"| {typ} | {_type_cells(a)} | {_type_cells(b)} |")
    lines += ["", "![risk–coverage](reader.png)", ""]
    return "\n".join(lines)


def _type_cells(x: dict[str, Any] | None) -> str:
    if not x:
        return "0 | — | —"
    acc = x["accuracy"] if x["answerable"] else None
    refused = x["answerable_refused"] if x["answerable"] else x["unanswerable_refused"]
    return f"{x['n']} | {_f(acc)} | {_f(refused)}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, style in (("dev", "--"), ("test", "-")):
        rc = result[name]["risk_coverage"]
        xs = [p["coverage"] for p in rc["curve"]]
        ys = [p["accuracy"] for p in rc["curve"]]
        ax.plot(xs, ys, style, label=f"{name} (area {rc['area']:.2f})")
        chosen = [p for p in rc["curve"] if p["threshold"] >= result["threshold"]]
        if chosen:
            ax.plot([chosen[-1]["coverage"]], [chosen[-1]["accuracy"]], "o", color="black")
    ax.set_xlabel("share of all questions answered (coverage)")
    ax.set_ylabel("accuracy of the answered")
    ax.set_title(f"Risk–coverage; dot = chosen threshold {result['threshold']:.2f}")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "reader.json").write_text(json.dumps(result, indent=1, default=str), "utf-8")
    (out / "reader.md").write_text(markdown(result), "utf-8")
    plot(result, out / "reader.png")


def apply(records: Sequence[dict[str, Any]], cal: Calibration) -> list[dict[str, Any]]:
    """The records as the service decides at ``cal``: a proposed answer whose confidence is
    below the threshold becomes "not found" (the decision ``Reader.read`` takes, from the same
    signals). Used to re-render a report of a run made before the calibration existed."""
    from rag.evaluation import metrics as m
    from rag.prompts import NOT_FOUND_EN, NOT_FOUND_VI
    from rag.reader import Reader

    reader = Reader(cal)
    out = []
    for r in records:
        r = dict(r)
        sig = r.get("signals") or {}
        if "lp_mean" in sig and not sig.get("uncited"):
            conf = cal.probability(sig)
            r["confidence"] = conf
            if not reader.answers(conf, sig):
                english = bool(sig.get("english"))
                r["answer"] = NOT_FOUND_EN if english else NOT_FOUND_VI
                r["abstained"] = True
                r["cited"] = []
                r["correct"] = m.item_correct(r["answer"], True, r["answers"])
                if r["sources"]:
                    r["token_f1"] = 0.0
                    r["citation_precision"] = None
                    r["citation_recall"] = 0.0
                    r["supported"] = None
        out.append(r)
    return out


def main(
    report: Path,
    out: Path,
    calibration: Path | None,
    *,
    rerender: bool = False,
    also: Sequence[Path] = (),
) -> None:
    """``rag calibrate``: fit on dev (writing ``calibration``), report dev and test; the dev
    records of the runs in ``also`` join the fit. With ``rerender`` also rewrite the run's report
    with the decisions taken at the fitted threshold."""
    doc = json.loads(report.read_text("utf-8"))
    records = doc["records"]
    others = [json.loads(p.read_text("utf-8"))["records"] for p in also]
    cal, result = study(records, also=others)
    if calibration is not None:
        calibration.write_text(json.dumps(asdict(cal), indent=1) + "\n", "utf-8")
    write(result, out)
    if rerender:
        from rag.evaluation.report import Report, load_report
        from rag.evaluation.report import write as write_report
        from rag.evaluation.runner import ItemRecord

        decided = [ItemRecord.from_dict(r) for r in apply(records, cal)]
        config = dict(doc["config"])
        config["decisions"] = (
            f"re-applied by `rag calibrate --rerender` at threshold {cal.threshold:.3f} "
            f"({cal.fitted_on}) from the signals this run recorded"
        )
        # Compared with the same run as it was decided before (the previous calibration).
        before = load_report(report)
        write_report(
            Report.build(config, decided, before, f"{report} at the previous calibration"), out
        )
