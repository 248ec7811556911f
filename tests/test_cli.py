"""The `rag` command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rag.bench import settings_env
from rag.cli import app
from rag.settings import Settings


def test_ingest_builds_the_passage_states_when_they_are_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    off = CliRunner().invoke(app, ["ingest"])
    assert off.exit_code == 0, off.output
    assert "passage states" not in off.output
    monkeypatch.setenv("RAG_PASSAGE_STATES_MB", "100")
    on = CliRunner().invoke(app, ["ingest"])
    assert on.exit_code == 0, on.output
    chunks = int(on.output.split(" chunks")[0].rsplit(" ", 1)[-1])
    # The fake engine keeps no state but counts each prefix: every chunk, both languages.
    assert f"passage states: {2 * chunks} computed" in on.output


def test_ingest_embeds_everything_again_when_the_embedder_changed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag.service
    from rag.embedding import HashingEmbedder
    from rag.index import EmbedderMismatch, IndexStore

    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    first = CliRunner().invoke(app, ["ingest"])
    assert first.exit_code == 0, first.output
    chunks = int(first.output.split(" chunks")[0].rsplit(" ", 1)[-1])
    other = HashingEmbedder(dim=64)  # another embedder: vectors of another identity and size
    monkeypatch.setattr(rag.service, "load_embedder", lambda s: other)
    with pytest.raises(EmbedderMismatch, match="rag ingest"):
        IndexStore(settings.index_dir).load(expected_embedder=other.identity)
    again = CliRunner().invoke(app, ["ingest"])
    assert again.exit_code == 0, again.output
    assert "embedding everything again" in again.output
    assert f"{chunks} chunks ({chunks} embedded)" in again.output
    index = IndexStore(settings.index_dir).load(expected_embedder=other.identity)
    assert index.dim == 64 and len(index.chunks) == chunks
