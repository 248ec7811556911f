"""The default embedder (EmbeddingGemma as an int8 ONNX graph) against the PyTorch model it was
exported from, on the real articles; and a service that starts without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import SentenceTransformerEmbedder
from rag.embedding.factory import load_embedder
from rag.embedding.onnx import OnnxEmbedder
from rag.ingest.loader import discover
from rag.settings import Settings

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _settings() -> Settings:
    return Settings(models_dir=ROOT / "models", _env_file=None)  # type: ignore[call-arg]


def test_int8_graph_embeds_like_the_pytorch_model() -> None:
    s = _settings()
    onnx = load_embedder(s)
    assert isinstance(onnx, OnnxEmbedder) and "+onnx-int8" in onnx.identity
    st = load_embedder(s.model_copy(update={"embedder": "sentence-transformers"}))
    assert isinstance(st, SentenceTransformerEmbedder)
    pieces = [(p.name, t[i : i + 700]) for p in discover([ROOT / "data" / "articles"])
              for t in [p.read_text(encoding="utf-8")] for i in range(0, len(t), 700)]  # fmt: skip
    texts = [t for _, t in pieces]
    a, b = onnx.embed_documents(texts), st.embed_documents(texts)
    assert a.shape == b.shape == (len(texts), st.dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)
    assert float((a * b).sum(1).min()) > 0.95  # int8 weights; fp32 agrees to 1e-6
    questions = {
        "Chỉ thị số 15-CT/TW được Ban Bí thư ban hành ngày nào?": "002_f0839f41b8944c8b.txt",
        "How many ambassadors took part in the online conference on 29 July?":
            "004_f840cf0540fc0e3d.txt",
    }  # fmt: skip
    for q, source in questions.items():
        qa, qb = onnx.embed_query(q), st.embed_query(q)
        assert float(qa @ qb) > 0.95
        assert pieces[int(np.argmax(a @ qa))][0] == pieces[int(np.argmax(b @ qb))][0] == source


def test_the_service_starts_and_searches_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from rag.service import RAG\n"
        "from rag.settings import Settings\n"
        f"s = Settings(data_dir={str(ROOT / 'data' / 'articles')!r}, "
        f"index_dir={str(tmp_path / 'index')!r}, models_dir={str(ROOT / 'models')!r}, "
        "generator='fake', _env_file=None)\n"
        "rag = RAG.from_settings(s)\n"
        "rag.ingest()\n"
        "hits = rag.search('Chỉ thị số 15-CT/TW được ban hành ngày nào?')\n"
        "print(hits[0].source, 'torch' in sys.modules, "
        "'sentence_transformers' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()  # fmt: skip
    assert out == ["002_f0839f41b8944c8b.txt", "False", "False"]
