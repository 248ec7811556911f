"""Speed benchmark (issue 6, "Speed on two CPU cores"): measure, never assume.

Sections, each run ``repeat`` times and reported as the median over the runs with its spread
(min/max over runs, and the pooled per-request distribution):

- ``evidence``: time from the request to the ``passages`` event of ``RAG.stream`` (in-process;
  over HTTP too with ``url``), with the query embedding cold and cached, and its parts.
- ``first_token``: time to the first answer token for the gold questions, per answer model,
  with llama.cpp's prefix cache on and (for a few questions) off.
- ``decode``: tokens/s after the first token through ``RAG.stream`` against llama-cpp-python
  called directly on the same prompt and settings, side by side in one run.
- ``ingest``: passages/s of embedding for the chunks of the corpus, for several variants of
  the embedder, each with its retrieval file hit@1/hit@5 on the gold set.
- ``search``: a synthetic corpus (100,000 chunks by default): retrieval latency without the
  query embedding, its parts, HNSW recall@10 against exact search, memory per chunk.
- ``server``: ``rag serve`` in a subprocess: time until ``/healthz`` answers (first start and
  warm restarts), resident memory after a few questions, first evidence over HTTP.

Engines come in through :class:`Engines`, so the tests run every section on fakes.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rag.embedding import Embedder, HashingEmbedder, SentenceTransformerEmbedder, Vectors
from rag.evaluation.metrics import percentile
from rag.evaluation.report import _git
from rag.evaluation.runner import GoldItem, load_gold
from rag.generation import ChatMessage, FakeGenerator, Generator
from rag.settings import DEFAULT_GENERATOR, SMALL_GENERATOR, Settings
from rag.types import Chunk

REPORT_VERSION = 1
ROOT = Path(__file__).resolve().parents[1]
#: Asked once after a model is loaded; not a gold question, so no measured prompt is cached.
WARMUP_QUESTION = "Các bài viết nói về những chủ đề gì?"
SECTIONS = ("evidence", "first_token", "decode", "ingest", "search", "server")
DEFAULT_OUT = Path("bench/reports/latest")

#: Targets of issue 6; (section path, key, comparison, bound, unit).
TARGETS: list[tuple[str, tuple[str, ...], str, float, str]] = [
    ("first evidence p50 (in-process, cold query)",
     ("evidence", "in_process", "cold_ms", "p50", "median"), "<=", 300.0, "ms"),
    ("first token p50, default model",
     ("first_token", "models", "default", "ttft_ms", "p50", "median"), "<=", 4000.0, "ms"),
    ("first token p95, default model",
     ("first_token", "models", "default", "ttft_ms", "p95", "median"), "<=", 6000.0, "ms"),
    ("decoding speed service / direct, default model",
     ("decode", "models", "default", "ratio", "median"), ">=", 0.9, "x"),
    ("ingest speed-up of the best variant within the quality bar",
     ("ingest", "best", "speedup"), ">=", 3.0, "x"),
    ("search p50 at the synthetic size (no query embedding)",
     ("search", "retrieve_ms", "p50", "median"), "<=", 20.0, "ms"),
    ("HNSW recall@10 against exact search",
     ("search", "recall_at_10"), ">=", 0.95, "rate"),
    ("server resident memory after questions",
     ("server", "rss_after_questions_mb", "median"), "<=", 4096.0, "MB"),
    ("server warm restart until /healthz answers",
     ("server", "warm_ready_s", "median"), "<=", 10.0, "s"),
]  # fmt: skip


# --- statistics ----------------------------------------------------------------------------------
def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def dist(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """The distribution of one set of measurements: count, p50, p95, quartiles, min, max, mean."""
    xs = _clean(values)
    return {
        "n": len(xs),
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "q1": percentile(xs, 25),
        "q3": percentile(xs, 75),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
        "mean": sum(xs) / len(xs) if xs else None,
    }


def over_runs(values: Sequence[float | None]) -> dict[str, Any]:
    """One figure measured once per run: its median over the runs and the spread (min, max)."""
    xs = _clean(values)
    return {
        "median": percentile(xs, 50),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
        "runs": [_round(x) for x in xs],
    }


def latency_block(runs: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """Per-run p50 and p95 (each as median and spread over runs), pooled distribution, samples."""
    return {
        "p50": over_runs([percentile(_clean(r), 50) for r in runs]),
        "p95": over_runs([percentile(_clean(r), 95) for r in runs]),
        "pooled": dist([x for r in runs for x in r]),
        "samples": [[_round(x) for x in r] for r in runs],
    }


def decode_rate(stamps: Sequence[float], n: int | None = None) -> float | None:
    """Tokens/s after the first token over the first ``n`` timestamps (seconds since request)."""
    n = len(stamps) if n is None else min(n, len(stamps))
    if n < 2 or stamps[n - 1] <= stamps[0]:
        return None
    return (n - 1) / (stamps[n - 1] - stamps[0])


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None:
        return None
    return float(f"{x:.{digits}g}") if abs(x) < 1e4 else round(x, 1)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def dig(tree: Any, path: Sequence[str]) -> Any:
    node = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


# --- machine, CPU contention, memory -------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx")
                return [f for f in line.split(":", 1)[1].split() if f.startswith(wanted)]
    return []


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    vals = [int(v) for v in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


class CpuWatch:
    """How much of the machine's CPU other processes used while the benchmark ran.

    Busy time of the whole machine (``/proc/stat``) minus this process's own CPU time (and its
    waited-for children, e.g. the servers it started), as a share of all CPU time.
    """

    def __init__(self) -> None:
        self.start = _cpu_jiffies()
        t = os.times()
        self.self_start = t.user + t.system + t.children_user + t.children_system
        self.wall_start = time.perf_counter()

    def result(self) -> dict[str, Any]:
        end = _cpu_jiffies()
        t = os.times()
        mine = t.user + t.system + t.children_user + t.children_system - self.self_start
        wall = time.perf_counter() - self.wall_start
        out: dict[str, Any] = {"wall_s": round(wall, 2), "own_cpu_s": round(mine, 2)}
        if self.start is not None and end is not None:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy = (end[0] - self.start[0]) / hz
            total = (end[1] - self.start[1]) / hz
            if total > 0:
                out["machine_busy_share"] = round(busy / total, 3)
                out["others_share"] = round(max(0.0, busy - mine) / total, 3)
        with contextlib.suppress(OSError):
            out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        return out


def rss_bytes(pid: int | None = None, key: str = "VmRSS") -> int | None:
    """Resident memory (``VmRSS``) or its peak (``VmHWM``) of a process, in bytes."""
    path = Path(f"/proc/{pid or 'self'}/status")
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    try:
        import psutil

        info = psutil.Process(pid or os.getpid()).memory_info()
        return int(info.rss)
    except Exception:
        return None


def _rss_delta(before: int | None) -> int | None:
    now = rss_bytes()
    return None if before is None or now is None else now - before


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "sentence-transformers", "transformers", "llama_cpp_python",
                "faiss-cpu", "bm25s", "numpy", "onnxruntime", "optimum", "numba"):  # fmt: skip
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gb": None,
    }
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
    with contextlib.suppress(OSError):
        info["load_avg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


# --- options and engines -------------------------------------------------------------------------
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


@dataclass
class BenchOptions:
    quick: bool = False
    repeat: int = 3
    sections: tuple[str, ...] = SECTIONS
    small_too: bool = True
    url: str | None = None
    gold: Path = Path("eval/gold.jsonl")
    questions: int | None = None  # evidence, first token (None: all gold questions)
    prefix_questions: int = 5  # first-token questions also asked with the prefix cache reset
    decode_questions: int = 3
    decode_tokens: int = 128
    ignore_eos: bool = True
    variants: tuple[str, ...] | None = None  # None: all (quick: QUICK_VARIANTS)
    ingest_passages: int | None = None  # None: every chunk of the corpus
    speed_only_passages: int = 8
    synthetic_chunks: int = 100_000
    synthetic_dim: int = 768
    synthetic_queries: int = 200
    synthetic_words: int = 170  # syllables per synthetic chunk (~800 characters)
    server_questions: int = 3
    server_restarts: int | None = None  # None: ``repeat``
    server_timeout_s: float = 600.0
    progress: Callable[[str], None] | None = None

    @classmethod
    def for_run(cls, *, quick: bool, **overrides: Any) -> BenchOptions:
        """Full sizes, or the reduced ``--quick`` ones; explicit ``overrides`` win."""
        base = cls()
        if quick:
            base = replace(
                base, quick=True, repeat=1, questions=5, prefix_questions=2, decode_questions=1,
                decode_tokens=24, variants=QUICK_VARIANTS, ingest_passages=8,
                speed_only_passages=4, synthetic_chunks=6000, synthetic_queries=30,
                server_questions=1, server_restarts=1,
            )  # fmt: skip
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def log(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)


@dataclass
class Engines:
    """Where the benchmark gets its engines: the configured models, or fakes in the tests."""

    settings: Settings
    make_embedder: Callable[[], Embedder]
    make_generator: Callable[[str], Generator]
    make_variant: Callable[[Variant], Embedder]
    #: Answer models by role; "small" is reported beside "default" when asked for.
    generator_models: dict[str, str] = field(default_factory=dict)
    #: Environment for ``rag serve`` subprocesses (merged over this process's environment).
    server_env: dict[str, str] = field(default_factory=dict)
    _embedder: Embedder | None = None
    embedder_load_s: float | None = None

    def embedder(self) -> Embedder:
        """The configured embedder, loaded once."""
        if self._embedder is None:
            t0 = time.perf_counter()
            self._embedder = self.make_embedder()
            self.embedder_load_s = time.perf_counter() - t0
        return self._embedder

    @classmethod
    def from_settings(cls, settings: Settings) -> Engines:
        from rag.models import resolve

        def make_embedder() -> Embedder:
            if settings.embedder == "fake":
                return HashingEmbedder()
            model = resolve(settings.embedding_model, settings.models_dir, "embedder")
            return SentenceTransformerEmbedder(
                model, n_threads=settings.n_threads, batch_size=settings.embed_batch_size,
                max_seq_length=settings.embed_max_seq_length,
            )  # fmt: skip

        def make_generator(model: str) -> Generator:
            if settings.generator == "fake":
                return FakeGenerator()
            from rag.generation.llama import LlamaCppGenerator

            path = Path(resolve(model, settings.models_dir, "generator"))
            return LlamaCppGenerator(
                path, n_ctx=settings.n_ctx, n_threads=settings.n_threads,
                extra_buffers=settings.extra_buffers,
            )  # fmt: skip

        def make_variant(v: Variant) -> Embedder:
            if settings.embedder == "fake":
                return HashingEmbedder()
            return load_variant(settings, v)

        small = SMALL_GENERATOR if settings.generator_model == DEFAULT_GENERATOR else None
        models = {"default": settings.generator_model}
        if small:
            models["small"] = small
        return cls(settings, make_embedder, make_generator, make_variant, models,
                   server_env=settings_env(settings))  # fmt: skip


def settings_env(settings: Settings) -> dict[str, str]:
    """``RAG_*`` variables that make a subprocess use the same (scalar) settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, bool):
            env[f"RAG_{name.upper()}"] = str(value).lower()
        elif isinstance(value, Path):
            env[f"RAG_{name.upper()}"] = str(value.resolve())
        elif isinstance(value, str | int | float):
            env[f"RAG_{name.upper()}"] = str(value)
    return env


