"""Aggregate per-item records and write the JSON report, the Markdown summary and the figure."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.evaluation import metrics as m
from rag.evaluation.runner import HIT_KS, SEARCH_K, ItemRecord

REPORT_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]


# --- aggregation -------------------------------------------------------------------------------
def _p(values: Sequence[float | None]) -> dict[str, float | None]:
    return {"p50": m.percentile(values, 50), "p95": m.percentile(values, 95)}


def aggregate(records: Sequence[ItemRecord], *, with_answers: bool) -> dict[str, Any]:
    """Every figure for one group of records; None where a figure has nothing to count."""
    answerable = [r for r in records if r.answerable]
    retrieval: dict[str, float | None] = {}
    for k in HIT_KS:
        retrieval[f"file_hit@{k}"] = m.rate([r.file_hit.get(str(k), False) for r in answerable])
    for k in HIT_KS:
        hits = [r.passage_hit.get(str(k), False) for r in answerable]
        retrieval[f"passage_hit@{k}"] = m.rate(hits)
    retrieval[f"mrr@{SEARCH_K}"] = m.mean([r.reciprocal_rank or 0.0 for r in answerable])
    out: dict[str, Any] = {
        "questions": {
            "n": len(records),
            "answerable": len(answerable),
            "unanswerable": len(records) - len(answerable),
            "errors": sum(r.error is not None for r in records),
        },
        "retrieval": retrieval,
    }
    speed: dict[str, Any] = {"retrieval_ms": _p([r.search_ms for r in records])}
    if with_answers:
        right = [r for r in answerable if r.correct]
        out["answers"] = {
            "accuracy": m.rate([bool(r.correct) for r in answerable]),
            "correct": m.rate([bool(r.correct) for r in records]),
            "token_f1": m.mean([r.token_f1 for r in answerable]),
            "abstained": m.rate([bool(r.abstained) for r in records]),
        }
        out["citations"] = {
            "precision": m.mean([r.citation_precision for r in answerable]),
            "recall": m.mean([r.citation_recall for r in answerable]),
            "support": m.rate([bool(r.supported) for r in right]),
        }
        abst = m.prf([bool(r.abstained) for r in records], [not r.answerable for r in records])
        out["abstention"] = {"precision": abst.precision, "recall": abst.recall, "f1": abst.f1}
        speed["first_token_ms"] = _p([r.first_token_ms for r in records])
        speed["total_ms"] = _p([r.total_ms for r in records])
        speed["tokens_per_s"] = m.tokens_per_second(
            [
                # The reader decides before it shows anything, so the model's own decode time
                # is what tokens/s is measured on where the trace has it.
                (r.generated_tokens or 0, 0.0, r.decode_ms)
                if r.decode_ms
                else (r.generated_tokens or 0, r.first_token_ms, r.total_ms or 0.0)
                for r in records
            ]
        )
        speed["prompt_tokens"] = _p([r.prompt_tokens for r in records if r.prompt_tokens])
        # Of those, read back from a stored passage state (0 where none matched).
        speed["state_tokens"] = _p([r.state_tokens or 0 for r in records if r.prompt_tokens])
    out["speed"] = speed
    return out


def types_in_order(records: Sequence[ItemRecord]) -> list[str]:
    return list(dict.fromkeys(r.type for r in records))


def summarize(records: Sequence[ItemRecord], *, with_answers: bool) -> dict[str, Any]:
    return {
        "overall": aggregate(records, with_answers=with_answers),
        "by_type": {
            t: aggregate([r for r in records if r.type == t], with_answers=with_answers)
            for t in types_in_order(records)
        },
    }


def delta(current: Any, base: Any) -> Any:
    """The change of every number present in both trees (None where either side lacks it)."""
    if isinstance(current, dict):
        b = base if isinstance(base, dict) else {}
        return {k: delta(v, b.get(k)) for k, v in current.items()}
    numeric = (int, float)
    if (
        isinstance(current, numeric)
        and isinstance(base, numeric)
        and not isinstance(current, bool)
        and not isinstance(base, bool)
    ):
        return current - base
    return None


# --- configuration -----------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def build_config(
    backend: dict[str, Any],
    *,
    gold: Path,
    retrieval_only: bool,
    limit: int | None,
    seconds: float,
) -> dict[str, Any]:
    status = _git("status", "--porcelain")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "gold": str(gold),
        "limit": limit,
        "mode": "retrieval-only" if retrieval_only else "full",
        "search_k": SEARCH_K,
        "seconds": round(seconds, 2),
        "git": {
            "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(status) if status is not None else None,
        },
        "machine": {
            "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)),
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **backend,
    }


# --- report object -----------------------------------------------------------------------------
@dataclass
class Report:
    config: dict[str, Any]
    records: list[ItemRecord]
    summary: dict[str, Any]
    baseline: Report | None = None
    baseline_path: str | None = None
    baseline_note: str = ""

    @property
    def with_answers(self) -> bool:
        return self.config.get("mode") != "retrieval-only"

    @classmethod
    def build(
        cls,
        config: dict[str, Any],
        records: list[ItemRecord],
        baseline: Report | None = None,
        baseline_path: str | None = None,
    ) -> Report:
        with_answers = config.get("mode") != "retrieval-only"
        summary = summarize(records, with_answers=with_answers)
        note = ""
        if baseline is not None and baseline.records:
            ids = {r.id for r in records}
            kept = [r for r in baseline.records if r.id in ids]
            # A change means something only over the same questions (e.g. a --limit run).
            if kept and len(kept) < len(baseline.records):
                note = (
                    f"the baseline is restricted to the {len(kept)} questions of this run "
                    f"(it has {len(baseline.records)})"
                )
                base_summary = summarize(kept, with_answers=baseline.with_answers)
                baseline = Report(baseline.config, kept, base_summary)
            missing = len(ids - {r.id for r in baseline.records})
            if missing:
                note += ("; " if note else "") + f"{missing} questions are not in the baseline"
        return cls(config, records, summary, baseline, baseline_path, note)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": REPORT_VERSION,
            "config": self.config,
            "summary": self.summary,
            "baseline": None,
            "delta": None,
            "records": [r.to_dict() for r in self.records],
        }
        if self.baseline is not None:
            out["baseline"] = {
                "path": self.baseline_path,
                "date": self.baseline.config.get("date"),
                "commit": (self.baseline.config.get("git") or {}).get("commit"),
                "mode": self.baseline.config.get("mode"),
                "note": self.baseline_note,
            }
            out["delta"] = delta(self.summary, self.baseline.summary)
        return out


def load_report(path: Path) -> Report:
    """A report written earlier: ``report.json`` or the folder that holds one."""
    if path.is_dir():
        path = path / "report.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        records = [ItemRecord.from_dict(d) for d in data.get("records", [])]
        return Report(data["config"], records, data["summary"])
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an evaluation report ({exc!r})") from exc


def write(report: Report, out: Path) -> dict[str, Path]:
    """Write report.json, report.png and report.md into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "png": out / "report.png", "md": out / "report.md"}
    paths["json"].write_text(
        json.dumps(report.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    figure(report, paths["png"])
    paths["md"].write_text(markdown(report, image=paths["png"].name), encoding="utf-8")
    return paths


# --- formatting --------------------------------------------------------------------------------
def _get(tree: dict[str, Any] | None, path: Sequence[str]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _num(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"
    if unit == "tok/s":
        return f"{value:.1f}"
    if unit == "count":
        return f"{value:.0f}"
    return f"{value:.2f}"


def fmt(value: Any, base: Any = None, unit: str = "rate", *, compare: bool = False) -> str:
    """``0.91`` alone, or ``0.91 (+0.04)`` when comparing with a baseline value."""
    if value is None:
        return "—"
    text = _num(float(value), unit)
    if compare and isinstance(base, int | float):
        d = float(value) - float(base)
        text += f" ({'+' if d >= 0 else '-'}{_num(abs(d), unit)})"
    return text


def _unit(path: Sequence[str]) -> str:
    if path[0] == "questions" or "prompt_tokens" in path or "state_tokens" in path:
        return "count"
    if path[-1] == "tokens_per_s":
        return "tok/s"
    if path[0] == "speed":
        return "ms"
    return "rate"


def _date(config: dict[str, Any]) -> str:
    raw = str(config.get("date", ""))
    try:
        return datetime.fromisoformat(raw).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return raw


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


# --- Markdown ----------------------------------------------------------------------------------
DEFINITIONS = """\
- Every string match first normalises both sides: Unicode NFC, lower case, single spaces, one \
kind of dash and quote, thousands separators dropped (1.000 = 1,000 = 1000), decimal comma = \
point. A required number may not be part of a longer one ("25" is not found in "2025").
- **file hit@k**: a passage of a gold source file is among the first k passages of a search \
with k = {k} (k counts passages, not distinct files). **MRR@{k}**: mean of 1/rank of the first \
such passage (0 if none). **passage hit@k**: the first k passages that come from gold files \
hold every required string of one alternative between them (each string whole inside one \
passage, so a multi-document answer needs both parts). Retrieval figures count answerable \
questions only.
- **accuracy**: share of *answerable* questions whose answer holds every required string of at \
least one alternative; an abstention counts as wrong. **correct**: the same over *all* \
questions, where an unanswerable question is correct when the service abstained (so for the \
`unanswerable` type it is the abstention recall).
- **token F1**: syllable F1 between the answer (markers dropped) and the best alternative's \
strings joined; 0 for an abstention; answerable questions only.
- **citation precision / recall**: file level, per answerable question, then averaged; \
precision over answers that cite something, recall over all answerable questions (an \
abstention has recall 0). **support**: share of the correct answers whose cited passages \
hold every required string of one alternative (right for the right reason).
- **abstention P / R / F1**: the positive class is "not in the articles"; predicted = the \
service abstained, gold = the question has no sources.
- **speed**: p50 / p95 in milliseconds. Retrieval is the k = {k} search call (server-side time \
over HTTP); first token and total come from the answer's own timings; tokens/s is all tokens \
after the first divided by all time after the first token.
- "—" means there was nothing to count.
"""

_SUMMARY_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    ("retrieval", "file hit@1", ("retrieval", "file_hit@1")),
    ("retrieval", "file hit@3", ("retrieval", "file_hit@3")),
    ("retrieval", "file hit@5", ("retrieval", "file_hit@5")),
    ("retrieval", "passage hit@1", ("retrieval", "passage_hit@1")),
    ("retrieval", "passage hit@3", ("retrieval", "passage_hit@3")),
    ("retrieval", "passage hit@5", ("retrieval", "passage_hit@5")),
    ("retrieval", f"MRR@{SEARCH_K}", ("retrieval", f"mrr@{SEARCH_K}")),
    ("answers", "accuracy (answerable)", ("answers", "accuracy")),
    ("answers", "correct (all questions)", ("answers", "correct")),
    ("answers", "token F1", ("answers", "token_f1")),
    ("answers", "abstained (share)", ("answers", "abstained")),
    ("citations", "precision", ("citations", "precision")),
    ("citations", "recall", ("citations", "recall")),
    ("citations", "support", ("citations", "support")),
    ("abstention", "precision", ("abstention", "precision")),
    ("abstention", "recall", ("abstention", "recall")),
    ("abstention", "F1", ("abstention", "f1")),
    ("speed", "retrieval p50 (ms)", ("speed", "retrieval_ms", "p50")),
    ("speed", "retrieval p95 (ms)", ("speed", "retrieval_ms", "p95")),
    ("speed", "first token p50 (ms)", ("speed", "first_token_ms", "p50")),
    ("speed", "first token p95 (ms)", ("speed", "first_token_ms", "p95")),
    ("speed", "total p50 (ms)", ("speed", "total_ms", "p50")),
    ("speed", "total p95 (ms)", ("speed", "total_ms", "p95")),
    ("speed", "decoding tokens/s", ("speed", "tokens_per_s")),
    ("speed", "prompt tokens p50", ("speed", "prompt_tokens", "p50")),
    ("speed", "prompt tokens p95", ("speed", "prompt_tokens", "p95")),
    ("speed", "prompt tokens from a passage state p50", ("speed", "state_tokens", "p50")),
    ("questions", "questions", ("questions", "n")),
    ("questions", "answerable", ("questions", "answerable")),
    ("questions", "errors", ("questions", "errors")),
]

_TYPE_TABLES: list[tuple[str, bool, str, list[tuple[str, tuple[str, ...]]]]] = [
    ("Retrieval", False, "answerable", [
        ("hit@1", ("retrieval", "file_hit@1")), ("hit@3", ("retrieval", "file_hit@3")),
        ("hit@5", ("retrieval", "file_hit@5")), ("passage hit@1", ("retrieval", "passage_hit@1")),
        ("passage hit@3", ("retrieval", "passage_hit@3")),
        ("passage hit@5", ("retrieval", "passage_hit@5")),
        (f"MRR@{SEARCH_K}", ("retrieval", f"mrr@{SEARCH_K}")),
    ]),
    ("Answers and citations", True, "n", [
        ("accuracy", ("answers", "accuracy")), ("correct", ("answers", "correct")),
        ("token F1", ("answers", "token_f1")), ("abstained", ("answers", "abstained")),
        ("cit. precision", ("citations", "precision")), ("cit. recall", ("citations", "recall")),
        ("support", ("citations", "support")),
    ]),
    ("Abstention", True, "n", [
        ("precision", ("abstention", "precision")), ("recall", ("abstention", "recall")),
        ("F1", ("abstention", "f1")),
    ]),
    ("Speed (ms; decoding in tokens/s)", False, "n", [
        ("retrieval p50", ("speed", "retrieval_ms", "p50")),
        ("retrieval p95", ("speed", "retrieval_ms", "p95")),
    ]),
]  # fmt: skip
_ANSWER_SPEED: list[tuple[str, tuple[str, ...]]] = [
    ("first token p50", ("speed", "first_token_ms", "p50")),
    ("first token p95", ("speed", "first_token_ms", "p95")),
    ("total p50", ("speed", "total_ms", "p50")),
    ("total p95", ("speed", "total_ms", "p95")),
    ("tokens/s", ("speed", "tokens_per_s")),
]


def _short_sources(refs: Sequence[Any], n: int) -> str:
    names = [f"`{r.source}`" + (" ✓" if r.answer_bearing else "") for r in refs[:n]]
    return ", ".join(names) or "none"


def _expected(r: ItemRecord) -> str:
    if not r.answerable:
        return "abstain (not in the articles)"
    alts = [" + ".join(f"`{s}`" for s in alt) for alt in r.answers]
    return " or ".join(alts) + " — from " + ", ".join(f"`{s}`" for s in r.sources)


def _baseline_mark(
    r: ItemRecord, base: dict[str, ItemRecord] | None, ok: Callable[..., bool]
) -> str:
    if base is None:
        return ""
    b = base.get(r.id)
    if b is None:
        return " *(not in baseline)*"
    return " *(also failed in baseline)*" if not ok(b) else " **(new failure)**"


def _answer_ok(r: ItemRecord) -> bool:
    return bool(r.correct) and r.error is None


def markdown(report: Report, *, image: str = "report.png") -> str:
    cfg = report.config
    base = report.baseline
    cmp = base is not None
    summary = report.summary
    bsum = base.summary if base else None
    with_answers = report.with_answers
    q = summary["overall"]["questions"]
    git = cfg.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10]
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    machine = cfg.get("machine") or {}
    lines = [
        "# Evaluation report",
        "",
        f"{_date(cfg)} · commit `{commit}`{dirty} · backend {cfg.get('backend', '')}"
        f"{' ' + str(cfg['url']) if cfg.get('url') else ''} · "
        f"{'retrieval only' if not with_answers else 'retrieval and answers'} · "
        f"{q['n']} questions ({q['answerable']} answerable, {q['unanswerable']} unanswerable) "
        f"from `{cfg.get('gold', '')}` · {cfg.get('seconds', 0):.1f} s on "
        f"{machine.get('cores_available', '?')} cores",
        "",
        f"Models: embedder `{cfg.get('embedding_model', '?')}`, answer model "
        f"`{cfg.get('generator_model', '?') if with_answers else 'not used'}`.",
    ]
    settings = cfg.get("settings")
    if isinstance(settings, dict):
        keys = ("top_k", "context_sentences", "chunk_size", "chunk_overlap", "hybrid", "min_score")
        lines.append("Settings: " + ", ".join(f"{k} {settings.get(k)}" for k in keys) + ".")
    if base is not None:
        bgit = (base.config.get("git") or {}).get("commit") or "unknown"
        lines += [
            "",
            f"Compared with the baseline `{report.baseline_path}` ({_date(base.config)},"
            f" commit `{bgit[:10]}`, {base.config.get('mode', '?')}): changes in brackets"
            + (f"; {report.baseline_note}." if report.baseline_note else "."),
        ]
    lines += ["", "## Definitions", "", DEFINITIONS.format(k=SEARCH_K), "## Summary", ""]

    lines += ["| group | metric | value |", "|---|---|---:|"]
    for group, label, path in _SUMMARY_ROWS:
        if not with_answers and group in ("answers", "citations", "abstention"):
            continue
        if not with_answers and path[1] in ("first_token_ms", "total_ms", "tokens_per_s"):
            continue
        value = fmt(
            _get(summary["overall"], path),
            _get(_get(bsum, ["overall"]), path),
            _unit(path),
            compare=cmp,
        )
        lines.append(f"| {group} | {label} | {value} |")
    lines += ["", f"![Per-type scores and latency distribution]({image})", ""]

    lines += ["## By question type", ""]
    types = list(summary["by_type"])
    for title, needs_answers, count, columns in _TYPE_TABLES:
        if needs_answers and not with_answers:
            continue
        cols = list(columns)
        if title.startswith("Speed") and with_answers:
            cols += _ANSWER_SPEED
        lines += [
            f"### {title}",
            "",
            f"| type | {count} | " + " | ".join(c for c, _ in cols) + " |",
            "|---|---:|" + "---:|" * len(cols),
        ]
        for t in [*types, "overall"]:
            node = summary["overall"] if t == "overall" else summary["by_type"][t]
            bnode = _get(bsum, ["overall"] if t == "overall" else ["by_type", t])
            cells = [fmt(_get(node, p), _get(bnode, p), _unit(p), compare=cmp) for _, p in cols]
            name = "**all**" if t == "overall" else t
            lines.append(f"| {name} | {node['questions'][count]} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += _failures(report)
    return "\n".join(lines).rstrip() + "\n"


def _retrieval_items(
    recs: Sequence[ItemRecord],
    base: dict[str, ItemRecord] | None,
    ok: Callable[[ItemRecord], bool],
) -> list[str]:
    lines: list[str] = []
    for r in recs:
        lines += [
            f"- **{r.id}** ({r.type}){_baseline_mark(r, base, ok)}: {_cell(r.question, 300)}",
            f"  - expected: {_expected(r)}",
            f"  - retrieved top 5: {_short_sources(r.retrieved, 5)}",
        ]
    return [*lines, ""] if lines else []


def _failures(report: Report) -> list[str]:
    base = {r.id: r for r in report.baseline.records} if report.baseline else None
    recs = report.records
    lines = ["## Failing questions", ""]
    if report.with_answers:
        wrong = [r for r in recs if not _answer_ok(r)]
        lines += [f"### Wrong answers ({len(wrong)})", ""]
        if not wrong:
            lines += ["None.", ""]
        for r in wrong:
            got = "*(no answer)*" if r.answer is None else f"“{_cell(r.answer, 300)}”"
            if r.abstained:
                got = "*abstained* — " + got
            lines += [
                f"- **{r.id}** ({r.type}){_baseline_mark(r, base, _answer_ok)}: "
                f"{_cell(r.question, 300)}",
                f"  - expected: {_expected(r)}",
                f"  - got: {got}",
                f"  - cited: {_short_sources(r.cited, 10)}; retrieved top 3: "
                f"{_short_sources(r.retrieved, 3)}",
            ]
            if r.error:
                lines.append(f"  - error: `{_cell(r.error, 300)}`")
        lines.append("")

    def retrieval_ok(r: ItemRecord) -> bool:
        return r.retrieval_ok and not (r.error or "").startswith("search")

    misses = [r for r in recs if not retrieval_ok(r)]
    lines += [
        f"### Retrieval misses ({len(misses)})",
        "",
        "Answerable questions with no passage of a gold file in the top 5.",
        "",
    ]
    lines += _retrieval_items(misses, base, retrieval_ok) or ["None.", ""]

    def passage_ok(r: ItemRecord) -> bool:
        return not retrieval_ok(r) or r.passage_hit.get("5", True)

    partial = [r for r in recs if not passage_ok(r)]
    lines += [
        f"### Answer missing from the top 5 passages ({len(partial)})",
        "",
        "A gold file was retrieved, but its top-5 passages do not hold every required string "
        "(✓ marks a passage that alone holds a full answer).",
        "",
    ]
    lines += _retrieval_items(partial, base, passage_ok) or ["None.", ""]
    errors = [r for r in recs if r.error]
    lines += [f"### Errors ({len(errors)})", ""]
    lines += [f"- **{r.id}**: `{_cell(r.error or '', 300)}`" for r in errors] or ["None."]
    lines.append("")
    return lines


# --- figure ------------------------------------------------------------------------------------
def figure(report: Report, path: Path) -> None:
    """Per-type score bars (with baseline ticks and changes) beside the latency distribution."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the figure only goes to a file
    import matplotlib.pyplot as plt

    summary = report.summary
    bsum = report.baseline.summary if report.baseline else None
    cmp = report.baseline is not None
    if report.with_answers:
        series = [
            ("correct", ("answers", "correct"), "#2b6cb0"),
            ("file hit@1", ("retrieval", "file_hit@1"), "#9ac1e8"),
        ]
    else:
        series = [
            ("file hit@1", ("retrieval", "file_hit@1"), "#2b6cb0"),
            ("passage hit@5", ("retrieval", "passage_hit@5"), "#9ac1e8"),
        ]

    def node(tree: dict[str, Any] | None, t: str) -> Any:
        return _get(tree, ["overall"] if t == "all" else ["by_type", t])

    # A type with nothing to show (unanswerable in a retrieval-only run) would be an empty row.
    types = [
        t
        for t in [*summary["by_type"], "all"]
        if any(_get(node(summary, t), p) is not None for _, p, _ in series)
    ]

    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(14, 0.55 * len(types) + 2.8), gridspec_kw={"width_ratios": [3, 2]}
    )
    height = 0.8 / len(series)
    for i, (label, p, color) in enumerate(series):
        ys = [j + (i - (len(series) - 1) / 2) * height for j in range(len(types))]
        vals = [_get(node(summary, t), p) for t in types]
        bvals = [_get(node(bsum, t), p) for t in types]
        ax.barh(ys, [v or 0.0 for v in vals], height=height * 0.9, color=color, label=label)
        for y, v, b in zip(ys, vals, bvals, strict=True):
            ax.text((v or 0.0) + 0.01, y, fmt(v, b, compare=cmp), va="center", fontsize=7.5)
            if cmp and isinstance(b, int | float):
                ax.plot([b, b], [y - height / 2, y + height / 2], color="black", lw=1.2)
    if cmp:
        ax.plot([], [], color="black", lw=1.2, label="baseline")
    # Retrieval-only bars count answerable questions; "correct" counts every question.
    counted = "n" if report.with_answers else "answerable"
    ax.set_yticks(
        range(len(types)), [f"{t} (n={node(summary, t)['questions'][counted]})" for t in types]
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.axhline(len(types) - 1.5, color="grey", lw=0.5)
    ax.set_title(
        "Per question type"
        + (" (unanswerable: correct = abstained)" if report.with_answers else ""),
        fontsize=10,
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    q = summary["overall"]["questions"]
    mode = "retrieval and answers" if report.with_answers else "retrieval only"
    base = " · changes against the baseline in brackets" if cmp else ""
    fig.suptitle(
        f"Evaluation {_date(report.config)} · {mode} · {q['n']} questions{base}", fontsize=11
    )

    _latency(ax2, report)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(ax: Any, report: Report) -> None:
    fields = [("retrieval", "search_ms")]
    if report.with_answers:
        fields += [("first token", "first_token_ms"), ("total", "total_ms")]
    boxes: list[list[float]] = []
    labels: list[str] = []
    colors: list[str] = []
    runs = [("", report)] + ([("baseline ", report.baseline)] if report.baseline else [])
    for name, attr in fields:
        for prefix, rep in runs:
            vals = [v for r in rep.records if (v := getattr(r, attr)) is not None]
            boxes.append(vals or [float("nan")])
            p50, p95 = m.percentile(vals, 50), m.percentile(vals, 95)
            label = f"{prefix}{name}\np50 {fmt(p50, unit='ms')} ms · p95 {fmt(p95, unit='ms')} ms"
            if not prefix and report.baseline is not None:
                bvals = [v for r in report.baseline.records if (v := getattr(r, attr)) is not None]
                bp50, bp95 = m.percentile(bvals, 50), m.percentile(bvals, 95)
                label = (
                    f"{name}\np50 {fmt(p50, bp50, 'ms', compare=True)} ms"
                    f" · p95 {fmt(p95, bp95, 'ms', compare=True)} ms"
                )
            labels.append(label)
            colors.append("#cbd5e0" if prefix else "#2b6cb0")
    bp = ax.boxplot(boxes, orientation="horizontal", patch_artist=True, widths=0.6, showfliers=True)
    for patch, color in zip(bp["boxes"], colors, strict=True):
        patch.set_facecolor(color)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.invert_yaxis()
    finite = [v for b in boxes for v in b if v == v and v > 0]
    # Retrieval takes milliseconds and generation seconds; only a log axis shows both.
    if finite and max(finite) / min(finite) > 50:
        ax.set_xscale("log")
    ax.set_xlabel("milliseconds per question")
    ax.set_title("Latency distribution", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
