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

from rag.bench.core import Bench, run_bench
from rag.bench.helpers import corpus_chunks
from rag.bench.options import DEFAULT_OUT, SECTIONS, BenchOptions, Engines, settings_env
from rag.bench.pieces import (
    bm25_bytes,
    choose_variant,
    chunk_table_bytes,
    lexical_bincount,
    synthetic_vectors,
)
from rag.bench.report import markdown, targets, write_report
from rag.bench.stats import decode_rate, dist, latency_block, over_runs
from rag.bench.variants import VARIANTS, Variant

__all__ = [
    "DEFAULT_OUT", "SECTIONS", "VARIANTS", "Bench", "BenchOptions", "Engines", "Variant",
    "bm25_bytes", "choose_variant", "chunk_table_bytes", "corpus_chunks", "decode_rate", "dist",
    "latency_block", "lexical_bincount", "markdown", "over_runs", "run_bench", "settings_env",
    "synthetic_vectors", "targets", "write_report",
]  # fmt: skip