# --- embedder variants ---------------------------------------------------------------------------
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


class RecordingGenerator(Generator):
    """Passes calls through to an engine and keeps the prompts it was given."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[ChatMessage]] = []

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        self.calls.append(list(messages))
        yield from self.inner.stream_chat(messages, max_tokens=max_tokens, temperature=temperature)


def _llm(generator: Generator) -> Any:
    """The llama-cpp-python ``Llama`` behind a generator (None for engines without one)."""
    inner = generator.inner if isinstance(generator, RecordingGenerator) else generator
    return getattr(inner, "_llm", None)


def _count_tokens(generator: Generator, messages: Sequence[ChatMessage]) -> int | None:
    inner = generator.inner if isinstance(generator, RecordingGenerator) else generator
    count = getattr(inner, "count_tokens", None)
    if count is None:
        return None
    return sum(int(count(m["content"])) for m in messages)


# --- corpus helpers ------------------------------------------------------------------------------
def corpus_chunks(settings: Settings) -> list[Chunk]:
    """The chunks ``rag ingest`` makes of the corpus folder, in the same order."""
    from rag.ingest.chunking import chunk_article
    from rag.ingest.loader import UnreadableFile, decode_article, discover

    chunks: list[Chunk] = []
    for path in discover([settings.data_dir]):
        try:
            text = decode_article(path.name, path.read_bytes())
        except UnreadableFile:
            continue
        _, cs = chunk_article(path.name, text, chunk_size=settings.chunk_size,
                              chunk_overlap=settings.chunk_overlap)  # fmt: skip
        chunks.extend(cs)
    return chunks


def _rag(
    settings: Settings, embedder: Embedder, generator: Generator | None, index_dir: Path
) -> Any:
    from rag.index import IndexStore
    from rag.service import RAG

    return RAG(settings, embedder, generator, store=IndexStore(index_dir))


def _retrieval_quality(rag: Any, items: Sequence[GoldItem]) -> dict[str, Any]:
    from rag.evaluation.report import aggregate
    from rag.evaluation.runner import InProcessBackend, run

    records = run(InProcessBackend(rag), items, retrieval_only=True, progress=False)
    r = aggregate(records, with_answers=False)["retrieval"]
    keys = ("file_hit@1", "file_hit@5", "passage_hit@5", "mrr@10")
    return {k: r.get(k) for k in keys} | {"answerable": sum(i.answerable for i in items)}


# --- the benchmark -------------------------------------------------------------------------------
class Bench:
    def __init__(self, engines: Engines, options: BenchOptions) -> None:
        self.engines = engines
        self.opt = options
        self.settings = engines.settings
        self._items: list[GoldItem] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="rag-bench-"))
        self._index_dir: Path | None = None
        self._index: Any = None  # the loaded CorpusIndex, shared by the services made here
        self.notes: list[str] = []

    # --- shared pieces ---------------------------------------------------------------------------
    @property
    def items(self) -> list[GoldItem]:
        if self._items is None:
            self._items = load_gold(self.opt.gold)
        return self._items

    def questions(self, limit: int | None = None) -> list[GoldItem]:
        n = limit if limit is not None else self.opt.questions
        return self.items[:n] if n is not None else list(self.items)

    def index_dir(self) -> Path:
        """The configured index when it matches the embedder, else one built here."""
        if self._index_dir is None:
            from rag.index import IndexError_, IndexStore

            emb = self.engines.embedder()
            store = IndexStore(self.settings.index_dir)
            try:
                if store.exists():
                    self._index = store.load(expected_embedder=emb.identity)
            except IndexError_:
                self._index = None
            if self._index is not None and self._index.chunks:
                self._index_dir = self.settings.index_dir
            else:
                self._index_dir = self._tmp / "index"
                self.notes.append(
                    f"no usable index in {self.settings.index_dir}: built one for the benchmark"
                )
                service = _rag(self.settings, emb, None, self._index_dir)
                service.ingest()
                self._index = service.index
        return self._index_dir

    def service(self, settings: Settings, generator: Generator | None) -> Any:
        """A ``RAG`` on the configured embedder and the benchmark's index (loaded once)."""
        self.index_dir()
        rag = _rag(settings, self.engines.embedder(), generator, self._tmp / "no-index")
        rag.index = self._index
        return rag

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    # --- run -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        watch = CpuWatch()
        t0 = time.perf_counter()
        report: dict[str, Any] = {
            "version": REPORT_VERSION,
            "config": self.config(),
            "targets": [],
            "sections": {},
            "errors": {},
        }
        for name in SECTIONS:
            if name not in self.opt.sections:
                continue
            self.opt.log(f"section {name}")
            s0 = time.perf_counter()
            try:
                result = getattr(self, f"bench_{name}")()
            except Exception as exc:  # one broken section must not lose the others' figures
                report["errors"][name] = f"{type(exc).__name__}: {exc}"
                self.opt.log(f"section {name} failed: {exc}")
                continue
            finally:
                gc.collect()
            result["seconds"] = round(time.perf_counter() - s0, 2)
            report["sections"][name] = result
        report["config"]["seconds"] = round(time.perf_counter() - t0, 2)
        report["config"]["cpu_during_run"] = watch.result()
        report["config"]["embedder_load_s"] = _round(self.engines.embedder_load_s)
        report["config"]["notes"] = self.notes
        report["targets"] = targets(report)
        return report

    def config(self) -> dict[str, Any]:
        s = self.settings
        models: dict[str, Any] = {
            "embedder": s.embedding_model if s.embedder != "fake" else "fake (hashing)",
            "generators": dict(self.engines.generator_models)
            if s.generator != "fake"
            else {"default": "fake"},
        }
        for role, name in self.engines.generator_models.items():
            path = s.models_dir / f"{name}.gguf"
            if path.is_file():
                models[f"{role}_gguf_bytes"] = path.stat().st_size
        status = _git("status", "--porcelain")
        opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.opt).items()
                if k != "progress"}  # fmt: skip
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": {"commit": _git("rev-parse", "HEAD"),
                    "dirty": bool(status) if status is not None else None},
            "machine": machine_info(),
            "versions": _versions(),
            "models": models,
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in s.model_dump().items() if k not in ("api_keys",)},
            "options": opts,
        }  # fmt: skip

    # --- first evidence --------------------------------------------------------------------------
    def bench_evidence(self) -> dict[str, Any]:
        """Request to ``passages`` event, in-process; cold (query embedding computed) and warm
        (embedding from the query cache), with the parts of the cold time."""
        from rag.service import RAG
        from rag.text import nfc

        emb = self.engines.embedder()
        rag: RAG = self.service(self.settings, None)
        items = self.questions()
        depth = max(4 * self.settings.top_k, 30)
        self._first_evidence(rag, items[0].question)  # warm-up: imports, first file reads
        names = ("cold", "warm", "embed", "embed_1t", "dense", "lexical", "rest")
        torch = sys.modules.get("torch") if isinstance(emb, SentenceTransformerEmbedder) else None
        runs: dict[str, list[list[float | None]]] = {k: [] for k in names}
        for _ in range(self.opt.repeat):
            row: dict[str, list[float | None]] = {k: [] for k in names}
            for item in items:
                q = item.question
                key = nfc(nfc(q).strip())  # what RAG.stream hands to Embedder.embed_query
                t0 = time.perf_counter()
                vec = emb._embed_query(key)  # bypasses the query cache
                row["embed"].append(_ms(t0))
                if torch is not None and self.settings.n_threads > 1:
                    torch.set_num_threads(1)  # does the second thread pay for one query?
                    t0 = time.perf_counter()
                    emb._embed_query(key)
                    row["embed_1t"].append(_ms(t0))
                    torch.set_num_threads(self.settings.n_threads)
                emb.__dict__.get("_qcache", {}).pop(key, None)
                cold = self._first_evidence(rag, q)
                warm = self._first_evidence(rag, q)
                t0 = time.perf_counter()
                rag.index.dense(vec, depth)
                dense = _ms(t0)
                t0 = time.perf_counter()
                if self.settings.hybrid:
                    rag.index.lexical(key, depth)
                lexical = _ms(t0)
                row["cold"].append(cold)
                row["warm"].append(warm)
                row["dense"].append(dense)
                row["lexical"].append(lexical)
                row["rest"].append(max(0.0, warm - dense - lexical))
            for k in names:
                runs[k].append(row[k])
        out: dict[str, Any] = {
            "questions": len(items),
            "chunks": len(rag.index.chunks),
            "in_process": {
                "cold_ms": latency_block(runs["cold"]),
                "warm_ms": latency_block(runs["warm"]),
                "parts_ms": {
                    "query_embedding": latency_block(runs["embed"]),
                    "query_embedding_on_1_thread": latency_block(runs["embed_1t"]),
                    "dense_search": latency_block(runs["dense"]),
                    "bm25": latency_block(runs["lexical"]),
                    "fusion_and_passages": latency_block(runs["rest"]),
                },
            },
            "definition": "perf_counter from calling RAG.stream(question) to receiving its "
            "'passages' event; cold = query embedding not in the cache, warm = cached; parts "
            "are timed separately on the same question (query embedding alone, "
            "CorpusIndex.dense, CorpusIndex.lexical; the rest = warm - dense - bm25).",
        }
        parts = out["in_process"]["parts_ms"]
        for name in list(parts):
            parts[name].pop("samples", None)
            if not parts[name]["pooled"]["n"]:
                del parts[name]
        if self.opt.url:
            out["http"] = http_evidence(self.opt.url, items, self.opt.repeat)
        return out

    @staticmethod
    def _first_evidence(rag: Any, question: str) -> float:
        t0 = time.perf_counter()
        it = rag.stream(question)
        try:
            ev = next(it)
            assert ev.kind == "passages"
            return _ms(t0)
        finally:
            it.close()

    # --- first token -----------------------------------------------------------------------------
    def _models(self) -> list[tuple[str, str]]:
        models = [(r, m) for r, m in self.engines.generator_models.items() if r == "default"]
        if self.opt.small_too:
            models += [(r, m) for r, m in self.engines.generator_models.items() if r == "small"]
        return models or [("default", self.settings.generator_model)]

    def _load_generator(self, model: str) -> tuple[RecordingGenerator, float]:
        gc.collect()
        t0 = time.perf_counter()
        gen = self.engines.make_generator(model)
        return RecordingGenerator(gen), time.perf_counter() - t0

    def bench_first_token(self) -> dict[str, Any]:
        from rag.service import RAG

        self.index_dir()  # embedder and index first, so the model load time stays apart
        items = self.questions()
        prefix_items = items[: self.opt.prefix_questions]
        out: dict[str, Any] = {"questions": len(items), "models": {}}
        for role, model in self._models():
            self.opt.log(f"first token: {model}")
            gen, load_s = self._load_generator(model)
            settings = self.settings.model_copy(update={"generator_model": model})
            rag: RAG = self.service(settings, gen)
            llm = _llm(gen)
            # Not a gold question: a measured question must never follow itself, or llama.cpp
            # would find its whole prompt cached.
            first_after_load, _ = self._first_token(rag, WARMUP_QUESTION)
            last = WARMUP_QUESTION
            system_tokens = _count_tokens(gen, [gen.calls[-1][0]]) if gen.calls else None
            ttft: list[list[float | None]] = []
            evid: list[list[float | None]] = []
            prompt_tokens: list[int] = []
            prompt_rate: list[float | None] = []
            no_model = 0
            by_q: dict[str, list[float]] = {}
            for _ in range(self.opt.repeat):
                t_row: list[float | None] = []
                e_row: list[float | None] = []
                for item in items:
                    if item.question == last:
                        self._first_token(rag, WARMUP_QUESTION)
                    last = item.question
                    calls = len(gen.calls)
                    tok, ev = self._first_token(rag, item.question)
                    e_row.append(ev)
                    if len(gen.calls) == calls:  # answered "not found" without the model
                        no_model += 1
                        continue
                    t_row.append(tok)
                    if tok is not None:
                        by_q.setdefault(item.id, []).append(tok)
                    n = _count_tokens(gen, gen.calls[-1])
                    if n is not None and len(prompt_tokens) < len(items):
                        prompt_tokens.append(n)
                    if n is not None and tok is not None and ev is not None and tok > ev:
                        # Tokens after the reused system prompt, per second of waiting.
                        prompt_rate.append((n - (system_tokens or 0)) / ((tok - ev) / 1000))
                ttft.append(t_row)
                evid.append(e_row)
            prefix = self._prefix_effect(rag, llm, prefix_items, by_q)
            busy = (
                self._evidence_while_generating(rag, llm, items[:10]) if role == "default" else None
            )
            out["models"][role] = {
                "model": model,
                "load_s": _round(load_s),
                "first_request_after_load_ms": _round(first_after_load),
                "ttft_ms": latency_block(ttft),
                "evidence_ms": latency_block(evid),
                "answered_without_model": no_model,
                "prompt_tokens": dist(prompt_tokens),
                "system_prompt_tokens": system_tokens,
                "prompt_tok_s_after_prefix": dist(prompt_rate),
                "prefix_cache": prefix,
                "evidence_while_generating_ms": busy,
            }
            out["models"][role]["evidence_ms"].pop("samples", None)
            del rag, gen, llm
            gc.collect()
        out["definition"] = (
            "perf_counter from calling RAG.stream(question) to its first 'token' event (the "
            "stream is then closed); questions the service answers 'not found' without calling "
            "the model are left out and counted. prefix_cache: the same questions with "
            "Llama.reset() before each (no prompt reuse) against the normal runs."
        )
        return out

    def _evidence_while_generating(
        self, rag: Any, llm: Any, items: Sequence[GoldItem]
    ) -> dict[str, Any] | None:
        """First evidence (query embedding cold) while the answer model generates in another
        thread, as when a question reaches the server during someone else's answer; with the
        embedder's threads as configured and on one thread."""
        if llm is None:
            return None
        import threading

        from rag.text import nfc

        emb = self.engines.embedder()
        torch = sys.modules.get("torch") if isinstance(emb, SentenceTransformerEmbedder) else None
        stop = threading.Event()
        tokens = [0]
        messages: list[ChatMessage] = [{"role": "user", "content": WARMUP_QUESTION}]

        def generate() -> None:
            with ban_eos(llm, enabled=True):
                while not stop.is_set():
                    stream = llm.create_chat_completion(
                        messages=messages, max_tokens=64, temperature=0.0, top_k=1,
                        repeat_penalty=1.05, stream=True,
                    )  # fmt: skip
                    for _ in stream:
                        tokens[0] += 1
                        if stop.is_set():
                            break
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()

        out: dict[str, Any] = {"questions": len(items)}
        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            deadline = time.perf_counter() + 120
            while tokens[0] < 2 and worker.is_alive() and time.perf_counter() < deadline:
                time.sleep(0.05)  # the prompt is read; decoding has begun
            for label, threads in (("threads_as_configured", None), ("embedder_on_1_thread", 1)):
                if threads is not None and torch is None:
                    continue
                ms: list[float | None] = []
                for item in items:
                    emb.__dict__.get("_qcache", {}).pop(nfc(nfc(item.question).strip()), None)
                    if threads is not None and torch is not None:
                        torch.set_num_threads(threads)
                    try:
                        ms.append(self._first_evidence(rag, item.question))
                    finally:
                        if torch is not None:
                            torch.set_num_threads(self.settings.n_threads)
                out[label] = dist(ms)
        finally:
            stop.set()
            worker.join(timeout=300)
        out["tokens_generated_meanwhile"] = tokens[0]
        return out

    @staticmethod
    def _first_token(rag: Any, question: str) -> tuple[float | None, float | None]:
        t0 = time.perf_counter()
        tok = ev = None
        it = rag.stream(question)
        try:
            for event in it:
                if event.kind == "passages":
                    ev = _ms(t0)
                elif event.kind == "token":
                    tok = _ms(t0)
                    break
        finally:
            it.close()
        return tok, ev

    def _prefix_effect(
        self, rag: Any, llm: Any, items: Sequence[GoldItem], normal: dict[str, list[float]]
    ) -> dict[str, Any]:
        if llm is None or not hasattr(llm, "reset"):
            return {"measured": False, "why": "the answer engine has no llama.cpp state"}
        cold: list[float | None] = []
        warm: list[float | None] = []
        for item in items:
            llm.reset()
            tok, _ = self._first_token(rag, item.question)
            cold.append(tok)
            warm.append(percentile(normal.get(item.id, []), 50))
        c, w = percentile(_clean(cold), 50), percentile(_clean(warm), 50)
        return {
            "measured": True,
            "questions": len(items),
            "reset_ttft_ms": dist(cold),
            "normal_ttft_ms": dist(warm),
            "saving_ms_p50": _round(c - w) if c is not None and w is not None else None,
        }

    # --- decoding through the service vs direct ------------------------------------------------
    def bench_decode(self) -> dict[str, Any]:
        from rag.service import RAG

        self.index_dir()
        items = [i for i in self.questions() if i.answerable][: self.opt.decode_questions]
        n_tok = self.opt.decode_tokens
        out: dict[str, Any] = {"max_tokens": n_tok, "ignore_eos": self.opt.ignore_eos,
                               "questions": [i.id for i in items], "models": {}}  # fmt: skip
        for role, model in self._models():
            self.opt.log(f"decode: {model}")
            gen, _ = self._load_generator(model)
            llm = _llm(gen)
            if llm is None:
                out["models"][role] = {"measured": False, "why": "no llama.cpp engine to compare"}
                continue
            settings = self.settings.model_copy(update={"generator_model": model})
            rag: RAG = self.service(settings, gen)
            pairs: list[dict[str, Any]] = []
            with ban_eos(llm, enabled=self.opt.ignore_eos) as banned:
                prompts: dict[str, list[ChatMessage]] = {}
                for item in items:  # the exact prompt the service builds
                    self._first_token(rag, item.question)
                    if gen.calls:
                        prompts[item.id] = gen.calls[-1]
                rag._generator = gen.inner  # time the service exactly as it runs
                for r in range(self.opt.repeat):
                    for j, item in enumerate(items):
                        if item.id not in prompts:
                            continue
                        order = ("direct", "service") if (r + j) % 2 == 0 else ("service", "direct")
                        got: dict[str, tuple[list[float], str]] = {}
                        for path in order:
                            if path == "direct":
                                got[path] = direct_stream(llm, prompts[item.id], n_tok,
                                                          self.settings.temperature)  # fmt: skip
                            else:
                                got[path] = service_stream(rag, item.question, n_tok,
                                                           self.settings.temperature)  # fmt: skip
                        (ds, dt), (ss, st) = got["direct"], got["service"]
                        n = min(len(ds), len(ss))
                        d_rate, s_rate = decode_rate(ds, n), decode_rate(ss, n)
                        pairs.append({
                            "run": r, "question": item.id, "order": list(order),
                            "tokens_direct": len(ds), "tokens_service": len(ss),
                            "tokens_compared": n,
                            "direct_tok_s": _round(d_rate), "service_tok_s": _round(s_rate),
                            "ratio": _round(s_rate / d_rate) if d_rate and s_rate else None,
                            "same_text": dt == st,
                        })  # fmt: skip
            runs = sorted({p["run"] for p in pairs})
            ratio_runs = [
                percentile(_clean([p["ratio"] for p in pairs if p["run"] == r]), 50) for r in runs
            ]
            out["models"][role] = {
                "model": model,
                "eos_tokens_banned": banned,
                "direct_tok_s": over_runs([p["direct_tok_s"] for p in pairs]),
                "service_tok_s": over_runs([p["service_tok_s"] for p in pairs]),
                "ratio": over_runs(ratio_runs),
                "pairs": pairs,
            }
            del rag, gen, llm
            gc.collect()
        out["definition"] = (
            "For each question the service's own prompt (recorded from RAG.stream) is sent to "
            "Llama.create_chat_completion(stream=True) directly, with the settings "
            "LlamaCppGenerator uses (temperature, top_k=1 at temperature 0, repeat_penalty "
            "1.05), and the question is asked through RAG.stream with the same max_tokens; the "
            "two alternate in order. Rate = (n-1)/(time of token n - time of token 1) over the n "
            "tokens both produced; ratio = service / direct per pair, median per run. With "
            "ignore_eos the end-of-generation tokens get a -1e9 logit bias in both paths."
        )
        return out

    # --- ingest speed and quality per embedder variant ------------------------------------------
    def bench_ingest(self) -> dict[str, Any]:
        """Variants that share weights (fp32 with another sequence length, batch or thread
        count) share one loaded model; every round times each variant once, in turn, so a
        change in the machine's load hits all of them alike."""
        from rag.index import CorpusIndex
        from rag.service import embed_text

        chunks = corpus_chunks(self.settings)
        texts = [embed_text(c) for c in chunks]
        names = self.opt.variants or tuple(v.name for v in VARIANTS)
        known = {v.name: v for v in VARIANTS}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {sorted(known)}")
        capped = self.opt.ingest_passages is not None and self.opt.ingest_passages < len(texts)
        items = self.questions()
        results: dict[str, Any] = {}
        loaded: dict[tuple[str, str | None, str], Embedder] = {}
        try:
            for name in names:  # load each set of weights once
                v = known[name]
                key = weights_key(v)
                results[name] = {"description": v.description, "measured": False}
                if key in loaded or any(
                    weights_key(known[n]) == key and "why" in results[n] for n in results
                ):
                    continue
                self.opt.log(f"ingest: loading {name}")
                gc.collect()
                rss0 = rss_bytes()
                t0 = time.perf_counter()
                try:
                    loaded[key] = self.engines.make_variant(base_variant(v))
                except Exception as exc:
                    results[name]["why"] = f"{type(exc).__name__}: {exc}"
                    continue
                rss = _rss_delta(rss0)
                results[name]["load_s"] = _round(time.perf_counter() - t0)
                results[name]["model_rss_mb"] = _round(rss / 2**20) if rss is not None else None
            todo = [n for n in names if weights_key(known[n]) in loaded]
            for n in names:
                if n not in todo and "why" not in results[n]:
                    results[n]["why"] = "its weights did not load"
            rates: dict[str, list[float | None]] = {n: [] for n in todo}
            vecs: dict[str, Vectors] = {}
            for r in range(self.opt.repeat):
                for name in todo:
                    v = known[name]
                    emb = loaded[weights_key(v)]
                    size = self.opt.ingest_passages or len(texts)
                    if v.speed_only:
                        size = min(size, self.opt.speed_only_passages)
                    batch = texts[:size]
                    self.opt.log(f"ingest: run {r + 1}, {name}")
                    with knobs(emb, v, self.settings):
                        if r == 0:
                            emb.embed_documents(batch[:2])  # warm-up (first call allocates)
                        t0 = time.perf_counter()
                        out = emb.embed_documents(batch)
                        dt = time.perf_counter() - t0
                    rates[name].append(len(batch) / dt if dt > 0 else None)
                    vecs.setdefault(name, out)
            for name in todo:
                v = known[name]
                emb = loaded[weights_key(v)]
                res = results[name]
                res.update(measured=True, passages=len(vecs[name]),
                           passages_per_s=over_runs(rates[name]))  # fmt: skip
                with knobs(emb, v, self.settings):
                    q_ms: list[float | None] = []
                    for item in items[:10]:
                        t0 = time.perf_counter()
                        emb._embed_query(item.question)
                        q_ms.append(_ms(t0))
                    res["query_ms"] = dist(q_ms)
                    base = vecs.get("fp32")
                    if name != "fp32" and base is not None and base.shape[1] == vecs[name].shape[1]:
                        m = min(len(base), len(vecs[name]))
                        cos = np.sum(base[:m] * vecs[name][:m], axis=1)
                        res["cosine_to_fp32"] = {"mean": _round(float(cos.mean())),
                                                 "min": _round(float(cos.min()))}  # fmt: skip
                    if capped or v.speed_only:
                        res["quality"] = None
                        res["quality_note"] = "not measured: only part of the corpus was embedded"
                        continue
                    self.opt.log(f"ingest: retrieval quality of {name}")
                    emb.__dict__.pop("_qcache", None)  # queries embedded with these knobs
                    rag = _rag(self.settings, emb, FakeGenerator(), self._tmp / f"v-{name}")
                    rag.index = CorpusIndex(emb.identity, emb.dim, chunks, vecs[name], {})
                    rag.index.build()
                    hybrid = _retrieval_quality(rag, items)
                    rag.settings = self.settings.model_copy(update={"hybrid": False})
                    dense = _retrieval_quality(rag, items)
                    res["quality"] = {"hybrid": hybrid, "dense_only": dense}
                    emb.__dict__.pop("_qcache", None)
        finally:
            loaded.clear()
            gc.collect()
        return {
            "chunks": len(texts),
            "chars_per_passage": _round(sum(map(len, texts)) / max(1, len(texts))),
            "variants": results,
            "best": choose_variant(results),
            "definition": "passages/s = passages / seconds of Embedder.embed_documents over "
            "the corpus chunks (title + text, as rag ingest embeds them), after a warm-up call, "
            "variants timed in turn in each run; quality = gold-set retrieval (k=10) on an "
            "index of those vectors, hybrid as configured and dense only; the bar: hybrid file "
            "hit@5 at most 0.01 below fp32.",
        }

    # --- synthetic search at scale ---------------------------------------------------------------
    def bench_search(self) -> dict[str, Any]:
        import faiss

        from rag.index import CorpusIndex, build_faiss, lexical_tokens
        from rag.text import nfc

        n, dim = self.opt.synthetic_chunks, self.opt.synthetic_dim
        rng = np.random.default_rng(6)
        mem: dict[str, Any] = {}
        gc.collect()
        rss0 = rss_bytes()
        vectors, centers = synthetic_vectors(n, dim, rng)
        mem["vectors_rss"] = _rss_delta(rss0)
        vocab, weights = syllable_vocab(self.settings.data_dir)
        gc.collect()
        rss0 = rss_bytes()
        chunks = synthetic_chunks(n, vocab, weights, rng, self.opt.synthetic_words)
        mem["chunk_table_rss"] = _rss_delta(rss0)
        self.opt.log(f"search: {n} synthetic chunks, building FAISS")
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        fidx = build_faiss(vectors)
        faiss_build_s = time.perf_counter() - t0
        mem["faiss_rss"] = _rss_delta(rss0)
        index = CorpusIndex("synthetic", dim, chunks, vectors, {})
        self.opt.log("search: building BM25")
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        index.build(fidx)
        bm25_build_s = time.perf_counter() - t0
        mem["bm25_rss"] = _rss_delta(rss0)
        computed = {
            "vectors": int(vectors.nbytes),
            "faiss": len(faiss.serialize_index(fidx)),
            "bm25": bm25_bytes(index._bm25),
            "chunk_table": chunk_table_bytes(chunks),
        }
        # Queries: the gold questions' text for BM25, synthetic vectors near the data for FAISS.
        texts = [nfc(i.question) for i in self.questions()]
        qn = max(self.opt.synthetic_queries, len(texts))
        qvecs = synthetic_queries(vectors, qn, rng)
        table = {t: qvecs[i] for i, t in enumerate(texts)}
        sub = self._tmp / "synthetic"
        (sub / "data").mkdir(parents=True, exist_ok=True)
        settings = self.settings.model_copy(update={"data_dir": sub / "data"})
        rag = _rag(settings, LookupEmbedder(table, dim), FakeGenerator(), sub / "index")
        rag.index = index
        depth = max(4 * settings.top_k, 30)
        exact = faiss.IndexFlatIP(dim)
        exact.add(vectors)
        names = ("retrieve", "dense", "bm25", "bm25_bincount", "exact_dense")
        runs: dict[str, list[list[float | None]]] = {k: [] for k in names}
        same_top = 0
        for r in range(self.opt.repeat):
            row: dict[str, list[float | None]] = {k: [] for k in names}
            for t in texts:
                t0 = time.perf_counter()
                rag.retrieve(t)
                row["retrieve"].append(_ms(t0))
                t0 = time.perf_counter()
                index.dense(table[t], depth)
                row["dense"].append(_ms(t0))
                t0 = time.perf_counter()
                slow = index.lexical(t, depth)
                row["bm25"].append(_ms(t0))
                t0 = time.perf_counter()
                fast = lexical_bincount(index._bm25, lexical_tokens(t), depth)
                row["bm25_bincount"].append(_ms(t0))
                t0 = time.perf_counter()
                exact.search(table[t].reshape(1, -1), depth)
                row["exact_dense"].append(_ms(t0))
                if r == 0:
                    same_top += [i for i, _ in slow] == [i for i, _ in fast]
            for k in names:
                runs[k].append(row[k])
        _, got = fidx.search(qvecs, 10)
        _, want = exact.search(qvecs, 10)
        recall = recall_at(got, want)
        sweep = ef_sweep(fidx, qvecs, want) if hasattr(fidx, "hnsw") else None
        tokenize = tokenize_timing(chunks[:2000])
        per_chunk = {key: _round(val / n) for key, val in computed.items()}
        rss = {key: _round(val / n) if val is not None else None for key, val in mem.items()}
        index_kind = type(fidx).__name__
        result: dict[str, Any] = {
            "chunks": n,
            "dim": dim,
            "syllables_per_chunk": self.opt.synthetic_words,
            "clusters": int(centers.shape[0]),
            "index_type": index_kind,
            "hnsw": {"M": int(fidx.hnsw.nb_neighbors(1)),
                     "efConstruction": int(fidx.hnsw.efConstruction),
                     "efSearch": int(fidx.hnsw.efSearch)} if hasattr(fidx, "hnsw") else None,
            "faiss_build_s": _round(faiss_build_s),
            "bm25_build_s": _round(bm25_build_s),
            "queries": len(texts),
            "recall_queries": qn,
            "retrieve_ms": latency_block(runs["retrieve"]),
            "parts_ms": {
                "dense_search": latency_block(runs["dense"]),
                "bm25_get_scores": latency_block(runs["bm25"]),
                "bm25_bincount": latency_block(runs["bm25_bincount"]),
                "exact_flat_search": latency_block(runs["exact_dense"]),
            },
            "bm25_bincount_same_ranking": f"{same_top}/{len(texts)}",
            "hnsw_ef_search_sweep": sweep,
            "bm25_tokenize_ms_per_chunk": tokenize,
            "recall_at_10": _round(recall),
            "memory_bytes_per_chunk": {
                "computed": per_chunk | {"total": _round(sum(computed.values()) / n)},
                "rss_delta": rss | {
                    "total": _round(sum(v for v in mem.values() if v is not None) / n)
                },
            },
            "definition": "retrieve = RAG.retrieve(question) on the synthetic index with the "
            "query vector looked up (no embedding): FAISS + BM25 + rank fusion + passages. "
            "Queries: the gold questions' text for BM25 with synthetic vectors near data points. "
            "Vectors: unit vectors around random cluster centres; text: syllables drawn with "
            "their frequencies in the articles. recall@10: HNSW ids vs IndexFlatIP ids.",
        }  # fmt: skip
        for block in result["parts_ms"].values():
            block.pop("samples", None)
        result["retrieve_ms"].pop("samples", None)
        del rag, index, fidx, exact, vectors, chunks
        gc.collect()
        return result

    # --- the server ------------------------------------------------------------------------------
    def bench_server(self) -> dict[str, Any]:
        items = [i for i in self.questions() if i.answerable][: self.opt.server_questions]
        starts = 1 + (self.opt.server_restarts if self.opt.server_restarts is not None
                      else self.opt.repeat)  # fmt: skip
        env = dict(self.engines.server_env)
        if self._index_dir is not None and self._index_dir != self.settings.index_dir:
            env["RAG_INDEX_DIR"] = str(self._index_dir)
        ready: list[float | None] = []
        rss_after: list[float | None] = []
        rss_peak: list[float | None] = []
        rss_ready: list[float | None] = []
        http: dict[str, Any] | None = None
        logs: list[str] = []
        for start in range(starts):
            self.opt.log(f"server: start {start + 1}/{starts}")
            with serve(env, timeout_s=self.opt.server_timeout_s, log_dir=self._tmp) as srv:
                ready.append(srv.ready_s)
                logs.append(srv.log_tail())
                if srv.ready_s is None:
                    continue
                rss_ready.append(_mb(rss_bytes(srv.pid)))
                if start == 0 or not self.opt.quick:
                    h = http_evidence(srv.url, items, 1, full_answers=True)
                    http = http if http is not None else h
                    rss_after.append(_mb(rss_bytes(srv.pid)))
                    rss_peak.append(_mb(rss_bytes(srv.pid, "VmHWM")))
        parts = startup_parts(env, timeout_s=self.opt.server_timeout_s)
        out: dict[str, Any] = {
            "starts": starts,
            "startup_parts_s": parts,
            "ready_s": [_round(x) for x in ready],
            "first_ready_s": _round(ready[0]) if ready else None,
            "warm_ready_s": over_runs(ready[1:]),
            "rss_at_ready_mb": over_runs(rss_ready),
            "rss_after_questions_mb": over_runs(rss_after),
            "rss_peak_mb": over_runs(rss_peak),
            "questions": len(items),
            "http": http,
            "definition": "python -m rag.cli serve on a free local port with the benchmark's "
            "settings; ready = perf_counter from Popen to the first 200 from GET /healthz "
            "(the lifespan loads the embedder, the index and the answer model). Memory = VmRSS "
            "(and peak VmHWM) of the server after the questions were answered in full.",
        }
        if any(x is None for x in ready):
            out["log_tail"] = logs
        return out


