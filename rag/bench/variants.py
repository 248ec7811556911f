"""Embedder variants: int8, ONNX Runtime, lookup tables; how each is loaded and tuned."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rag.embedding import Embedder, SentenceTransformerEmbedder, Vectors
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
    Variant("fp32", "today's embedder: fp32 PyTorch, the configured max_seq_length and batch"),
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
    Variant("onnx-int8", "ONNX Runtime, dynamic uint8 MatMul weights per channel",
            backend="onnx", quantize="int8"),
    Variant("onnx-int8-seq192", "ONNX Runtime int8, max_seq_length 192", backend="onnx",
            quantize="int8", max_seq_length=192),
    Variant("onnx-int8-seq128", "ONNX Runtime int8, max_seq_length 128", backend="onnx",
            quantize="int8", max_seq_length=128),
)  # fmt: skip
QUICK_VARIANTS = ("fp32", "int8")


def load_variant(settings: Settings, v: Variant) -> Embedder:
    """The configured sentence-transformers embedder, changed as ``v`` says."""
    import torch

    from rag.models import resolve

    model = resolve(settings.embedding_model, settings.models_dir, "embedder")
    threads = v.threads or settings.n_threads
    seq = v.max_seq_length or settings.embed_max_seq_length
    batch = v.batch_size or settings.embed_batch_size
    if v.backend == "onnx":
        cache = Path(os.environ.get("RAG_BENCH_ONNX_CACHE", settings.models_dir / ".onnx-bench"))
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


def quantize_int8(module: Any) -> Any:
    """Dynamic int8 quantisation of every ``torch.nn.Linear`` inside ``module``, in place."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


class OnnxEmbedder(Embedder):
    """A sentence-transformers model (transformer, mean pooling, Dense heads, normalise) as one
    ONNX graph run by ONNX Runtime, with the model's own tokenizer (``tokenizers``) and task
    prompts. Once exported it needs neither torch nor sentence-transformers, so a server using
    it starts without importing them. int8: ``onnxruntime.quantization.quantize_dynamic``.

    The graph is exported on first use into ``cache_dir`` (not the model folder) and reused.
    """

    def __init__(
        self, model: Path, *, n_threads: int, batch_size: int, max_seq_length: int,
        quantize: str | None, cache_dir: Path,
    ) -> None:  # fmt: skip
        import threading

        import onnxruntime as ort
        from tokenizers import Tokenizer

        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / "model.onnx"
        if not path.is_file():
            export_onnx(model, path)
        if quantize:
            qpath = cache_dir / "model-int8.onnx"
            if not qpath.is_file():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                # MatMul weights only, unsigned, per channel: signed int8 weights saturate
                # on AVX2 without VNNI (cosine to fp32 fell to 0.4 here); the embedding table
                # (Gather) stays fp32.
                tmp = qpath.with_suffix(".tmp.onnx")
                quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QUInt8,
                                 per_channel=True, op_types_to_quantize=["MatMul"])  # fmt: skip
                os.replace(tmp, qpath)
            path = qpath
        st_cfg = _read_json(model / "config_sentence_transformers.json")
        prompts = st_cfg.get("prompts") or {}
        self._query_prompt = str(prompts.get("query", ""))
        self._doc_prompt = str(prompts.get("document", ""))
        model_max = int(_read_json(model / "sentence_bert_config.json").get("max_seq_length", 0))
        self.max_seq_length = min(max_seq_length, model_max or 10**9)
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        pad_id = self._tokenizer.token_to_id("<pad>")
        self._tokenizer.enable_padding(pad_id=pad_id or 0, pad_token="<pad>")
        so = ort.SessionOptions()
        so.intra_op_num_threads = n_threads
        so.inter_op_num_threads = 1
        # Optimising the graph takes longer than running it (15 s against 4 s to load here):
        # do it once and keep the result beside the graph.
        optimized = path.with_suffix(".opt.onnx")
        if optimized.is_file():
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            path = optimized
        else:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(optimized)
        self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self.identity = f"{model.name}/dim={self.dim}+onnx{'-int8' if quantize else ''}"

    def _run(self, texts: list[str]) -> Vectors:
        order = sorted(
            range(len(texts)), key=lambda i: -len(texts[i])
        )  # like sentence-transformers
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            self._tokenizer.enable_truncation(self.max_seq_length)
            for s in range(0, len(order), self._batch_size):
                idx = order[s : s + self._batch_size]
                enc = self._tokenizer.encode_batch([texts[i] for i in idx])
                feeds = {
                    "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                    "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
                }
                out[idx] = self._session.run(None, feeds)[0]
        return out

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run([self._doc_prompt + t for t in texts])

    def _embed_query(self, text: str) -> Vectors:
        vec: Vectors = self._run([self._query_prompt + text])[0]
        return vec


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def export_onnx(model: Path, path: Path) -> Path:
    """Export transformer + mean pooling + Dense heads + normalisation as one ONNX graph
    (needs torch, sentence-transformers and the ``onnx`` package; about a minute)."""
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st: Any = SentenceTransformer(str(model), device="cpu")

    body = st[0].auto_model
    window = getattr(body.config, "sliding_window", None)
    if not getattr(body.config, "use_bidirectional_attention", False):
        raise ValueError("only bidirectional (embedding) Gemma models are handled")
    heads = [m.linear for m in list(st)[2:] if hasattr(m, "linear")]

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.heads = torch.nn.ModuleList(heads)

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            # EmbeddingGemma attends both ways: full layers see every non-padding token,
            # sliding layers those closer than the window (as transformers builds them).
            # Handing the model ready 4-D masks skips transformers' vmap-based mask builder,
            # which the exporter cannot trace.
            seq = input_ids.shape[1]
            full = attention_mask[:, None, None, :].bool().expand(-1, 1, seq, -1)
            pos = torch.arange(seq, device=input_ids.device)
            masks = {"full_attention": full}
            if window is not None:
                near = (pos[:, None] - pos[None, :]).abs() < window
                masks["sliding_attention"] = full & near[None, None, :, :]
            h = self.body(input_ids=input_ids, attention_mask=masks).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            x = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            for head in self.heads:
                x = head(x)
            return torch.nn.functional.normalize(x, dim=-1)

    enc = st.tokenizer(["xin chào", "một câu dài hơn một chút"], padding=True,
                       return_tensors="pt")  # fmt: skip
    args = (enc["input_ids"], enc["attention_mask"])
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(), args, str(tmp), input_names=["input_ids", "attention_mask"],
            output_names=["embedding"], opset_version=18, dynamo=False,
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                          "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
        )  # fmt: skip
    os.replace(tmp, path)
    return path


class LookupEmbedder(Embedder):
    """Queries embedded ahead of time: retrieval timings then leave the embedding out."""

    def __init__(self, table: dict[str, Vectors], dim: int) -> None:
        self.table = table
        self.dim = dim
        self.identity = f"lookup/dim={dim}"

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def _embed_query(self, text: str) -> Vectors:
        return self.table[text]
