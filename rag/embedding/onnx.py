"""EmbeddingGemma (any sentence-transformers Gemma embedder) as one ONNX graph run by ONNX
Runtime, optionally int8; and torch's dynamic int8 for the PyTorch embedder. Benchmarked by
``rag bench`` (its embedder variants, ``rag/bench/variants.py``); needs ``onnxruntime`` and
``onnx`` (not installed by default, see bench/README.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embedding import Embedder, Vectors


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