def _mb(b: int | None) -> float | None:
    return b / 2**20 if b is not None else None


# --- the pieces each section is made of ---------------------------------------------------------
@contextlib.contextmanager
def ban_eos(llm: Any, *, enabled: bool) -> Iterator[list[int]]:
    """Make ``llm.create_chat_completion`` never end on an end-of-generation token (both the
    direct and the service path call it, so both are changed the same way)."""
    if not enabled:
        yield []
        return
    ids: set[int] = set()
    with contextlib.suppress(Exception):
        ids.add(int(llm.token_eos()))
    for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>"):
        with contextlib.suppress(Exception):
            toks = llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(toks) == 1:
                ids.add(int(toks[0]))
    ids.discard(-1)
    original = llm.create_chat_completion
    bias = {i: -1e9 for i in sorted(ids)}

    def patched(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("logit_bias", bias)
        return original(*args, **kwargs)

    had_own = "create_chat_completion" in vars(llm)
    llm.create_chat_completion = patched
    try:
        yield sorted(ids)
    finally:
        if had_own:
            llm.create_chat_completion = original
        else:
            del llm.create_chat_completion


def direct_stream(
    llm: Any, messages: list[ChatMessage], max_tokens: int, temperature: float
) -> tuple[list[float], str]:
    """Timestamps (s since the call) of the text pieces of a direct llama-cpp-python stream."""
    t0 = time.perf_counter()
    stream: Any = llm.create_chat_completion(
        messages=list(messages), max_tokens=max_tokens, temperature=temperature,
        top_k=1 if temperature == 0 else 40, repeat_penalty=1.05, stream=True,
    )  # fmt: skip
    stamps: list[float] = []
    pieces: list[str] = []
    try:
        for part in stream:
            delta = part["choices"][0]["delta"].get("content")
            if delta:
                stamps.append(time.perf_counter() - t0)
                pieces.append(delta)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return stamps, "".join(pieces)


def service_stream(
    rag: Any, question: str, max_tokens: int, temperature: float
) -> tuple[list[float], str]:
    """Timestamps (s since the call) of the token events of ``RAG.stream``."""
    t0 = time.perf_counter()
    stamps: list[float] = []
    pieces: list[str] = []
    it = rag.stream(question, max_tokens=max_tokens, temperature=temperature)
    try:
        for ev in it:
            if ev.kind == "token":
                stamps.append(time.perf_counter() - t0)
                pieces.append(ev.token)
    finally:
        it.close()
    return stamps, "".join(pieces)


def choose_variant(results: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest variant whose hybrid file hit@5 is at most 0.01 below fp32's."""
    base = results.get("fp32")
    if not base or not base.get("measured"):
        return None
    base_rate = dig(base, ("passages_per_s", "median"))
    base_hit = dig(base, ("quality", "hybrid", "file_hit@5"))
    best: dict[str, Any] | None = None
    for name, r in results.items():
        rate = dig(r, ("passages_per_s", "median"))
        hit = dig(r, ("quality", "hybrid", "file_hit@5"))
        if not r.get("measured") or rate is None or not base_rate:
            continue
        ok = hit is not None and base_hit is not None and hit >= base_hit - 0.01 - 1e-9
        if ok and (best is None or rate > best["passages_per_s"]):
            best = {"variant": name, "passages_per_s": rate, "speedup": _round(rate / base_rate),
                    "file_hit@5": hit, "file_hit@1": dig(r, ("quality", "hybrid", "file_hit@1")),
                    "fp32_file_hit@5": base_hit,
                    "fp32_file_hit@1": dig(base, ("quality", "hybrid", "file_hit@1"))}  # fmt: skip
    return best


def synthetic_vectors(
    n: int, dim: int, rng: np.random.Generator, *, block: int = 10_000
) -> tuple[Vectors, Vectors]:
    """Unit vectors in clusters (about 500 per cluster), cosine to their centre about 0.7."""
    clusters = max(8, n // 500)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        noise = rng.standard_normal((e - s, dim)).astype(np.float32) / np.float32(math.sqrt(dim))
        v = centers[rng.integers(clusters, size=e - s)] + noise
        out[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, centers


def synthetic_queries(vectors: Vectors, n: int, rng: np.random.Generator) -> Vectors:
    """Queries near random data points (a query is about a passage, not equal to it)."""
    dim = vectors.shape[1]
    base = vectors[rng.integers(len(vectors), size=n)]
    q = base + 0.7 * rng.standard_normal((n, dim)).astype(np.float32) / np.float32(math.sqrt(dim))
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


def syllable_vocab(data_dir: Path) -> tuple[list[str], Any]:
    """The syllables of the articles with their relative frequencies."""
    from rag.text import words

    counts: Counter[str] = Counter()
    for p in sorted(data_dir.glob("*")):
        if p.suffix.lower() in (".txt", ".md"):
            counts.update(words(p.read_text(encoding="utf-8", errors="ignore")))
    if not counts:
        counts.update(["tin", "tức", "việt", "nam", "kinh", "tế", "năm", "đã", "và", "của"])
    vocab = list(counts)
    w = np.asarray([counts[t] for t in vocab], dtype=np.float64)
    return vocab, w / w.sum()


def synthetic_chunks(
    n: int, vocab: Sequence[str], weights: Any, rng: np.random.Generator, mean_words: int = 170
) -> list[Chunk]:
    """Chunks of syllables drawn by frequency, sentences of 12-25 syllables, ~800 characters."""
    lengths = rng.integers(mean_words // 2, mean_words * 3 // 2, size=n)
    draws = rng.choice(len(vocab), size=int(lengths.sum()), p=weights)
    vocab_arr = np.asarray(vocab, dtype=object)
    chunks: list[Chunk] = []
    pos = 0
    for i, ln in enumerate(lengths):
        toks = vocab_arr[draws[pos : pos + ln]]
        pos += int(ln)
        sents = []
        for s in range(0, len(toks), 18):
            part = " ".join(toks[s : s + 18])
            sents.append(part[:1].upper() + part[1:] + ".")
        text = " ".join(sents)
        chunks.append(Chunk(id=f"syn-{i}", source=f"syn_{i // 20:05d}.txt", start=0,
                            end=len(text), text=text, hash=f"{i:x}", title=""))  # fmt: skip
    return chunks


def recall_at(got: Any, want: Any) -> float:
    """Mean share of the exact top-k ids that the approximate search also returned."""
    k = want.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want, strict=True)]))


def ef_sweep(fidx: Any, qvecs: Vectors, want: Any) -> list[dict[str, Any]]:
    """Recall@10 and one-query latency of an HNSW index at several efSearch values."""
    saved = fidx.hnsw.efSearch
    out = []
    try:
        for ef in (16, 32, 64, 128, 256):
            fidx.hnsw.efSearch = ef
            _, got = fidx.search(qvecs, want.shape[1])
            ms: list[float | None] = []
            for q in qvecs[:100]:
                t0 = time.perf_counter()
                fidx.search(q.reshape(1, -1), 30)
                ms.append(_ms(t0))
            out.append({"ef_search": ef, "recall_at_10": _round(recall_at(got, want)),
                        "p50_ms": _round(percentile(ms, 50))})  # fmt: skip
    finally:
        fidx.hnsw.efSearch = saved
    return out


def tokenize_timing(chunks: Sequence[Chunk]) -> dict[str, Any]:
    """Milliseconds per chunk of BM25's tokenisation (``lexical_tokens``), as it is and with
    the diacritic folding memoised per word: the bulk of building BM25 for a large corpus."""
    from functools import lru_cache

    from rag.index import lexical_tokens
    from rag.text import fold, words

    cached = lru_cache(maxsize=1 << 18)(fold)

    def memo_tokens(text: str) -> list[str]:
        toks = [cached(w) for w in words(text)]
        return toks + [f"{a}_{b}" for a, b in itertools.pairwise(toks)]

    texts = [c.title + "\n" + c.text for c in chunks]
    if not texts:
        return {}
    t0 = time.perf_counter()
    plain = [lexical_tokens(t) for t in texts]
    plain_ms = _ms(t0) / len(texts)
    t0 = time.perf_counter()
    memo = [memo_tokens(t) for t in texts]
    memo_ms = _ms(t0) / len(texts)
    return {"chunks": len(texts), "lexical_tokens": _round(plain_ms),
            "memoised_fold": _round(memo_ms), "same_tokens": plain == memo}  # fmt: skip


def chunk_table_bytes(chunks: Sequence[Chunk]) -> int:
    """Bytes held by the chunk objects and their strings (``sys.getsizeof``, list included)."""
    total = sys.getsizeof(chunks)
    for c in chunks:
        total += sys.getsizeof(c) + sum(
            sys.getsizeof(getattr(c, f)) for f in ("id", "source", "text", "hash", "title", "date")
        )
        total += sys.getsizeof(c.start) + sys.getsizeof(c.end)
    return total


def bm25_bytes(bm25: Any) -> int:
    """Bytes of a bm25s index: its score arrays and its vocabulary dictionary."""
    if bm25 is None:
        return 0
    total = 0
    for v in getattr(bm25, "scores", {}).values():
        if isinstance(v, np.ndarray):
            total += int(v.nbytes)
    vocab = getattr(bm25, "vocab_dict", None) or {}
    total += sys.getsizeof(vocab) + sum(sys.getsizeof(k) + 28 for k in vocab)
    ids = getattr(bm25, "unique_token_ids_set", None)
    if ids:
        total += sys.getsizeof(ids)
    return total


def lexical_bincount(bm25: Any, tokens: Sequence[str], k: int) -> list[tuple[int, float]]:
    """The same BM25 top-k as ``CorpusIndex.lexical``, summing the query's posting lists with
    one ``np.bincount`` instead of bm25s' ``np.add.at`` per token."""
    ids = np.asarray(bm25.get_tokens_ids(list(tokens)), dtype=np.int64)
    n_docs = int(bm25.scores["num_docs"])
    if ids.size == 0 or n_docs == 0:
        return []
    data, indices, indptr = bm25.scores["data"], bm25.scores["indices"], bm25.scores["indptr"]
    starts, ends = indptr[ids], indptr[ids + 1]
    sel = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    scores = np.bincount(indices[sel], weights=data[sel], minlength=n_docs).astype(np.float32)
    nonocc = getattr(bm25, "nonoccurrence_array", None)
    if nonocc is not None:
        scores += nonocc[ids].sum()
    k = min(k, n_docs)
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top if scores[i] > 0]


