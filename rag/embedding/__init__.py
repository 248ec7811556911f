"""Embedding engines: the sentence-transformers model and a deterministic fake for tests."""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rag.text import fold, words

Vectors = npt.NDArray[np.float32]


class Embedder(ABC):
    """Turns passages and queries into L2-normalised float32 vectors."""

    #: Identifies the model; an index built with another identity is refused.
    identity: str
    dim: int

    @abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> Vectors: ...

    @abstractmethod
    def _embed_query(self, text: str) -> Vectors: ...

    def embed_query(self, text: str) -> Vectors:
        """Embed one query; repeated queries (chat retries, evaluation reruns) hit a small cache."""
        cache: OrderedDict[str, Vectors] = self.__dict__.setdefault("_qcache", OrderedDict())
        lock: threading.Lock = self.__dict__.setdefault("_qcache_lock", threading.Lock())
        with lock:  # requests embed from several threads; the LRU bookkeeping is not atomic
            hit = cache.get(text)
            if hit is not None:
                cache.move_to_end(text)
                return hit
        vec = self._embed_query(text)
        with lock:
            cache[text] = vec
            if len(cache) > 512:
                cache.popitem(last=False)
        return vec


class HashingEmbedder(Embedder):
    """Deterministic bag-of-syllables embedder (diacritic-folded, hashed into ``dim`` buckets).

    A real engine choice for tests and for machines without the model: retrieval by shared
    syllables is crude but honest, and its vectors never change between runs.
    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.identity = f"hashing-syllables/dim={dim}"

    def _vector(self, text: str) -> Vectors:
        v = np.zeros(self.dim, dtype=np.float32)
        toks = [fold(t) for t in words(text)]
        for tok in toks + [a + "_" + b for a, b in pairwise(toks)]:
            bucket = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=4).digest(), "big")
            v[bucket % self.dim] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def _embed_query(self, text: str) -> Vectors:
        return self._vector(text)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on the CPU, using the model's own query/document prompts."""

    def __init__(
        self,
        model: str | Path,
        *,
        n_threads: int,
        batch_size: int = 16,
        max_seq_length: int = 512,
    ) -> None:
        # Never reach a model hub: a name must already be in the local cache.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(n_threads)
        self._model = SentenceTransformer(str(model), device="cpu")
        self._model.max_seq_length = min(max_seq_length, self._model.max_seq_length or 10**9)
        self._batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not safe to call from two threads
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"{model}: cannot tell the embedding dimension")
        self.dim = int(dim)
        self.identity = f"{Path(str(model)).name}/dim={self.dim}"
        prompts = getattr(self._model, "prompts", {}) or {}
        self._has_prompts = "query" in prompts and "document" in prompts

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._has_prompts:
                out = self._model.encode_document(
                    list(texts), batch_size=self._batch_size, normalize_embeddings=True,
                    convert_to_numpy=True,
                )  # fmt: skip
            else:
                out = self._model.encode(
                    list(texts), batch_size=self._batch_size, normalize_embeddings=True,
                    convert_to_numpy=True,
                )  # fmt: skip
        return np.asarray(out, dtype=np.float32)

    def _embed_query(self, text: str) -> Vectors:
        with self._lock:
            if self._has_prompts:
                out = self._model.encode_query(
                    [text], normalize_embeddings=True, convert_to_numpy=True
                )
            else:
                out = self._model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
        vec: Vectors = np.asarray(out, dtype=np.float32)[0]
        return vec
