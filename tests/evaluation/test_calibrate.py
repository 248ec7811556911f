"""Fitting the reader's confidence on dev: which signals it reads, and what test may not touch."""

from __future__ import annotations

import random
from typing import Any

from rag.evaluation import calibrate as c
from rag.reader import FEATURES


def _records(n: int, split: str, seed: int, prefix: str = "q") -> list[dict[str, Any]]:
    """Proposed answers whose rightness follows ``lp_mean`` (plus noise); every other signal
    is noise, ``english`` is 0/1 noise."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        right = rnd.random() < 0.5
        sig = {f: rnd.gauss(0.0, 1.0) for f in FEATURES}
        sig["lp_mean"] = (0.0 if right else -1.0) + rnd.gauss(0.0, 0.35)
        sig["english"] = float(rnd.random() < 0.2)
        sig["lexical"] = 1.0  # above the reader's lexical floor
        out.append({"id": f"{prefix}{i}", "type": "number", "sources": ["a.txt"],
                    "split": split, "draft_correct": right, "signals": sig})  # fmt: skip
    return out


def test_selection_keeps_the_signal_that_predicts_held_out_dev_and_drops_noise() -> None:
    dev = c.points(_records(120, "dev", seed=1))
    feats, l2, table = c.select(dev)
    assert feats[0] == "lp_mean"
    assert len(feats) < len(FEATURES) // 2
    assert l2 in c.L2_GRID and len(table) == 2 * len(c.L2_GRID)
    # The chosen set predicts held-out dev better than all signals at the same strength.
    all_loss = next(r["logloss"] for r in table if r["l2"] == l2 and len(r["features"]) > 12)
    assert min(r["logloss"] for r in table) < all_loss


def test_the_fit_never_reads_test_and_other_runs_dev_joins_it() -> None:
    records = _records(100, "dev", seed=2) + _records(60, "test", seed=3, prefix="t")
    cal, result = c.study(records)
    flipped = [dict(r, draft_correct=not r["draft_correct"]) if r["split"] == "test" else r
               for r in records]  # fmt: skip
    cal2, result2 = c.study(flipped)
    assert cal.weights == cal2.weights and cal.threshold == cal2.threshold
    assert result["test"]["reader"] != result2["test"]["reader"]  # test is scored, not fitted
    assert set(cal.weights) == set(result["signals"]) <= set(FEATURES)
    assert "lp_mean" in cal.weights and cal.fitted_on.startswith("dev split, 100 drafts")
    # Another run's dev records (same ids: the same questions on another CPU) join the fit.
    pooled, _ = c.study(records, also=[_records(100, "dev", seed=4)])
    assert pooled.fitted_on.startswith("2 runs' dev split, 200 drafts")
    assert pooled.weights != cal.weights
