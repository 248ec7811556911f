"""The `rag eval` command, added to the main CLI by ``register(app)``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rag.service import RAG

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to ``app``."""
    app.command("eval")(eval_command)
    app.command("calibrate")(calibrate_command)


def calibrate_command(
    report: Annotated[Path, typer.Option(help="report.json of a `rag eval` run.")] = Path(
        "eval/reports/latest/report.json"
    ),
    out: Annotated[Path, typer.Option(help="Folder for reader.json/.md/.png.")] = Path(
        "eval/reports/latest"
    ),
    write: Annotated[
        bool,
        typer.Option(
            help="Write the fitted model for the run's answer model (rag/calibration.json for "
            "the default model, rag/calibration.<model>.json for another)."
        ),
    ] = False,
    rerender: Annotated[
        bool,
        typer.Option(
            help="Also rewrite report.md/json with the decisions at the fitted threshold."
        ),
    ] = False,
    also: Annotated[
        list[Path] | None,
        typer.Option(
            help="report.json of another run of the same gold set (e.g. on another CPU) whose "
            "dev records join the fit; repeatable."
        ),
    ] = None,
) -> None:
    """Fit the reader's confidence and threshold on the dev split; report dev and test."""
    import json

    from rag.evaluation.calibrate import main
    from rag.reader import calibration_path

    try:
        model = json.loads(report.read_text("utf-8"))["config"]["generator_model"]
        target = calibration_path(model)
        main(report, out, target if write else None, rerender=rerender, also=also or [])
    except (OSError, ValueError, KeyError) as exc:
        _fail(f"cannot calibrate from {report}: {exc}")
    console.print(f"wrote {out / 'reader.md'}" + (f" and {target}" if write else ""))


def eval_command(
    gold: Annotated[Path, typer.Option(help="Gold questions (JSONL).")] = Path("eval/gold.jsonl"),
    url: Annotated[
        str | None,
        typer.Option(help="Evaluate a running server (e.g. http://127.0.0.1:8000) instead."),
    ] = None,
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="Search only; no answer model (seconds).")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="An earlier report.json (or its folder); every figure shows its change."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json/.md/.png.")] = Path(
        "eval/reports/latest"
    ),
    small: Annotated[
        bool, typer.Option(help="Use the small 0.5B answer model (in-process only).")
    ] = False,
) -> None:
    """Run the gold questions and write a JSON report, a Markdown summary and a figure."""
    from rag.evaluation.report import Report, build_config, load_report, write
    from rag.evaluation.runner import Backend, HttpBackend, InProcessBackend, load_gold, run

    try:
        items = load_gold(gold, limit)
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the gold set: {exc}")
    if not items:
        _fail(f"{gold} holds no questions")
    base = None
    if baseline is not None:
        try:
            base = load_report(baseline)
        except (OSError, ValueError) as exc:
            _fail(f"cannot read the baseline report: {exc}")

    backend: Backend
    if url:
        if small:
            console.print("[yellow]--small is ignored with --url: the server picks its model[/]")
        backend = HttpBackend(url)
    else:
        backend = InProcessBackend(_local_rag(small))

    t0 = time.perf_counter()
    records = run(backend, items, retrieval_only=retrieval_only)
    seconds = time.perf_counter() - t0
    config = build_config(
        backend.describe(), gold=gold, retrieval_only=retrieval_only, limit=limit, seconds=seconds
    )
    if isinstance(backend, HttpBackend):
        backend.close()
    report = Report.build(config, records, base, str(baseline) if baseline else None)
    paths = write(report, out)
    if any(r.signals for r in records):
        # The reader's decision on dev and test, at the committed calibration (not refitted).
        from dataclasses import asdict

        from rag.evaluation.calibrate import study
        from rag.evaluation.calibrate import write as write_reader
        from rag.reader import Calibration

        cal = Calibration.load()
        if cal is not None:
            _, result = study([asdict(r) for r in records], cal)
            write_reader(result, out)
            paths["reader"] = out / "reader.md"
    _print_summary(report.summary["overall"], retrieval_only)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def _local_rag(small: bool) -> RAG:
    from rag.index import IndexError_
    from rag.models import ModelError
    from rag.service import RAG
    from rag.settings import SMALL_GENERATOR, Settings

    settings = Settings(generator_model=SMALL_GENERATOR) if small else Settings()
    try:
        rag = RAG.from_settings(settings)
    except (ModelError, IndexError_) as exc:
        _fail(str(exc))
    if not rag.index.chunks:
        _fail(f"the index in {settings.index_dir} is empty; run `rag ingest` first")
    return rag


def _fail(msg: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(1)


def _print_summary(overall: dict[str, Any], retrieval_only: bool) -> None:
    from rag.evaluation.report import fmt

    rows = [
        ("file hit@1 / @5", "retrieval", ["file_hit@1", "file_hit@5"]),
        ("passage hit@5", "retrieval", ["passage_hit@5"]),
        ("MRR@10", "retrieval", ["mrr@10"]),
    ]
    if not retrieval_only:
        rows += [
            ("accuracy / token F1", "answers", ["accuracy", "token_f1"]),
            ("citation P / R / support", "citations", ["precision", "recall", "support"]),
            ("abstention P / R / F1", "abstention", ["precision", "recall", "f1"]),
        ]
    table = Table("metric", "value")
    for label, group, keys in rows:
        table.add_row(label, " / ".join(fmt(overall[group][k]) for k in keys))
    speed = overall["speed"]
    for name in ("retrieval_ms", "first_token_ms", "total_ms"):
        if name in speed:
            p = speed[name]
            table.add_row(
                f"{name[:-3].replace('_', ' ')} p50 / p95 (ms)",
                f"{fmt(p['p50'], unit='ms')} / {fmt(p['p95'], unit='ms')}",
            )
    if "tokens_per_s" in speed:
        table.add_row("decoding tokens/s", fmt(speed["tokens_per_s"], unit="tok/s"))
    console.print(table)
