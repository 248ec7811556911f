"""EmbeddingGemma (any sentence-transformers Gemma embedder) run by ONNX Runtime, int8.

The default embedder (``embedder = "onnx"``). Once the graph is exported it needs neither torch
nor sentence-transformers, so the server starts without importing them (4-5 s of a restart).
The graph holds the transformer, mean pooling, the Dense heads and the normalisation; the
token-embedding table (262,144 x 768 floats, 805 MB: two thirds of the weights) stays out of it
and is read row by row straight from the model's ``model.safetensors`` through a memory map,
so loading the int8 graph reads about 110 MB instead of 900 MB and only the rows of tokens that
occur are ever paged in.

Export (torch + sentence-transformers, about a minute) and quantisation happen once into a cache
folder and are reused while the model file stays the same. ``quantize`` picks the int8 weights:
"int8-s8" (signed, the fast u8 x s8 path of AVX-512 VNNI / AVX-VNNI / AMX CPUs), "int8"
(unsigned: signed weights saturate on plain AVX2, where the cosine to fp32 fell to 0.4),
"auto" (s8 where the CPU has an int8 dot product, else unsigned) or None (fp32). Also here:
torch's dynamic int8 of the PyTorch embedder, a ``rag bench`` variant.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embedding import Embedder, Vectors

log = logging.getLogger(__name__)

#: Bumped when the exported graph changes shape: older caches are exported again.
EXPORT_VERSION = 2


class EmbedderUnavailable(RuntimeError):
    """The ONNX embedder cannot be built here (missing package, unsupported model)."""


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


def resolve_quantize(quantize: str | None) -> str | None:
    """``auto`` made concrete for this CPU; "none" and None mean fp32."""
    if quantize in (None, "none"):
        return None
    if quantize == "auto":
        from rag.cpu import has_int8_dot

        return "int8-s8" if has_int8_dot() else "int8"
    if quantize not in ("int8", "int8-s8"):
        raise ValueError(f"unknown ONNX quantisation {quantize!r}: auto, int8, int8-s8 or none")
    return quantize


class SafetensorsRows:
    """One 2-D float32 tensor of a safetensors file as a read-only memory map."""

    def __init__(self, path: Path, suffix: str) -> None:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        names = [k for k in header if k != "__metadata__" and k.endswith(suffix)]
        if len(names) != 1:
            raise EmbedderUnavailable(f"{path}: no single tensor named *{suffix}")
        meta = header[names[0]]
        if meta["dtype"] != "F32" or len(meta["shape"]) != 2:
            raise EmbedderUnavailable(f"{path}: {names[0]} is {meta['dtype']} {meta['shape']}")
        begin, end = meta["data_offsets"]
        rows, cols = (int(v) for v in meta["shape"])
        if end - begin != rows * cols * 4:
            raise EmbedderUnavailable(f"{path}: {names[0]} has the wrong size")
        self.table = np.memmap(path, dtype=np.float32, mode="r", offset=8 + n + begin,
                               shape=(rows, cols))  # fmt: skip

    def __getitem__(self, ids: Any) -> Any:
        return self.table[ids]


def _fingerprint(model: Path) -> dict[str, Any]:
    st = (model / "model.safetensors").stat()
    return {"export_version": EXPORT_VERSION, "model": str(model.resolve()),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns}  # fmt: skip


def prepare_graph(model: Path, cache_dir: Path, quantize: str | None) -> tuple[Path, float]:
    """The (int8) graph for ``model`` in ``cache_dir``, exported and quantised if the cache does
    not hold it for this model file; with the embedding scale."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path = cache_dir / "export.json"
    want = _fingerprint(model)
    meta = _read_json(meta_path)
    path = cache_dir / "model.onnx"
    if {k: meta.get(k) for k in want} != want or not path.is_file():
        for old in cache_dir.glob("model*.onnx*"):
            old.unlink()
        log.warning("embedder: exporting %s to ONNX into %s (once; about a minute)",
                    model, cache_dir)  # fmt: skip
        try:
            scale = export_onnx(model, path)
        except EmbedderUnavailable:
            raise
        except Exception as exc:  # torch's exporter: the message says what it could not trace
            raise EmbedderUnavailable(f"exporting {model} to ONNX failed: {exc}") from exc
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**want, "embed_scale": scale}), encoding="utf-8")
        os.replace(tmp, meta_path)
        meta = _read_json(meta_path)
    if quantize:
        qpath = cache_dir / f"model-{quantize}.onnx"
        if not qpath.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # MatMul weights only, per channel (see the module's docstring for s8 / u8).
            weight = QuantType.QInt8 if quantize == "int8-s8" else QuantType.QUInt8
            tmp_q = qpath.with_suffix(".tmp.onnx")
            quantize_dynamic(str(path), str(tmp_q), weight_type=weight, per_channel=True,
                             op_types_to_quantize=["MatMul"])  # fmt: skip
            os.replace(tmp_q, qpath)
        path = qpath
    return path, float(meta["embed_scale"])


