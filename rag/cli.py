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

from rag.bench.cli import register as register_bench
from rag.evaluation.cli import register as register_eval
from rag.generation import EngineUnavailable
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
    from rag.index import EmbedderMismatch, IndexStore
    from rag.service import RAG

    s = Settings()
    try:
        if rebuild and s.index_dir.exists():
            IndexStore(s.index_dir).current_file.unlink(missing_ok=True)
        try:
            rag = RAG.from_settings(s)
        except EmbedderMismatch as exc:
            # Vectors are derived from the articles: another embedder means embedding again.
            console.print(f"[yellow]{exc.args[0].split(';')[0]}[/]: embedding everything again")
            IndexStore(s.index_dir).current_file.unlink(missing_ok=True)
            rebuild = True
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
    if s.passage_states_mb:
        states = rag.prepare_states()
        if states is not None:
            console.print(
                f"passage states: {states.computed} computed, {states.kept} kept, "
                f"{states.removed} removed, {states.skipped} skipped; "
                f"{states.bytes / 1e6:.0f} MB in {states.seconds:.1f} s"
            )
            for message in states.messages:
                console.print(f"[yellow]{message}[/]")
        rag.close()


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
    except (ModelError, EngineUnavailable) as exc:
        _fail(f"{exc}. Run `rag doctor` to see whether this machine runs the model.")
    finally:
        rag.close()
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
def doctor(
    all_models: Annotated[
        bool, typer.Option("--all", help="Also check the small model (and any other fetched).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    compare_buffers: Annotated[
        bool,
        typer.Option(
            "--compare-buffers",
            help="Measure prompt and decode speed with llama.cpp's extra buffer types on and off "
            "(a 500-token prompt, 64 tokens; only meaningful on a quiet machine).",
        ),
    ] = False,
) -> None:
    """Check in seconds whether this machine runs the configured models, and why not.

    CPU features, llama.cpp's build features and buffer types, a real load and a short
    generation of each answer model (in a worker process, so a crash is a finding), and the
    embedding model.
    """
    from dataclasses import asdict

    from rag.doctor import run_checks

    s = Settings()
    models = [s.generator_model]
    if all_models:
        specs = load_manifest(s.manifest_path)
        models += [
            n for n, sp in specs.items()
            if sp.role == "generator" and n != s.generator_model and is_ready(sp, s.models_dir)
        ]  # fmt: skip
    checks = run_checks(s, models, compare_buffers=compare_buffers)
    if as_json:
        print(json.dumps([asdict(c) for c in checks], ensure_ascii=False, indent=1))
    else:
        table = Table("check", "", "finding", show_lines=True)
        for c in checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail)
        console.print(table)
        for c in checks:
            if "system_info" in c.facts:
                console.print(f"[dim]llama.cpp: {c.facts['system_info']}[/]")
                break
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


documents_app = typer.Typer(
    help="List, delete, restore and purge articles (deletes go to a trash).",
    no_args_is_help=True,
)
app.add_typer(documents_app, name="documents")


@documents_app.command("list")
def documents_list() -> None:
    """The indexed articles."""
    for r in _rag().documents():
        print(f"{r.name}\t{r.chunks} chunks\t{r.title[:60]}")


@documents_app.command("trash")
def documents_trash() -> None:
    """Deleted and replaced articles that can be restored, newest first."""
    from datetime import UTC, datetime

    for e in _rag().trashed():
        when = datetime.fromtimestamp(e.deleted_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{e.id}\t{e.name}\t{e.reason}\t{when}")


@documents_app.command("delete")
def documents_delete(name: str) -> None:
    """Move article NAME to the trash and drop it from the index."""
    from rag.service import DocumentError

    try:
        _rag().delete_document(name)
    except (DocumentError, KeyError) as exc:
        _fail(f"cannot delete {name!r}: {exc}")
    console.print(f"moved {name} to the trash; `rag documents restore {name}` brings it back")


@documents_app.command("restore")
def documents_restore(
    key: Annotated[str, typer.Argument(help="A trash id, or a file name (its newest entry).")],
) -> None:
    """Bring a trashed article back and index it."""
    try:
        report = _rag().restore_document(key)
    except KeyError:
        _fail(f"no trash entry {key!r}; `rag documents trash` lists them")
    console.print(f"restored; added {report.added or report.updated}")


@documents_app.command("purge")
def documents_purge(
    key: Annotated[str, typer.Argument(help="A trash id, or a file name (its newest entry).")],
) -> None:
    """Delete a trashed article for good."""
    try:
        entry = _rag().purge_document(key)
    except KeyError:
        _fail(f"no trash entry {key!r}; `rag documents trash` lists them")
    console.print(f"purged {entry.id} ({entry.name})")


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
    from api.deps import write_mode

    rag = _rag(s)  # index and models are checked here, so a problem is one clear sentence
    try:
        rag.generator  # noqa: B018 - load the answer model before accepting requests
    except ModelError as exc:
        _fail(str(exc))
    engine = rag.engine_state()
    console.print(f"answer engine: {engine['state']} ({engine.get('detail', '')})")
    console.print(f"documents: {write_mode(s)}")
    uvicorn.run(create_app(s, rag=rag), host=s.host, port=s.port, log_level="info")


@app.command("serve-model")
def serve_model(
    port: Annotated[int, typer.Option(help="Port of the model server.")] = 8080,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    model: Annotated[
        str | None,
        typer.Option(help="Manifest model name or GGUF path (default: RAG_GENERATOR_MODEL)."),
    ] = None,
) -> None:
    """Serve the answer model over the OpenAI API (llama-cpp-python's server, with the AMX
    guard), for `RAG_LLM_URL=http://HOST:PORT/v1` on this or other machines."""
    import os

    from rag.models import resolve

    s = Settings()
    try:
        path = resolve(model or s.generator_model, s.models_dir, "generator")
    except ModelError as exc:
        _fail(str(exc))
    cmd = [
        sys.executable, "-m", "rag.generation.model_server", "--model", str(path),
        "--host", host, "--port", str(port), "--n_ctx", str(s.n_ctx),
        "--n_threads", str(s.n_threads), "--n_threads_batch", str(s.n_threads),
    ]  # fmt: skip
    console.print(f"model server for {Path(path).name} on http://{host}:{port}/v1")
    os.execv(sys.executable, cmd)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
