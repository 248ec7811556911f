"""The interface of a vector store outside the index generation, and how generations use it.

The default dense search is the FAISS index saved inside each generation (``rag.index``); it
needs none of this. An external store (Milvus) outlives generations, so it holds the vectors of
chunks keyed by their content hash, and the rules below keep it in step with the chunk table:
new vectors go in before a generation goes live, vectors only the old one had come out after,
and a search keeps only the keys of the generation it runs against.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from rag.embedding import Vectors

if TYPE_CHECKING:
    from rag.index import CorpusIndex


class VectorStore(ABC):
    """Chunk vectors keyed by chunk hash, searched by inner product (vectors are normalised)."""

    #: The most results one search may ask for (Milvus's top-k limit).
    max_k = 16384

    def __init__(self) -> None:
        # Keys put in by `stage` that are not live yet; if that ingest fails they are orphans,
        # which the next `retire` removes (a search ignores them meanwhile).
        self._staged: set[str] = set()

    # --- the engine ----------------------------------------------------------------------------
    @abstractmethod
    def search(self, query: Vectors, k: int) -> list[tuple[str, float]]:
        """The ``k`` keys nearest ``query``, best first, with their inner products."""

    @abstractmethod
    def upsert(self, keys: Sequence[str], vectors: Vectors) -> None:
        """Add or replace the vector of each key (row i of ``vectors`` for ``keys[i]``)."""

    @abstractmethod
    def delete(self, keys: Collection[str]) -> None:
        """Remove these keys (those absent are ignored)."""

    @abstractmethod
    def keys(self) -> set[str]:
        """Every key the store holds."""

    @abstractmethod
    def count(self) -> int:
        """How many vectors the store holds."""

    @abstractmethod
    def mark(self) -> str:
        """The note last left by `set_mark` ("" if none)."""

    @abstractmethod
    def set_mark(self, mark: str) -> None:
        """Keep a short note with the vectors (the fingerprint of the keys they match)."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``rag.index.IndexError_`` if the store holds vectors of another embedding model
        or dimension (the message names `rag ingest --rebuild`)."""

    @abstractmethod
    def reset(self) -> None:
        """Drop every vector and start empty for the configured model (`rag ingest --rebuild`)."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """What the store is and holds, for health checks; never raises."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (and an embedded engine); a second call does nothing."""

    # --- keeping it in step with the index generations -----------------------------------------
    def attach(self, index: CorpusIndex) -> tuple[int, int]:
        """On start-up: make the store hold exactly the vectors of ``index`` (the live
        generation), re-adding any it lacks from the generation's own vectors (an empty or
        other Milvus, a crash before the last ingest finished) and dropping keys no generation
        uses. Nothing is embedded again. Returns (added, removed)."""
        self.check()
        rows = index.rows_by_hash()
        # Listing every key is slow on a big collection: skip it when the store says it was
        # last made to match exactly these keys and holds no more (orphans of a failed ingest).
        if self.mark() == fingerprint(rows) and self.count() == len(rows):
            return 0, 0
        have = self.keys()
        missing = [k for k in rows if k not in have]
        orphans = have - rows.keys()
        if missing:
            self.upsert(missing, _vectors_of(index, missing))
        if orphans:
            self.delete(orphans)
        self.set_mark(fingerprint(rows))
        return len(missing), len(orphans)

    def stage(self, before: CorpusIndex, after: CorpusIndex, *, rebuild: bool = False) -> None:
        """Before ``after`` goes live: put in the vectors it has and ``before`` has not. With
        ``rebuild`` the store is emptied first and gets all of them."""
        if rebuild:
            self.reset()
            new = list(after.rows_by_hash())
        else:
            self.check()
            old = before.rows_by_hash()
            new = [k for k in after.rows_by_hash() if k not in old]
        self._staged.update(new)
        if new:
            self.upsert(new, _vectors_of(after, new))

    def retire(self, before: CorpusIndex, after: CorpusIndex) -> None:
        """Once ``after`` is live: remove the vectors only ``before`` (or a failed ingest) had."""
        live = after.rows_by_hash()
        doomed = (before.rows_by_hash().keys() | self._staged) - live.keys()
        if doomed:
            self.delete(doomed)
        self._staged.clear()
        self.set_mark(fingerprint(live))


def fingerprint(keys: Collection[str]) -> str:
    """Names a set of keys: their number and a digest of them, sorted."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return f"{len(keys)}:{digest}"


def _vectors_of(index: CorpusIndex, keys: Sequence[str]) -> Vectors:
    rows = index.rows_by_hash()
    return np.ascontiguousarray(index.vectors[[rows[k][0] for k in keys]], dtype=np.float32)