# --- HTTP ----------------------------------------------------------------------------------------
def http_evidence(
    url: str, items: Sequence[GoldItem], repeat: int, *, full_answers: bool = False
) -> dict[str, Any]:
    """Over HTTP: POST /v1/ask with stream=true; time to the ``passages`` and first ``token``
    events. ``max_tokens`` 1 keeps each request short unless ``full_answers``."""
    import httpx

    ev_runs: list[list[float | None]] = []
    tok_runs: list[list[float | None]] = []
    totals: list[float | None] = []
    with httpx.Client(base_url=url, timeout=900.0) as client:
        for _ in range(repeat):
            ev_row: list[float | None] = []
            tok_row: list[float | None] = []
            for item in items:
                body: dict[str, Any] = {"question": item.question, "stream": True}
                if not full_answers:
                    body["max_tokens"] = 1
                ev = tok = None
                t0 = time.perf_counter()
                with client.stream("POST", "/v1/ask", json=body) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                            if kind == "passages" and ev is None:
                                ev = _ms(t0)
                            elif kind == "token" and tok is None:
                                tok = _ms(t0)
                totals.append(_ms(t0))
                ev_row.append(ev)
                tok_row.append(tok)
            ev_runs.append(ev_row)
            tok_runs.append(tok_row)
    return {
        "url": url,
        "questions": len(items),
        "evidence_ms": latency_block(ev_runs),
        "first_token_ms": latency_block(tok_runs),
        "total_ms": dist(totals),
        "max_tokens": None if full_answers else 1,
    }


