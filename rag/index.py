"""The persisted index: chunk table, vectors, FAISS and BM25 search, written atomically.

Layout under ``index/``: ``CURRENT`` names the live generation folder ``gen-<n>/``, which holds
``manifest.json`` (embedding model identity and dimension, files and their hashes, checksums),
``chunks.jsonl``, ``vectors.npy``, ``vectors.faiss`` and ``extracted/<sha256>.txt``: the text
indexed from each converted file (HTML, PDF, DOCX; named by the file's SHA-256), which its
chunks' offsets point into. A new generation is written aside and
``CURRENT`` is replaced with ``os.replace``, so a crash mid-write leaves the previous index live.
With ``vector_store="milvus"`` dense search goes to ``rag.vectors`` instead; a generation is
written the same way in both modes (so switching back to FAISS needs no rebuild).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bm25s
import faiss
import numpy as np

from rag.embedding import Vectors
from rag.text import fold, words
from rag.types import Chunk

if TYPE_CHECKING:
    from rag.vectors import VectorStore

FORMAT_VERSION = 1
REBUILD_HINT = "rebuild it with `rag ingest --rebuild` (or `make index`)"
#: Below this many vectors exact search is both fast and exact; above it, HNSW (as txtai does).
FLAT_LIMIT = 5000


class IndexError_(RuntimeError):
    """The index is missing, corrupt or built with another embedding model."""


class EmbedderMismatch(IndexError_):
    """The index was built with another embedder: its vectors cannot be searched with this
    one (the articles are intact; ``rag ingest`` embeds them again)."""


@dataclass
class FileRecord:
    name: str
    sha256: str
    size: int
    chunks: int
    indexed_at: float
    title: str = ""
    date: str = ""
    #: "text" (.txt/.md: offsets point into the file), or "html", "pdf", "docx" (offsets
    #: point into the extracted text kept in the generation).
    format: str = "text"
    author: str = ""
    #: PDFs: the offset in the extracted text where each page starts.
    pages: list[int] = field(default_factory=list)


@dataclass
class CorpusIndex:
    """Chunks, their vectors and both search structures, in memory."""

    embedder: str
    dim: int
    chunks: list[Chunk] = field(default_factory=list)
    vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    files: dict[str, FileRecord] = field(default_factory=dict)
    _faiss: Any = None
    _bm25: Any = None
    vocabulary: set[str] = field(default_factory=set)
    _rows: dict[str, list[int]] | None = None
    _by_source: dict[str, np.ndarray] | None = None
    #: The extracted text of each converted file, by file name (plain-text files: none).
    texts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vectors.size == 0:
            self.vectors = np.zeros((0, self.dim), dtype=np.float32)

    # --- search structures -------------------------------------------------------------------
    def build(self, faiss_index: Any = None) -> None:
        self._faiss = faiss_index if faiss_index is not None else build_faiss(self.vectors)
        self._bm25 = None
        self.vocabulary = {fold(w) for c in self.chunks for w in words(c.title + " " + c.text)}
        if self.chunks:
            self._bm25 = bm25s.BM25()
            self._bm25.index([lexical_tokens(c.title + "\n" + c.text) for c in self.chunks],
                             show_progress=False)  # fmt: skip

    def rows_by_hash(self) -> dict[str, list[int]]:
        """The rows of each chunk hash (chunks with the same text share one vector)."""
        if self._rows is None:
            rows: dict[str, list[int]] = {}
            for i, c in enumerate(self.chunks):
                rows.setdefault(c.hash, []).append(i)
            self._rows = rows
        return self._rows

    def rows_by_source(self) -> dict[str, np.ndarray]:
        """The rows of each article, ascending (built once per generation)."""
        if self._by_source is None:
            rows: dict[str, list[int]] = {}
            for i, c in enumerate(self.chunks):
                rows.setdefault(c.source, []).append(i)
            self._by_source = {n: np.asarray(r, dtype=np.int64) for n, r in rows.items()}
        return self._by_source

    def dense(
        self,
        query: Vectors,
        k: int,
        store: VectorStore | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` rows nearest ``query``: by the generation's FAISS index, or by ``store``.

        With ``allowed`` (rows, ascending) only those rows are ranked, exactly, over the
        generation's vectors (in memory with either store): a filter applies before ranking.
        """
        if not self.chunks:
            return []
        if allowed is not None:
            if not len(allowed):
                return []
            q = np.asarray(query, dtype=np.float32).ravel()
            scores = self.vectors[allowed] @ q
            k = min(k, len(allowed))
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return [(int(allowed[i]), float(scores[i])) for i in top]
        if store is not None:
            return self._dense_in(store, query, min(k, len(self.chunks)))
        if self._faiss is None:
            self.build()
        scores, ids = self._faiss.search(
            query.reshape(1, -1).astype(np.float32), min(k, len(self.chunks))
        )
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _dense_in(self, store: VectorStore, query: Vectors, k: int) -> list[tuple[int, float]]:
        # The store may also hold keys of another generation (an ingest under way, or one that
        # failed): only this chunk table's count, so ask for more until k of them come back.
        rows = self.rows_by_hash()
        fetch = 2 * k
        while True:
            hits = store.search(query, fetch)
            out = [(row, score) for key, score in hits for row in rows.get(key, ())]
            if len(out) >= k or len(hits) < fetch or fetch >= store.max_k:
                return out[:k]
            fetch = min(4 * fetch, store.max_k)

    def lexical(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best BM25 rows for ``query`` (only ``allowed`` rows, if given)."""
        if not self.chunks:
            return []
        if self._bm25 is None:
            self.build()
        toks = lexical_tokens(query)
        if not toks:
            return []
        scores = np.asarray(self._bm25.get_scores(toks))
        if allowed is not None:
            masked = np.zeros_like(scores)
            masked[allowed] = scores[allowed]
            scores = masked
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]


def lexical_tokens(text: str) -> list[str]:
    """Diacritic-folded syllables plus syllable bigrams, so accent-less queries still match and
    multi-syllable Vietnamese words ("ngoại giao") count as units."""
    toks = [fold(w) for w in words(text)]
    return toks + [f"{a}_{b}" for a, b in pairwise(toks)]


def build_faiss(vectors: Vectors) -> Any:
    n, dim = vectors.shape
    index: Any
    if n <= FLAT_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class IndexStore:
    """Loads and saves ``CorpusIndex`` generations under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    def exists(self) -> bool:
        return self.current_file.is_file()

    def load(self, expected_embedder: str | None = None) -> CorpusIndex:
        if not self.exists():
            raise IndexError_(
                f"no index in {self.root}/: build it with `rag ingest` (or `make index`)"
            )
        gen = self.root / "CURRENT"
        try:
            gen = self.root / self.current_file.read_text(encoding="utf-8").strip()
            manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("manifest.json is not an object")
            if manifest.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {manifest.get('format')} is not {FORMAT_VERSION}")
            chunk_bytes = (gen / "chunks.jsonl").read_bytes()
            vec_bytes = (gen / "vectors.npy").read_bytes()
            if _sha(chunk_bytes) != manifest["checksums"]["chunks.jsonl"]:
                raise ValueError("chunks.jsonl does not match its checksum")
            if _sha(vec_bytes) != manifest["checksums"]["vectors.npy"]:
                raise ValueError("vectors.npy does not match its checksum")
            chunks = [
                Chunk(**json.loads(line)) for line in chunk_bytes.decode().splitlines() if line
            ]
            vectors = np.load(gen / "vectors.npy", allow_pickle=False)
            if vectors.shape != (len(chunks), manifest["dim"]):
                raise ValueError(
                    f"vectors have shape {vectors.shape}, "
                    f"expected ({len(chunks)}, {manifest['dim']})"
                )
            fidx = faiss.read_index(str(gen / "vectors.faiss"))
            if fidx.ntotal != len(chunks) or fidx.d != manifest["dim"]:
                raise ValueError("vectors.faiss does not hold one vector per chunk")
            embedder = str(manifest["embedder"])
            files = {n: FileRecord(**r) for n, r in manifest["files"].items()}
            texts = {}
            for n, r in files.items():
                if r.format != "text":
                    rel = f"extracted/{r.sha256}.txt"
                    raw = (gen / rel).read_bytes()
                    if _sha(raw) != manifest["checksums"][rel]:
                        raise ValueError(f"{rel} does not match its checksum")
                    texts[n] = raw.decode("utf-8")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise IndexError_(
                f"the index in {gen} is corrupt or unreadable ({exc}); {REBUILD_HINT}"
            ) from exc
        if expected_embedder is not None and embedder != expected_embedder:
            raise EmbedderMismatch(
                f"the index in {self.root}/ was built with embedding model "
                f"{embedder!r}, "
                f"but the service is configured with {expected_embedder!r}; {REBUILD_HINT}"
            )
        index = CorpusIndex(embedder, manifest["dim"], chunks, vectors, files, texts=texts)
        index.build(fidx)
        return index

    def save(self, index: CorpusIndex) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        gen_name = f"gen-{time.time_ns()}"
        tmp = self.root / f".tmp-{gen_name}"
        tmp.mkdir()
        chunk_bytes = "".join(
            json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in index.chunks
        ).encode()
        (tmp / "chunks.jsonl").write_bytes(chunk_bytes)
        np.save(tmp / "vectors.npy", index.vectors.astype(np.float32), allow_pickle=False)
        if index._faiss is None:
            index.build()
        faiss.write_index(index._faiss, str(tmp / "vectors.faiss"))
        checksums: dict[str, str] = {}
        if index.texts:
            (tmp / "extracted").mkdir()
        for n, text in sorted(index.texts.items()):
            rel = f"extracted/{index.files[n].sha256}.txt"
            raw = text.encode("utf-8")
            (tmp / rel).write_bytes(raw)
            checksums[rel] = _sha(raw)
        manifest = {
            "format": FORMAT_VERSION,
            "embedder": index.embedder,
            "dim": index.dim,
            "created_at": time.time(),
            "files": {n: asdict(r) for n, r in sorted(index.files.items())},
            "checksums": {
                "chunks.jsonl": _sha(chunk_bytes),
                "vectors.npy": _sha((tmp / "vectors.npy").read_bytes()),
                **checksums,
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        os.replace(tmp, self.root / gen_name)
        pointer = self.root / ".CURRENT.tmp"
        pointer.write_text(gen_name + "\n")
        _fsync(pointer)
        os.replace(pointer, self.current_file)
        self._collect_garbage(keep=gen_name)
        return self.root / gen_name

    def _collect_garbage(self, keep: str) -> None:
        for p in self.root.iterdir():
            if (
                p.is_dir()
                and p.name != keep
                and (p.name.startswith("gen-") or p.name.startswith(".tmp-"))
            ):
                shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())
