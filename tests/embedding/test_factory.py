"""Which embedder the settings give."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from rag.embedding import HashingEmbedder, factory
from rag.embedding.factory import load_embedder, onnx_ready_folder
from rag.settings import Settings


def test_fake_embedder() -> None:
    assert isinstance(load_embedder(Settings(embedder="fake", _env_file=None)), HashingEmbedder)  # type: ignore[call-arg]


def _folder(tmp_path: Path, bidirectional: bool) -> Path:
    model = tmp_path / "my-embedder"
    model.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (model / name).write_text("{}")
    flag = "true" if bidirectional else "false"
    (model / "config.json").write_text(f'{{"use_bidirectional_attention": {flag}}}')
    return model


def test_what_the_onnx_path_can_run(tmp_path: Path) -> None:
    assert "no model.safetensors" in str(onnx_ready_folder("intfloat/multilingual-e5-small"))
    assert "not a bidirectional Gemma" in str(onnx_ready_folder(_folder(tmp_path, False)))
    (tmp_path / "b").mkdir()
    assert onnx_ready_folder(_folder(tmp_path / "b", True)) is None


def test_a_model_the_onnx_export_cannot_run_falls_back_to_sentence_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[Any] = []

    class FakeST:
        def __init__(self, model: Any, **kw: Any) -> None:
            made.append((model, kw))

    monkeypatch.setattr(factory, "SentenceTransformerEmbedder", FakeST)
    model = _folder(tmp_path, False)
    s = Settings(embedder="onnx", embedding_model=str(model), _env_file=None)  # type: ignore[call-arg]
    with caplog.at_level(logging.WARNING):
        emb = load_embedder(s)
    assert isinstance(emb, FakeST) and made[0][0] == model
    assert "using sentence-transformers instead of ONNX Runtime" in caplog.text
    assert "not a bidirectional Gemma" in caplog.text