_STARTUP_SCRIPT = """
import json, time
t0 = time.perf_counter()
out = {}
import api.main
out["import_api_and_service"] = time.perf_counter() - t0
from rag.service import RAG
from rag.settings import Settings
if Settings().embedder != "fake":
    t = time.perf_counter()
    import torch, sentence_transformers
    out["import_torch_and_sentence_transformers"] = time.perf_counter() - t
t = time.perf_counter()
rag = RAG.from_settings(Settings())
out["load_embedder_and_index"] = time.perf_counter() - t
t = time.perf_counter()
rag.generator
out["load_answer_model"] = time.perf_counter() - t
t = time.perf_counter()
rag.search("Thủ tướng thăm Mỹ")
out["first_search"] = time.perf_counter() - t
out["total"] = time.perf_counter() - t0
print("STARTUP " + json.dumps(out))
"""


def startup_parts(env: dict[str, str], *, timeout_s: float) -> dict[str, Any]:
    """Where a start's time goes: the steps of the server's lifespan, timed one by one in a
    fresh interpreter with the same settings (imports, embedder + index, answer model)."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", _STARTUP_SCRIPT], cwd=ROOT, env={**os.environ, **env},
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in r.stdout.splitlines():
        if line.startswith("STARTUP "):
            return {k: _round(v) for k, v in json.loads(line[8:]).items()}
    return {"error": (r.stderr or r.stdout)[-500:]}


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies, so no server is left behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    pid: int
    url: str
    ready_s: float | None
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def serve(env: dict[str, str], *, timeout_s: float, log_dir: Path) -> Iterator[Server]:
    """Start ``python -m rag.cli serve`` on a free port; stop it (SIGTERM, then SIGKILL)."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"server-{port}.log"
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        ready: float | None = None
        try:
            with httpx.Client(base_url=url, timeout=2.0) as client:
                while time.perf_counter() - t0 < timeout_s and proc.poll() is None:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get("/healthz").status_code == 200:
                            ready = time.perf_counter() - t0
                            break
                    time.sleep(0.05)
            yield Server(proc.pid, url, ready, log_path)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)


