"""The pieces each section is made of."""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.bench.stats import _ms, _round, dig
from rag.embedding import Vectors
from rag.evaluation.metrics import percentile
from rag.generation import ChatMessage
from rag.types import Chunk


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


def _against_fp32(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Variant ``name`` beside fp32: its speed, speed-up and hybrid hit@1/@5 against fp32's
    (None if either was not measured)."""
    base, r = results.get("fp32"), results.get(name)
    if not base or not r or not base.get("measured") or not r.get("measured"):
        return None
    rate, base_rate = dig(r, ("passages_per_s", "median")), dig(base, ("passages_per_s", "median"))
    if rate is None or not base_rate:
        return None
    return {"variant": name, "passages_per_s": rate, "speedup": _round(rate / base_rate),
            "file_hit@5": dig(r, ("quality", "hybrid", "file_hit@5")),
            "file_hit@1": dig(r, ("quality", "hybrid", "file_hit@1")),
            "fp32_file_hit@5": dig(base, ("quality", "hybrid", "file_hit@5")),
            "fp32_file_hit@1": dig(base, ("quality", "hybrid", "file_hit@1"))}  # fmt: skip


def configured_speedup(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """How the variant the service runs (``name``) compares with fp32."""
    return _against_fp32(results, name)


def choose_variant(results: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest variant whose hybrid file hit@5 is at most 0.01 below fp32's."""
    best: dict[str, Any] | None = None
    for name in results:
        c = _against_fp32(results, name)
        if c is None or c["file_hit@5"] is None or c["fp32_file_hit@5"] is None:
            continue
        ok = c["file_hit@5"] >= c["fp32_file_hit@5"] - 0.01 - 1e-9
        if ok and (best is None or c["passages_per_s"] > best["passages_per_s"]):
            best = c
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