class OnnxEmbedder(Embedder):
    """A sentence-transformers Gemma model as an ONNX graph run by ONNX Runtime, with the
    model's own tokenizer (``tokenizers``) and task prompts."""

    def __init__(
        self, model: Path, *, n_threads: int, batch_size: int, max_seq_length: int,
        quantize: str | None, cache_dir: Path,
    ) -> None:  # fmt: skip
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"the ONNX embedder needs onnxruntime ({exc}); run `make setup`, or set "
                "RAG_EMBEDDER=sentence-transformers"
            ) from exc
        quantize = resolve_quantize(quantize)
        with _cache_lock(cache_dir):  # another process may be exporting into the same folder
            path, self._scale = prepare_graph(model, cache_dir, quantize)
            try:
                self._session = _session(ort, path, n_threads)
            except Exception as exc:  # a cache file cut short (a killed export): export again
                log.warning("embedder: the cached ONNX graph in %s does not load (%s); "
                            "exporting it again", cache_dir, exc)  # fmt: skip
                for old in cache_dir.glob("model*.onnx*"):
                    old.unlink()
                path, self._scale = prepare_graph(model, cache_dir, quantize)
                try:
                    self._session = _session(ort, path, n_threads)
                except Exception as again:
                    raise EmbedderUnavailable(
                        f"ONNX Runtime cannot load the graph exported from {model}: {again}"
                    ) from again
        self._table = SafetensorsRows(model / "model.safetensors", "embed_tokens.weight")
        st_cfg = _read_json(model / "config_sentence_transformers.json")
        prompts = st_cfg.get("prompts") or {}
        self._query_prompt = str(prompts.get("query", ""))
        self._doc_prompt = str(prompts.get("document", ""))
        model_max = int(_read_json(model / "sentence_bert_config.json").get("max_seq_length", 0))
        self.max_seq_length = min(max_seq_length, model_max or 10**9)
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        pad_id = self._tokenizer.token_to_id("<pad>")
        self._tokenizer.enable_padding(pad_id=pad_id or 0, pad_token="<pad>")
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self.quantize = quantize
        self.identity = f"{model.name}/dim={self.dim}+onnx{'-' + quantize if quantize else ''}"

    def _run(self, texts: list[str]) -> Vectors:
        # Longest first, like sentence-transformers: batches of similar length pad little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            self._tokenizer.enable_truncation(self.max_seq_length)
            for s in range(0, len(order), self._batch_size):
                idx = order[s : s + self._batch_size]
                enc = self._tokenizer.encode_batch([texts[i] for i in idx])
                ids = np.asarray([e.ids for e in enc], dtype=np.int64)
                embeds = np.asarray(self._table[ids], dtype=np.float32) * np.float32(self._scale)
                feeds = {
                    "inputs_embeds": embeds,
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


def _session(ort: Any, path: Path, n_threads: int) -> Any:
    """An ONNX Runtime session on ``path``; the first one optimises the graph and keeps the
    result beside it (optimising takes longer than loading), later ones load that."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = n_threads
    so.inter_op_num_threads = 1
    optimized = path.with_suffix(".opt.onnx")
    if optimized.is_file():
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(optimized), so, providers=["CPUExecutionProvider"])
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    tmp = path.with_suffix(".opt.tmp")
    so.optimized_model_filepath = str(tmp)
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    os.replace(tmp, optimized)
    return session


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def export_onnx(model: Path, path: Path) -> float:
    """Export transformer + mean pooling + Dense heads + normalisation as one ONNX graph that
    takes the token embeddings (not the ids) and the attention mask; return the scale the
    model multiplies its token embeddings by. Needs torch, sentence-transformers and the
    ``onnx`` package; about a minute."""
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st: Any = SentenceTransformer(str(model), device="cpu")

    body = st[0].auto_model
    window = getattr(body.config, "sliding_window", None)
    if not getattr(body.config, "use_bidirectional_attention", False):
        raise EmbedderUnavailable("only bidirectional (embedding) Gemma models are handled")
    embed = body.get_input_embeddings()
    scale = float(getattr(embed, "scalar_embed_scale", math.sqrt(body.config.hidden_size)))
    heads = [m.linear for m in list(st)[2:] if hasattr(m, "linear")]

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.heads = torch.nn.ModuleList(heads)

        def forward(self, inputs_embeds: Any, attention_mask: Any) -> Any:
            # EmbeddingGemma attends both ways: full layers see every non-padding token,
            # sliding layers those closer than the window (as transformers builds them).
            # Handing the model ready 4-D masks skips transformers' vmap-based mask builder,
            # which the exporter cannot trace.
            seq = inputs_embeds.shape[1]
            full = attention_mask[:, None, None, :].bool().expand(-1, 1, seq, -1)
            pos = torch.arange(seq, device=inputs_embeds.device)
            masks = {"full_attention": full}
            if window is not None:
                near = (pos[:, None] - pos[None, :]).abs() < window
                masks["sliding_attention"] = full & near[None, None, :, :]
            h = self.body(inputs_embeds=inputs_embeds, attention_mask=masks).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            x = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            for head in self.heads:
                x = head(x)
            return torch.nn.functional.normalize(x, dim=-1)

    enc = st.tokenizer(["xin chào", "một câu dài hơn một chút"], padding=True,
                       return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        args = (embed(enc["input_ids"]), enc["attention_mask"])
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(), args, str(tmp), input_names=["inputs_embeds", "attention_mask"],
            output_names=["embedding"], opset_version=18, dynamo=False,
            dynamic_axes={"inputs_embeds": {0: "batch", 1: "seq"},
                          "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
        )  # fmt: skip
    os.replace(tmp, path)
    return scale
