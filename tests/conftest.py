"""Shared fixtures: a copy of the real articles and a RAG service on deterministic fake engines."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.reader import Calibration
from rag.service import RAG
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "data" / "articles"

logging.getLogger("bm25s").setLevel(logging.WARNING)
# Most tests upload and delete on throw-away copies of the corpus. Writes are closed by default
# (no keys, no opt-in); tests/api/test_writes.py and the all-phase fuzz test check exactly that
# with allow_open_writes=False set explicitly.
os.environ.setdefault("RAG_ALLOW_OPEN_WRITES", "true")


#: The reader's calibration the fake-engine tests run with. The shipped one
#: (``rag/calibration.json``) is refitted on the real model's dev-split results whenever the
#: reader changes; tests of the service's plumbing on the fake engine must not move with it.
FAKE_CALIBRATION = Path(__file__).with_name("fake_calibration.json")


@pytest.fixture(autouse=True)
def _fake_engine_calibration(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("e2e") is None:
        pinned = Calibration.load(FAKE_CALIBRATION)
        assert pinned is not None
        monkeypatch.setattr(Calibration, "load", classmethod(lambda cls, path=None: pinned))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "articles"
    shutil.copytree(ARTICLES, d)
    return d


@pytest.fixture
def settings(tmp_path: Path, corpus: Path) -> Settings:
    return Settings(
        data_dir=corpus,
        index_dir=tmp_path / "index",
        models_dir=ROOT / "models",
        embedder="fake",
        generator="fake",
        n_threads=2,
        # The tests of this fixture upload and delete; writes are closed by default
        # (tests/api/test_writes.py checks that).
        allow_open_writes=True,
        generator_process=False,
    )


@pytest.fixture
def fake_generator() -> FakeGenerator:
    return FakeGenerator()


@pytest.fixture
def rag(settings: Settings, fake_generator: FakeGenerator) -> RAG:
    service = RAG(settings, HashingEmbedder(), fake_generator)
    service.ingest()
    return service


def indexed_copy(tmp: Path) -> RAG:
    """A RAG service on fake engines over a copy of the articles in ``tmp``, already indexed
    (for module-scoped fixtures, which cannot use the function-scoped ones above)."""
    shutil.copytree(ARTICLES, tmp / "articles")
    s = Settings(
        data_dir=tmp / "articles", index_dir=tmp / "index", models_dir=ROOT / "models",
        embedder="fake", generator="fake", allow_open_writes=True, generator_process=False,
        _env_file=None,
    )  # fmt: skip
    service = RAG(s, HashingEmbedder(), FakeGenerator())
    service.ingest()
    return service