# --- targets and report files --------------------------------------------------------------------
def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, path, op, bound, unit in TARGETS:
        if path[0] not in report.get("sections", {}):
            continue
        value = dig(report["sections"], path)
        met = None
        if isinstance(value, int | float):
            met = value <= bound if op == "<=" else value >= bound
        out.append({"target": label, "value": _round(value) if isinstance(value, float) else value,
                    "bound": f"{op} {bound:g}", "unit": unit, "met": met,
                    "path": "sections." + ".".join(path)})  # fmt: skip
    return out


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(
        json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    paths["md"].write_text(markdown(report), encoding="utf-8")
    return paths


def _f(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if unit == "rate":
            return f"{value:.3f}"
        if unit in ("x",):
            return f"{value:.2f}"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _fig(fig: Any, unit: str = "") -> str:
    """``median (min–max, n runs)`` of an ``over_runs`` figure."""
    if not isinstance(fig, dict) or fig.get("median") is None:
        return "—"
    runs = fig.get("runs") or []
    if len(runs) <= 1:
        return _f(fig["median"], unit)
    return f"{_f(fig['median'], unit)} ({_f(fig['min'], unit)}–{_f(fig['max'], unit)})"


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    m = cfg.get("machine", {})
    git = cfg.get("git") or {}
    cpu = cfg.get("cpu_during_run") or {}
    opts = cfg.get("options", {})
    lines = [
        "# Speed benchmark",
        "",
        f"{cfg.get('date', '')} · commit `{(git.get('commit') or 'unknown')[:10]}`"
        f"{' (with uncommitted changes)' if git.get('dirty') else ''} · "
        f"{'quick' if opts.get('quick') else 'full'} run, {opts.get('repeat')} repeat(s) · "
        f"{cfg.get('seconds', 0):.0f} s",
        "",
        f"Machine: {m.get('cores_available')} of {m.get('cores')} cores, {m.get('cpu')} "
        f"({', '.join(m.get('cpu_flags', []))}), {m.get('memory_gb')} GB; load average at start "
        f"{m.get('load_avg_start')}, at end {cpu.get('load_avg_end')}; other processes used "
        f"{_pct(cpu.get('others_share'))} of the machine's CPU during the run.",
        "",
        f"Models: embedder `{cfg.get('models', {}).get('embedder')}`, answer models "
        f"{cfg.get('models', {}).get('generators')}. Settings: n_threads "
        f"{cfg.get('settings', {}).get('n_threads')}, top_k {cfg.get('settings', {}).get('top_k')}"
        f", context_sentences {cfg.get('settings', {}).get('context_sentences')}, max_tokens "
        f"{cfg.get('settings', {}).get('max_tokens')}, embed_max_seq_length "
        f"{cfg.get('settings', {}).get('embed_max_seq_length')}.",
        "",
        "Each figure is the median over the runs, with the min–max over runs in brackets.",
        "",
        "## Targets",
        "",
        "| target | measured | bound | met |",
        "|---|---|---|---|",
    ]
    for t in report.get("targets", []):
        lines.append(f"| {t['target']} | {_f(t['value'], t['unit'])} {t['unit']} | "
                     f"{t['bound']} {t['unit']} | {_f(t['met'])} |")  # fmt: skip
    for name, err in report.get("errors", {}).items():
        lines.append(f"\n**Section `{name}` failed:** {err}")
    sec = report.get("sections", {})
    if "evidence" in sec:
        lines += _md_evidence(sec["evidence"])
    if "first_token" in sec:
        lines += _md_first_token(sec["first_token"])
        lines += _md_busy(sec["first_token"])
    if "decode" in sec:
        lines += _md_decode(sec["decode"])
    if "ingest" in sec:
        lines += _md_ingest(sec["ingest"])
    if "search" in sec:
        lines += _md_search(sec["search"])
    if "server" in sec:
        lines += _md_server(sec["server"])
    notes = cfg.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _pct(x: Any) -> str:
    return f"{100 * x:.0f} %" if isinstance(x, int | float) else "—"


def _lat_row(label: str, block: Any) -> str:
    return f"| {label} | {_fig(dig(block, ('p50',)))} | {_fig(dig(block, ('p95',)))} |"


def _md_evidence(e: dict[str, Any]) -> list[str]:
    ip = e["in_process"]
    lines = ["", "## First evidence", "",
             f"{e['questions']} gold questions, {e['chunks']} chunks. {e['definition']}", "",
             "| in-process (ms) | p50 | p95 |", "|---|---|---|",
             _lat_row("request → passages, query embedding cold", ip["cold_ms"]),
             _lat_row("request → passages, query embedding cached", ip["warm_ms"])]  # fmt: skip
    for k, v in ip["parts_ms"].items():
        lines.append(_lat_row(f"part: {k.replace('_', ' ')}", v))
    if e.get("http"):
        h = e["http"]
        lines += ["", f"Over HTTP ({h['url']}, POST /v1/ask stream, max_tokens 1):", "",
                  "| HTTP (ms) | p50 | p95 |", "|---|---|---|",
                  _lat_row("request → passages event", h["evidence_ms"]),
                  _lat_row("request → first token event", h["first_token_ms"])]  # fmt: skip
    return lines


def _md_first_token(ft: dict[str, Any]) -> list[str]:
    lines = ["", "## Time to first answer token", "", ft["definition"], "",
             "| model | load (s) | first after load (ms) | p50 (ms) | p95 (ms) | prompt tokens p50 "
             "(system) | prompt tok/s after the system prompt | prefix cache off → on, p50 "
             "(ms) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for role, r in ft["models"].items():
        pc = r.get("prefix_cache") or {}
        pc_txt = "—"
        if pc.get("measured"):
            pc_txt = (
                f"{_f(dig(pc, ('reset_ttft_ms', 'p50')))} → "
                f"{_f(dig(pc, ('normal_ttft_ms', 'p50')))}"
            )
        lines.append(
            f"| {role}: `{r['model']}` | {_f(r['load_s'])} | "
            f"{_f(r['first_request_after_load_ms'])} | {_fig(r['ttft_ms']['p50'])} | "
            f"{_fig(r['ttft_ms']['p95'])} | {_f(dig(r, ('prompt_tokens', 'p50')))} "
            f"({_f(r.get('system_prompt_tokens'))}) | "
            f"{_f(dig(r, ('prompt_tok_s_after_prefix', 'p50')))} | {pc_txt} |"
        )
    return lines


def _md_busy(ft: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for r in ft["models"].values():
        busy = r.get("evidence_while_generating_ms")
        if not busy:
            continue
        cells = [
            f"{label.replace('_', ' ')}: p50 {_f(dig(busy, (label, 'p50')))} ms, p95 "
            f"{_f(dig(busy, (label, 'p95')))} ms"
            for label in ("threads_as_configured", "embedder_on_1_thread")
            if label in busy
        ]
        lines += ["", f"First evidence while `{r['model']}` generates in another thread "
                  f"({busy['questions']} questions, query embedding cold): " + "; ".join(cells)
                  + "."]  # fmt: skip
    return lines


def _md_decode(d: dict[str, Any]) -> list[str]:
    lines = ["", "## Decoding speed: service vs llama-cpp-python directly", "",
             f"max_tokens {d['max_tokens']}, ignore EOS {d['ignore_eos']}, questions "
             f"{', '.join(d['questions'])}. {d['definition']}", "",
             "| model | direct tok/s | service tok/s | service / direct |",
             "|---|---|---|---|"]  # fmt: skip
    for role, r in d["models"].items():
        if not r.get("model"):
            lines.append(f"| {role} | — | — | {r.get('why', '')} |")
            continue
        lines.append(f"| {role}: `{r['model']}` | {_fig(r['direct_tok_s'])} | "
                     f"{_fig(r['service_tok_s'])} | {_fig(r['ratio'], 'x')} |")  # fmt: skip
    return lines


def _md_ingest(g: dict[str, Any]) -> list[str]:
    lines = ["", "## Ingest: embedding speed and retrieval quality per variant", "",
             f"{g['chunks']} chunks of the corpus (~{_f(g['chars_per_passage'])} characters). "
             f"{g['definition']}", "",
             "| variant | passages/s | × fp32 | query (ms) | cos to fp32 (min) | hit@1 | hit@5 "
             "| dense-only hit@1 / hit@5 | load (s) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = dig(g, ("variants", "fp32", "passages_per_s", "median"))
    for name, r in g["variants"].items():
        if not r.get("measured"):
            lines.append(f"| {name} | not measured: {r.get('why', '')} | | | | | | | |")
            continue
        rate = dig(r, ("passages_per_s", "median"))
        speed = rate / base if rate and base else None
        hy = dig(r, ("quality", "hybrid")) or {}
        de = dig(r, ("quality", "dense_only")) or {}
        lines.append(
            f"| {name} | {_fig(r['passages_per_s'])} | {_f(speed, 'x')} | "
            f"{_f(dig(r, ('query_ms', 'p50')))} | {_f(dig(r, ('cosine_to_fp32', 'min')), 'rate')} "
            f"| {_f(hy.get('file_hit@1'), 'rate')} | {_f(hy.get('file_hit@5'), 'rate')} | "
            f"{_f(de.get('file_hit@1'), 'rate')} / {_f(de.get('file_hit@5'), 'rate')} | "
            f"{_f(r.get('load_s'))} |"
        )
    best = g.get("best")
    if best:
        lines += ["", f"Fastest within the quality bar: **{best['variant']}**, "
                  f"{_f(best['speedup'], 'x')}× fp32 (hit@5 {_f(best['file_hit@5'], 'rate')} vs "
                  f"{_f(best['fp32_file_hit@5'], 'rate')}, hit@1 {_f(best['file_hit@1'], 'rate')} "
                  f"vs {_f(best['fp32_file_hit@1'], 'rate')})."]  # fmt: skip
    return lines


def _md_search(s: dict[str, Any]) -> list[str]:
    mem = s["memory_bytes_per_chunk"]
    lines = ["", "## Search over a synthetic corpus", "",
             f"{s['chunks']} chunks, dim {s['dim']}, {s['clusters']} clusters, index "
             f"{s['index_type']} {s.get('hnsw') or ''} (built in {_f(s['faiss_build_s'])} s; "
             f"BM25 in {_f(s['bm25_build_s'])} s). {s['definition']}", "",
             "| retrieval (ms) | p50 | p95 |", "|---|---|---|",
             _lat_row("whole retrieval (no query embedding)", s["retrieve_ms"])]  # fmt: skip
    for k, v in s["parts_ms"].items():
        lines.append(_lat_row(f"part: {k.replace('_', ' ')}", v))
    sweep = s.get("hnsw_ef_search_sweep") or []
    tok = s.get("bm25_tokenize_ms_per_chunk") or {}
    lines += [
        "",
        f"HNSW recall@10 against exact search: {_f(s['recall_at_10'], 'rate')} "
        f"({s['recall_queries']} queries). bm25 bincount gives the same ranking for "
        f"{s['bm25_bincount_same_ranking']} queries.",
        "",
    ]
    if sweep:
        lines += [
            "| efSearch | " + " | ".join(str(x["ef_search"]) for x in sweep) + " |",
            "|---" * (len(sweep) + 1) + "|",
            "| recall@10 | " + " | ".join(_f(x["recall_at_10"], "rate") for x in sweep) + " |",
            "| dense p50 (ms) | " + " | ".join(_f(x["p50_ms"]) for x in sweep) + " |",
            "",
        ]
    if tok:
        lines += [
            f"BM25 tokenisation per chunk: {_f(tok.get('lexical_tokens'))} ms as it is, "
            f"{_f(tok.get('memoised_fold'))} ms with fold() memoised per word (same "
            f"tokens: {_f(tok.get('same_tokens'))}).",
            "",
        ]
    lines += [
        "| memory per chunk (bytes) | vectors | FAISS | BM25 | chunk table | total |",
        "|---|---|---|---|---|---|",
    ]
    parts = ("vectors", "faiss", "bm25", "chunk_table")
    for kind in ("computed", "rss_delta"):
        r = mem[kind]
        cells = [r.get(part, r.get(f"{part}_rss")) for part in parts] + [r.get("total")]
        lines.append(f"| {kind.replace('_', ' ')} | " + " | ".join(_f(c) for c in cells) + " |")
    return lines


def _md_server(s: dict[str, Any]) -> list[str]:
    lines = ["", "## Server", "", s["definition"], "",
             f"- ready after start: first {_f(s['first_ready_s'])} s; warm restarts "
             f"{_fig(s['warm_ready_s'])} s (all: {s['ready_s']})",
             f"- resident memory: at ready {_fig(s['rss_at_ready_mb'])} MB, after "
             f"{s['questions']} questions {_fig(s['rss_after_questions_mb'])} MB, peak "
             f"{_fig(s['rss_peak_mb'])} MB"]  # fmt: skip
    parts = s.get("startup_parts_s") or {}
    if parts and "error" not in parts:
        lines.append(
            "- where a start goes (s, timed step by step in a fresh interpreter): "
            + ", ".join(f"{k.replace('_', ' ')} {_f(v)}" for k, v in parts.items())
        )
    h = s.get("http")
    if h:
        lines.append(
            f"- over HTTP: passages event p50 {_fig(dig(h, ('evidence_ms', 'p50')))} ms, first "
            f"token p50 {_fig(dig(h, ('first_token_ms', 'p50')))} ms, whole answer p50 "
            f"{_f(dig(h, ('total_ms', 'p50')))} ms"
        )
    return lines


def run_bench(engines: Engines, options: BenchOptions) -> dict[str, Any]:
    bench = Bench(engines, options)
    try:
        return bench.run()
    finally:
        bench.close()
