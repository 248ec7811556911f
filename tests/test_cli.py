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
