"""What to run (options, embedder variants) and the engines to run it on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rag.bench.variants import QUICK_VARIANTS, Variant, load_variant
from rag.embedding import Embedder, HashingEmbedder
from rag.embedding.factory import load_embedder
from rag.generation import FakeGenerator, Generator
from rag.settings import DEFAULT_GENERATOR, SMALL_GENERATOR, Settings

REPORT_VERSION = 1
ROOT = Path(__file__).resolve().parents[2]
#: Asked once after a model is loaded; not a gold question, so no measured prompt is cached.
WARMUP_QUESTION = "Các bài viết nói về những chủ đề gì?"
SECTIONS = (
    "evidence", "first_token", "states", "decode", "ingest", "search", "server", "vectors",
    "throughput",
)  # fmt: skip
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
    ("ingest speed-up of the service's embedder over PyTorch fp32",
     ("ingest", "configured", "speedup"), ">=", 3.0, "x"),
    ("search p50 at the synthetic size (no query embedding)",
     ("search", "retrieve_ms", "p50", "median"), "<=", 20.0, "ms"),
    ("HNSW recall@10 against exact search",
     ("search", "recall_at_10"), ">=", 0.95, "rate"),
    ("server resident memory after questions, with its worker processes",
     ("server", "rss_with_workers_mb", "median"), "<=", 3072.0, "MB"),
    ("first token with passage states / naive reference (p50)",
     ("states", "ratio_states_to_naive"), "<=", 0.25, "x"),
    ("server warm restart until /healthz answers",
     ("server", "warm_ready_s", "median"), "<=", 5.0, "s"),
]  # fmt: skip


# --- options and engines -------------------------------------------------------------------------
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
    state_questions: int = 30  # states: first token with and without passage states
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
    vector_chunks: int = 100_000  # vectors: FAISS HNSW against Milvus Lite
    throughput_clients: tuple[int, ...] = (1, 4, 8)
    throughput_asks: int = 8  # per client count (at least one per client)
    progress: Callable[[str], None] | None = None

    @classmethod
    def for_run(cls, *, quick: bool, **overrides: Any) -> BenchOptions:
        """Full sizes, or the reduced ``--quick`` ones; explicit ``overrides`` win."""
        base = cls()
        if quick:
            base = replace(
                base, quick=True, repeat=1, questions=5, prefix_questions=2, decode_questions=1,
                state_questions=3,
                decode_tokens=24, variants=QUICK_VARIANTS, ingest_passages=8,
                speed_only_passages=4, synthetic_chunks=6000, synthetic_queries=30,
                server_questions=1, server_restarts=1, vector_chunks=3000,
                throughput_clients=(1, 2), throughput_asks=2,
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
            return load_embedder(settings)

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
