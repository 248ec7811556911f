"""The `rag` command: a thin layer over the same objects as the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rag.bench_cli import register as register_bench
from rag.evaluation.cli import register as register_eval
from rag.index import IndexError_
from rag.models import ModelError, fetch, is_ready, load_manifest
from rag.settings import DEFAULT_EMBEDDER, DEFAULT_GENERATOR, SMALL_GENERATOR, Settings

app = typer.Typer(help="Offline question answering over Vietnamese articles.", no_args_is_help=True)
models_app = typer.Typer(help="Fetch and verify the model weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")
register_eval(app)
register_bench(app)
console = Console(stderr=True)

PROFILES = {
    "default": [DEFAULT_EMBEDDER, DEFAULT_GENERATOR],
    "small": [DEFAULT_EMBEDDER, SMALL_GENERATOR],
    "all": [DEFAULT_EMBEDDER, DEFAULT_GENERATOR, SMALL_GENERATOR],
}


def _fail(msg: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="Manifest model names.")] = None,
    profile: Annotated[
        str, typer.Option(help="Models to fetch when no names are given: default, small or all.")
    ] = "default",
) -> None:
    """Download the packs, join the slices, check SHA-256; skip what is already verified."""
    s = Settings()
    try:
        specs = load_manifest(s.manifest_path)
        wanted = names or PROFILES.get(profile) or []
        if not wanted:
            _fail(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        for name in wanted:
            if name not in specs:
                _fail(f"unknown model {name!r}; the manifest has {sorted(specs)}")
            fetch(specs[name], s.models_dir, log=lambda m: console.print(f"[green]✓[/] {m}"))
    except ModelError as exc:
        _fail(str(exc))


@models_app.command("list")
def models_list() -> None:
    """Show the models of the manifest and whether each is ready."""
    s = Settings()
    table = Table("name", "role", "ready", "licence", "description")
    for spec in load_manifest(s.manifest_path).values():
        ok = is_ready(spec, s.models_dir)
        table.add_row(spec.name, spec.role, "yes" if ok else "no", spec.license, spec.description)
    Console().print(table)


def _rag(settings: Settings | None = None):  # type: ignore[no-untyped-def]
    from rag.service import RAG

    try:
        return RAG.from_settings(settings or Settings())
    except (ModelError, IndexError_) as exc:
        _fail(str(exc))


@app.command()
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders to add.")] = None,
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything from scratch.")] = False,
) -> None:
    """Index the corpus folder (and copy any given files into it first); incremental."""
    from rag.service import RAG

    s = Settings()
    try:
        if rebuild and s.index_dir.exists():
            from rag.index import IndexStore

            IndexStore(s.index_dir).current_file.unlink(missing_ok=True)
        rag = RAG.from_settings(s)
    except (ModelError, IndexError_) as exc:
        _fail(str(exc))
    report = rag.ingest(paths, rebuild=rebuild)
    for name, why in report.skipped.items():
        console.print(f"[yellow]skipped[/] {name}: {why}")
    console.print(
        f"added {len(report.added)}, updated {len(report.updated)}, removed "
        f"{len(report.removed)}, unchanged {len(report.unchanged)}; {report.chunks} chunks "
        f"({report.embedded} embedded) in {report.seconds:.1f} s"
    )


@app.command()
def search(
    query: str,
    k: Annotated[int, typer.Option("-k", help="Number of passages.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the passages that best match QUERY."""
    from rag.service import QuestionError

    rag = _rag()
    try:
        hits = rag.search(query, k)
    except QuestionError as exc:
        _fail(str(exc), 2)
    if as_json:
        print(json.dumps([h.model_dump() for h in hits], ensure_ascii=False, indent=1))
        return
    for h in hits:
        console.print(f"[bold][{h.n}][/] {h.source} [{h.start}:{h.end}] score={h.score:.4f}")
        print(h.text[:400].replace("\n", " ") + ("…" if len(h.text) > 400 else ""))


@app.command()
def ask(
    question: str,
    top_k: Annotated[int | None, typer.Option(help="Passages to retrieve.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full answer as JSON.")] = False,
    small: Annotated[bool, typer.Option(help="Use the small 0.5B answer model.")] = False,
) -> None:
    """Answer QUESTION from the articles, streaming, and list its citations."""
    from rag.service import QuestionError

    s = Settings(generator_model=SMALL_GENERATOR) if small else Settings()
    rag = _rag(s)
    try:
        answer = None
        for ev in rag.stream(question, top_k=top_k):
            if ev.kind == "token" and not as_json:
                sys.stdout.write(ev.token)
                sys.stdout.flush()
            elif ev.kind == "done":
                answer = ev.answer
    except QuestionError as exc:
        _fail(str(exc), 2)
    except ModelError as exc:
        _fail(str(exc))
    assert answer is not None
    if as_json:
        print(answer.model_dump_json(indent=1))
        return
    print()
    if answer.abstained:
        console.print("[yellow](the articles do not answer this; nearest passages below)[/]")
    for c in answer.citations or answer.passages[:3]:
        snippet = c.text[:300].replace("\n", " ")
        print(f"[{c.n}] {c.source} [{c.start}:{c.end}]  {snippet}…")
    t = answer.timings_ms
    console.print(
        f"[dim]retrieval {t.retrieval:.0f} ms, first token "
        f"{(t.first_token or 0):.0f} ms, total {t.total:.0f} ms[/]"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
) -> None:
    """Serve the HTTP API (and the chat page) with uvicorn."""
    import uvicorn

    from api.main import create_app

    s = Settings()
    if host:
        s.host = host
    if port:
        s.port = port
    rag = _rag(s)  # index and models are checked here, so a problem is one clear sentence
    try:
        rag.generator  # noqa: B018 - load the answer model before accepting requests
    except ModelError as exc:
        _fail(str(exc))
    uvicorn.run(create_app(s, rag=rag), host=s.host, port=s.port, log_level="info")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
