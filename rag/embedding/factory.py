"""Build the configured embedder: ONNX Runtime int8 (default), sentence-transformers, or the
deterministic fake."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rag.embedding import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from rag.settings import Settings

log = logging.getLogger(__name__)


def onnx_ready_folder(model: Path | str) -> str | None:
    """Why ``model`` cannot run as the ONNX graph (None: it can): the ONNX embedder reads a
    local sentence-transformers folder of a bidirectional Gemma model."""
    path = Path(model)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (path / name).is_file():
            return f"{model} has no {name} (the ONNX embedder needs a local model folder)"
    try:
        config = json.loads((path / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or config.get("use_bidirectional_attention") is not True:
        return f"{model} is not a bidirectional Gemma embedder (the ONNX export handles those)"
    return None


def load_embedder(s: Settings) -> Embedder:
    """The configured embedder. ``embedder=onnx`` with a model the ONNX path cannot run (not a
    local Gemma embedder folder, or onnxruntime missing) falls back to sentence-transformers,
    with a warning that says why."""
    if s.embedder == "fake":
        return HashingEmbedder()
    from rag.models import resolve

    model = resolve(s.embedding_model, s.models_dir, "embedder")
    if s.embedder == "onnx":
        why = onnx_ready_folder(model)
        if why is None:
            from rag.embedding.onnx import EmbedderUnavailable, OnnxEmbedder

            try:
                return OnnxEmbedder(
                    Path(model), n_threads=s.n_threads, batch_size=s.embed_batch_size,
                    max_seq_length=s.embed_max_seq_length, quantize=s.embed_quantize,
                    cache_dir=s.onnx_cache_path / Path(model).name,
                )  # fmt: skip
            except (EmbedderUnavailable, OSError) as exc:
                why = str(exc)
        log.warning("embedder: using sentence-transformers instead of ONNX Runtime: %s", why)
    return SentenceTransformerEmbedder(
        model, n_threads=s.n_threads, batch_size=s.embed_batch_size,
        max_seq_length=s.embed_max_seq_length,
    )  # fmt: skip
