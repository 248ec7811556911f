"""Statistics over runs: distributions, medians and spreads."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from rag.evaluation.metrics import percentile


# --- statistics ----------------------------------------------------------------------------------
def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def dist(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """The distribution of one set of measurements: count, p50, p95, quartiles, min, max, mean."""
    xs = _clean(values)
    return {
        "n": len(xs),
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "q1": percentile(xs, 25),
        "q3": percentile(xs, 75),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
        "mean": sum(xs) / len(xs) if xs else None,
    }


def over_runs(values: Sequence[float | None]) -> dict[str, Any]:
    """One figure measured once per run: its median over the runs and the spread (min, max)."""
    xs = _clean(values)
    return {
        "median": percentile(xs, 50),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
        "runs": [_round(x) for x in xs],
    }


def latency_block(runs: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """Per-run p50 and p95 (each as median and spread over runs), pooled distribution, samples."""
    return {
        "p50": over_runs([percentile(_clean(r), 50) for r in runs]),
        "p95": over_runs([percentile(_clean(r), 95) for r in runs]),
        "pooled": dist([x for r in runs for x in r]),
        "samples": [[_round(x) for x in r] for r in runs],
    }


def decode_rate(stamps: Sequence[float], n: int | None = None) -> float | None:
    """Tokens/s after the first token over the first ``n`` timestamps (seconds since request)."""
    n = len(stamps) if n is None else min(n, len(stamps))
    if n < 2 or stamps[n - 1] <= stamps[0]:
        return None
    return (n - 1) / (stamps[n - 1] - stamps[0])


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None:
        return None
    return float(f"{x:.{digits}g}") if abs(x) < 1e4 else round(x, 1)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def dig(tree: Any, path: Sequence[str]) -> Any:
    node = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
