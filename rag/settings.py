"""One typed settings object for the library, the CLI and the HTTP API (env prefix ``RAG_``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_GENERATOR = "qwen2.5-coder-1.5b-instruct-q4_k_m"
SMALL_GENERATOR = "qwen2.5-coder-0.5b-instruct-q4_k_m"
DEFAULT_EMBEDDER = "embeddinggemma-300m"


class Settings(BaseSettings):
    """Every knob of the service. Each field can be set with ``RAG_<NAME>`` or in a ``.env``."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(Path("data/articles"), description="Folder of the articles to index.")
    index_dir: Path = Field(Path("index"), description="Folder of the built index.")
    trash_dir: Path | None = Field(
        None,
        description="Where deleted and replaced articles are kept until purged (restorable); "
        "empty means a `trash` folder beside `data_dir` (data/trash).",
    )
    models_dir: Path = Field(
        Path("models"), description="Folder of the model manifest and the downloaded weights."
    )

    # --- engines -----------------------------------------------------------------------------
    embedder: Literal["onnx", "sentence-transformers", "fake"] = Field(
        "onnx",
        description="Embedding engine: 'onnx' runs the model's exported graph with ONNX Runtime "
        "(int8, see embed_quantize; exported once into models/.onnx, no torch at start), "
        "'sentence-transformers' the PyTorch model; 'fake' is a deterministic hashing embedder "
        "for tests. A model the ONNX export cannot handle falls back to sentence-transformers.",
    )
    embed_quantize: Literal["auto", "int8-s8", "int8", "none"] = Field(
        "auto",
        description="ONNX embedder weights: 'int8-s8' signed int8 (fast where the CPU has "
        "AVX-512 VNNI, AVX-VNNI or AMX), 'int8' unsigned int8 (safe on plain AVX2), 'auto' the "
        "first where the CPU has an int8 dot product, else the second; 'none' fp32.",
    )
    embedding_model: str = Field(
        DEFAULT_EMBEDDER,
        description="A manifest model name, a sentence-transformers folder, or a model name "
        "already in the local Hugging Face cache.",
    )
    embed_batch_size: int = Field(
        4,
        ge=1,
        description="Passages per embedding batch (small batches pad less; measured "
        "fastest for the int8 ONNX embedder, whose activation scales also span the batch).",
    )
    embed_max_seq_length: int = Field(
        512, ge=32, description="Token limit of the embedder (longer passages are truncated)."
    )
    generator: Literal["llama-cpp", "fake"] = Field(
        "llama-cpp", description="Answer engine; 'fake' returns extractive answers for tests."
    )
    generator_model: str = Field(
        DEFAULT_GENERATOR, description="A manifest model name or a path to any GGUF file."
    )
    generator_process: bool = Field(
        True,
        description="Run the answer model in a supervised child process, so a crash of the "
        "native model runtime (segfault, abort, out-of-memory kill) cannot take the service "
        "down; it is restarted with back-off.",
    )
    engine_load_timeout_s: float = Field(
        120.0, gt=0, description="How long start-up waits for the answer model to load."
    )
    extra_buffers: Literal["auto", "on", "off"] = Field(
        "auto",
        description="llama.cpp extra buffer types (weight repacking). 'auto' turns them off: "
        "the AMX path segfaults, and on AVX2 and AVX-512 the plain kernels read prompts "
        "faster (see README).",
    )
    n_threads: int = Field(
        default_factory=lambda: max(1, len(os.sched_getaffinity(0))),
        ge=1,
        description="CPU threads for llama.cpp and torch (defaults to the cores available).",
    )
    n_ctx: int = Field(4096, ge=512, description="Context window of the answer model.")
    max_tokens: int = Field(320, ge=1, description="Most tokens an answer may have.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    contrast_alpha: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="Context-aware decoding of the answer: each token's log-probability with "
        "the evidence, raised by this weight times how much likelier the evidence made it "
        "than the same request without evidence (0 = plain greedy decoding). Local engine "
        "only; see README 'The reader'.",
    )

    # --- scale-out: a vector database and a remote model server -----------------------------
    vector_store: Literal["faiss", "milvus"] = Field(
        "faiss",
        description="Where the dense vectors are searched: 'faiss' in this process (the "
        "default, saved with the index), or 'milvus' (Milvus Lite in a file, or a Milvus "
        "server or cluster; see `milvus_uri`). BM25 and the chunk table stay local either way.",
    )
    milvus_uri: str = Field(
        "index/milvus.db",
        description="Milvus to use with vector_store=milvus: a file path runs Milvus Lite "
        "embedded; http://host:19530 talks to a Milvus server or cluster.",
    )
    milvus_collection: str = Field("rag_chunks", description="Milvus collection name.")
    milvus_token: str = Field(
        "", description="Milvus credentials ('user:password' or an API key), if it needs any."
    )
    llm_url: str = Field(
        "",
        description="Base URL of an OpenAI-compatible model server (vLLM, llama.cpp's "
        "llama-server, llama-cpp-python's server), e.g. http://127.0.0.1:8080/v1. When set, "
        "answers come from it instead of the local GGUF model.",
    )
    llm_model: str = Field(
        "", description="Model name sent to the model server (empty: the first it lists)."
    )
    llm_api_key: str = Field("", description="Bearer key for the model server, if it needs one.")
    llm_connect_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait to connect to the model server."
    )
    llm_read_timeout_s: float = Field(
        60.0, gt=0, description="Longest silence from the model server while it answers."
    )
    llm_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries (with back-off) when the model server cannot be reached; errors "
        "after it accepted a request are never retried.",
    )
    llm_concurrency: int = Field(
        4,
        ge=1,
        le=256,
        description="Answers generated at once with a remote model server (it batches them); "
        "the local model always answers one at a time.",
    )

    # --- chunking and retrieval ----------------------------------------------------------------
    chunk_size: int = Field(900, ge=100, description="Target chunk length in characters.")
    chunk_overlap: int = Field(150, ge=0, description="Overlap between chunks in characters.")
    top_k: int = Field(5, ge=1, le=50, description="Passages returned by search and ask.")
    context_sentences: int = Field(
        6,
        ge=1,
        le=40,
        description="Most evidence sentences (from the top_k passages) put in the "
        "prompt; neighbours in one passage are given as one numbered item.",
    )
    context_chars: int = Field(
        1000,
        ge=200,
        description="Character budget of the evidence sentences in the prompt (prompt length "
        "sets the wait for the first token).",
    )
    evidence_layout: Literal["sentences", "top-passage"] = Field(
        "sentences",
        description="What the answer model reads: 'sentences' — the best sentences of the "
        "top_k passages (context_chars); 'top-passage' — the top passage whole, then the best "
        "sentences of the others (context_rest_chars), so the prompt starts with a prefix a "
        "stored passage state can stand for (passage_states_mb).",
    )
    prompt_examples: bool = Field(
        False,
        description="Give the answer model two worked examples (made-up passages, each "
        "question answered with the short phrase and its item number) before the evidence. "
        "Off: on the gold set's dev split drafts right fell 72 -> 66 of 112 "
        "(eval/reports/tried/worked-examples.md).",
    )
    english_translate: bool = Field(
        False,
        description="An English question is first written in Vietnamese by the answer model; "
        "that version is searched and matched against the evidence sentences, and the "
        "answer prompt shows both. One more short generation before retrieval (+1.6 s p50 "
        "for an English question on the AMD machine). Off: English drafts right rose 17 -> "
        "22 of 34, but with the confidence refitted the full run's test utility fell 0.423 "
        "-> 0.407 (eval/reports/tried/prompt-variants.md).",
    )
    evidence_order: Literal["best-first", "best-last", "best-match-first"] = Field(
        "best-first",
        description="Order of the evidence items: by passage rank, the best passage's "
        "sentences first, or last (next to the question), sentences of one passage in their "
        "reading order either way; or 'best-match-first': each item ranked by its best "
        "sentence's match to the question.",
    )
    context_rest_chars: int = Field(
        500,
        ge=0,
        description="With evidence_layout=top-passage: character budget of the sentences from "
        "the other passages.",
    )
    passage_states_mb: int = Field(
        0,
        ge=0,
        description="Disk budget for precomputed answer-model states after the instructions "
        "and each passage (about 10 MB per passage for the default model; 0 turns them off). "
        "Built by `rag ingest`, kept per model and prompt; least recently used go first.",
    )
    restore_general: bool = Field(
        True,
        description="Restore the diacritics of a question typed without them with general "
        "Vietnamese syllable frequencies (wordfreq) beside the corpus's own bigrams, so a "
        "syllable the articles never use gets its accents too. On the gold set's dev questions, "
        "folded and restored: syllables right 0.943 -> 0.959, whole questions 43 -> 47 of 97 "
        "(test: 0.943 -> 0.956, 38 -> 43 of 93) - eval/probes/restorer_accuracy.py. Off: the "
        "corpus's counts alone.",
    )
    hybrid: bool = Field(True, description="Fuse BM25 with dense search (reciprocal rank).")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    confidence_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Abstain when the reader's calibrated confidence is below this; empty uses "
        "the threshold chosen on the gold set's dev split (rag/calibration.json).",
    )
    min_score: float = Field(
        0.0,
        description="Abstain without calling the model when the best dense similarity is "
        "below this (0 disables).",
    )

    # --- HTTP -------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, description="Port the server listens on.")
    max_question_chars: int = Field(2000, ge=1, description="Longest question accepted.")
    max_upload_bytes: int = Field(2_000_000, ge=1, description="Largest accepted upload.")
    max_waiting: int = Field(
        8, ge=0, description="Generations that may wait for the model; beyond, HTTP 503."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (none by default)."
    )
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer keys; when set, writes require one."
    )
    allow_open_writes: bool = Field(
        False,
        description="Allow uploads and deletes without a key when no `api_keys` are set (a "
        "single-user laptop). Off by default: with no keys, writes are refused with 403.",
    )
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Longest an answer may take, waiting for the model included; beyond it the "
        "generation is stopped and the request gets HTTP 504 (a streamed one ends with an "
        "`error` event).",
    )
    require_key_for_reads: bool = Field(
        False,
        description="Also require a Bearer key from `api_keys` for reads (/v1/ask, /v1/search, "
        "/v1/chat/completions, GET /v1/documents); with no keys set, reads are then refused.",
    )

    @property
    def states_path(self) -> Path:
        return self.index_dir / "states"

    @property
    def onnx_cache_path(self) -> Path:
        """Exported and quantised embedder graphs, one folder per model."""
        return self.models_dir / ".onnx"

    @property
    def trash_path(self) -> Path:
        return self.trash_dir or self.data_dir.parent / "trash"

    @property
    def manifest_path(self) -> Path:
        return self.models_dir / "manifest.json"


@lru_cache
def get_settings() -> Settings:
    return Settings()
