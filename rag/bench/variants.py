"""Embedder variants: int8, ONNX Runtime, lookup tables; how each is loaded and tuned."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rag.embedding import Embedder, SentenceTransformerEmbedder
from rag.embedding.onnx import OnnxEmbedder, quantize_int8
from rag.settings import Settings


# --- embedder variants ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One way of running the embedder, for the ingest comparison."""

    name: str
    description: str
    max_seq_length: int | None = None  # None: the setting
    quantize: str | None = None  # "int8": dynamic int8 of the transformer's Linear layers
    dtype: str = "float32"
    threads: int | None = None  # None: the setting
    batch_size: int | None = None  # None: the setting
    backend: str = "torch"  # "torch" or "onnx"
    speed_only: bool = False  # too slow to embed everything: speed on a few passages only


VARIANTS: tuple[Variant, ...] = (
    Variant("fp32", "the PyTorch embedder (sentence-transformers, fp32), the configured "
            "max_seq_length, batches of 16: the embedder before the ONNX default",
            batch_size=16),
    Variant("fp32-seq256", "fp32, max_seq_length 256", max_seq_length=256),
    Variant("fp32-seq128", "fp32, max_seq_length 128", max_seq_length=128),
    Variant("int8", "torch dynamic int8 of the transformer's Linear layers", quantize="int8"),
    Variant("int8-seq192", "dynamic int8, max_seq_length 192", quantize="int8",
            max_seq_length=192),
    Variant("int8-seq128", "dynamic int8, max_seq_length 128", quantize="int8",
            max_seq_length=128),
    Variant("int8-all", "dynamic int8 of every Linear layer (with the Dense heads)",
            quantize="int8-all"),
    Variant("fp32-bs4", "fp32, batches of 4 (less padding, smaller matrices)", batch_size=4),
    Variant("fp32-1thread", "fp32 on one thread (what the second core brings)", threads=1),
    Variant("bf16", "bfloat16 weights (no AVX-512 BF16 here: expected slow)", dtype="bfloat16",
            speed_only=True),
    Variant("onnx", "ONNX Runtime, fp32 (graph exported with torch.onnx)", backend="onnx"),
    Variant("onnx-int8", "ONNX Runtime, dynamic unsigned int8 MatMul weights per channel",
            backend="onnx", quantize="int8"),
    Variant("onnx-int8-s8", "ONNX Runtime, dynamic signed int8 MatMul weights per channel "
            "(the VNNI / AMX path), the configured batch (the default embedder there)",
            backend="onnx", quantize="int8-s8"),
    Variant("onnx-int8-s8-seq128", "ONNX Runtime signed int8, max_seq_length 128",
            backend="onnx", quantize="int8-s8", max_seq_length=128),
    Variant("onnx-int8-s8-bs16", "ONNX Runtime signed int8, batches of 16", backend="onnx",
            quantize="int8-s8", batch_size=16),
    Variant("onnx-int8-s8-bs8", "ONNX Runtime signed int8, batches of 8", backend="onnx",
            quantize="int8-s8", batch_size=8),
    Variant("onnx-int8-s8-bs4-seq192", "ONNX Runtime signed int8, batches of 4, "
            "max_seq_length 192", backend="onnx", quantize="int8-s8", batch_size=4,
            max_seq_length=192),
    Variant("onnx-int8-s8-bs1", "ONNX Runtime signed int8, one passage at a time (no padding)",
            backend="onnx", quantize="int8-s8", batch_size=1),
    Variant("onnx-int8-s8-seq256", "ONNX Runtime signed int8, max_seq_length 256",
            backend="onnx", quantize="int8-s8", max_seq_length=256),
    Variant("onnx-int8-s8-seq192", "ONNX Runtime signed int8, max_seq_length 192",
            backend="onnx", quantize="int8-s8", max_seq_length=192),
    Variant("onnx-int8-seq192", "ONNX Runtime int8, max_seq_length 192", backend="onnx",
            quantize="int8", max_seq_length=192),
    Variant("onnx-int8-seq128", "ONNX Runtime int8, max_seq_length 128", backend="onnx",
            quantize="int8", max_seq_length=128),
)  # fmt: skip
QUICK_VARIANTS = ("fp32", "int8")


def configured_variant(settings: Settings) -> str:
    """The name of the variant the service itself runs with these settings."""
    if settings.embedder == "onnx":
        from rag.embedding.onnx import resolve_quantize

        q = resolve_quantize(settings.embed_quantize)
        return f"onnx-{q}" if q else "onnx"
    if settings.embedder == "sentence-transformers":
        return "fp32" if settings.embed_batch_size == 16 else "fp32-bs4"
    return ""  # the fake embedder is no variant


def load_variant(settings: Settings, v: Variant) -> Embedder:
    """The configured sentence-transformers embedder, changed as ``v`` says."""
    import torch

    from rag.models import resolve

    model = resolve(settings.embedding_model, settings.models_dir, "embedder")
    threads = v.threads or settings.n_threads
    seq = v.max_seq_length or settings.embed_max_seq_length
    batch = v.batch_size or settings.embed_batch_size
    if v.backend == "onnx":
        cache = settings.onnx_cache_path / Path(str(model)).name  # shared with the service
        return OnnxEmbedder(Path(str(model)), n_threads=threads, batch_size=batch,
                            max_seq_length=seq, quantize=v.quantize, cache_dir=cache)  # fmt: skip
    emb = SentenceTransformerEmbedder(
        model, n_threads=threads, batch_size=batch, max_seq_length=seq
    )
    st: Any = emb._model
    if v.quantize in ("int8", "int8-all"):
        target = st if v.quantize == "int8-all" else st[0]
        quantize_int8(target)
    if v.dtype != "float32":
        st.to(getattr(torch, v.dtype))
    emb.identity = f"{emb.identity}+{v.name}"
    return emb


def weights_key(v: Variant) -> tuple[str, str | None, str]:
    """Variants with the same key run on the same loaded weights."""
    return (v.backend, v.quantize, v.dtype)


def base_variant(v: Variant) -> Variant:
    """``v`` without its runtime knobs: what is loaded for every variant of its weights."""
    return replace(v, name=f"{v.backend}-{v.quantize or v.dtype}", max_seq_length=None,
                   batch_size=None, threads=None)  # fmt: skip


@contextlib.contextmanager
def knobs(emb: Embedder, v: Variant, settings: Settings) -> Iterator[None]:
    """Give a loaded embedder a variant's sequence length, batch size and thread count."""
    model = getattr(emb, "_model", None)
    seq_owner: Any = model if model is not None and hasattr(model, "max_seq_length") else emb
    saved_seq = getattr(seq_owner, "max_seq_length", None)
    saved_batch = getattr(emb, "_batch_size", None)
    torch = sys.modules.get("torch")
    try:
        if v.max_seq_length is not None and saved_seq is not None:
            seq_owner.max_seq_length = min(v.max_seq_length, settings.embed_max_seq_length)
        if v.batch_size is not None and saved_batch is not None:
            emb._batch_size = v.batch_size  # type: ignore[attr-defined]
        if v.threads is not None and torch is not None:
            torch.set_num_threads(v.threads)
        yield
    finally:
        if saved_seq is not None:
            seq_owner.max_seq_length = saved_seq
        if saved_batch is not None:
            emb._batch_size = saved_batch  # type: ignore[attr-defined]
        if v.threads is not None and torch is not None:
            torch.set_num_threads(settings.n_threads)
