"""The `rag bench` command, added to the main CLI by ``register(app)``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""
    app.command("bench")(bench_command)
    app.command("bench-engine")(bench_engine_command)


def bench_engine_command(
    out: Annotated[Path, typer.Option(help="Folder for engine.json and engine.md.")] = Path(
        "bench/reports/latest"
    ),
    rounds: Annotated[int, typer.Option(min=1, help="Runs of each speed figure.")] = 3,
) -> None:
    """Answer-engine speed: llama.cpp extra buffers on vs off, worker process vs in-process."""
    from rag.bench.engine import markdown, run, write
    from rag.settings import Settings

    report = run(Settings(), rounds=rounds)
    write(report, out)
    print(markdown(report))


def _sections(only: list[str] | None) -> tuple[str, ...]:
    from rag.bench import SECTIONS

    if not only:
        return SECTIONS
    wanted = [s.strip().replace("-", "_") for part in only for s in part.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        console.print(f"[bold red]error:[/] unknown sections {unknown}; choose from {SECTIONS}")
        raise typer.Exit(2)
    return tuple(s for s in SECTIONS if s in wanted)


def bench_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes, one run: a smoke test.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.md.")] = Path(
        "bench/reports/latest"
    ),
    repeat: Annotated[
        int | None, typer.Option(min=1, help="Runs of each measurement (default 3; quick 1).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Sections to run (repeat the option or separate with commas): evidence, "
            "first_token, decode, ingest, search, server, vectors, throughput."
        ),
    ] = None,
    small_too: Annotated[
        bool,
        typer.Option("--small-too/--no-small", help="Also measure the small 0.5B answer model."),
    ] = True,
    url: Annotated[
        str | None,
        typer.Option(help="Also time first evidence over HTTP on this running server."),
    ] = None,
    gold: Annotated[Path, typer.Option(help="Gold questions (JSONL).")] = Path("eval/gold.jsonl"),
    questions: Annotated[
        int | None,
        typer.Option(min=1, help="Only the first N gold questions (evidence, first token)."),
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(help="Embedder variants for the ingest section, comma-separated."),
    ] = None,
    synthetic_chunks: Annotated[
        int | None, typer.Option(min=10, help="Size of the synthetic corpus (default 100000).")
    ] = None,
    decode_tokens: Annotated[
        int | None, typer.Option(min=2, help="Tokens generated per decoding comparison.")
    ] = None,
) -> None:
    """Measure the speed targets of the service and write a JSON and a Markdown report."""
    from rag.bench import BenchOptions, Engines, run_bench, write_report
    from rag.settings import Settings

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build

    options = BenchOptions.for_run(
        quick=quick,
        repeat=repeat,
        sections=_sections(only),
        small_too=small_too,
        url=url,
        gold=gold,
        questions=questions,
        variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None,
        synthetic_chunks=synthetic_chunks,
        decode_tokens=decode_tokens,
        progress=lambda msg: console.print(f"[dim]{msg}[/]"),
    )
    if not gold.is_file():
        console.print(f"[bold red]error:[/] no gold set at {gold}")
        raise typer.Exit(1)
    report = run_bench(Engines.from_settings(Settings()), options)
    paths = write_report(report, out)
    table = Table("target", "measured", "bound", "met")
    for t in report["targets"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "—"}[t["met"]]
        value = "—" if t["value"] is None else f"{t['value']} {t['unit']}"
        table.add_row(t["target"], value, f"{t['bound']} {t['unit']}", met)
    console.print(table)
    for name, err in report["errors"].items():
        console.print(f"[yellow]section {name} failed:[/] {err}")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
