"""Dense search in Milvus Lite (a real embedded Milvus in tmp): same answers as FAISS, no stale
chunks, a failed ingest keeps the previous version, another model's collection is refused."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import HashingEmbedder, Vectors
from rag.generation import FakeGenerator
from rag.index import IndexError_, IndexStore
from rag.service import RAG
from rag.settings import Settings
from rag.vectors.milvus import MilvusStore

pytestmark = pytest.mark.milvus

ROOT = Path(__file__).resolve().parents[2]
REBUILD = "rag ingest --rebuild"
QUERIES = [
    "thỏa thuận hợp tác đã được ký kết năm 2024",
    "chi thi 15 ban hanh ngay nao",
    "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?",
    "quan hệ ngoại giao giữa hai nước",
    "tăng trưởng kinh tế và đầu tư",
]
CHANGED, REMOVED = "001_8edc742d7bef5736.txt", "004_f840cf0540fc0e3d.txt"


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the passages it is asked to embed."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__(dim)
        self.embedded = 0

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.embedded += len(texts)
        return super().embed_documents(texts)


@pytest.fixture
def milvus(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "vector_store": "milvus",
            "milvus_uri": str(tmp_path / "milvus.db"),
            "index_dir": tmp_path / "index-milvus",
        }
    )


@pytest.fixture
def services() -> Iterator[list[RAG]]:
    """RAG services to close at teardown, so no Milvus Lite server outlives its test."""
    opened: list[RAG] = []
    yield opened
    for rag in opened:
        rag.close()
    lite = [t.name for t in threading.enumerate() if t.name.startswith("milvus_lite")]
    assert not lite, f"Milvus Lite threads still running: {lite}"


def service(opened: list[RAG], settings: Settings, embedder: HashingEmbedder | None = None) -> RAG:
    rag = RAG(settings, embedder or HashingEmbedder(), FakeGenerator())
    opened.append(rag)
    return rag


def crash(self: IndexStore, index: object) -> Path:
    """IndexStore.save failing after the new vectors went into Milvus (stage comes first)."""
    raise OSError("disk full")


def store_of(rag: RAG) -> MilvusStore:
    assert isinstance(rag.vectors, MilvusStore)
    return rag.vectors


def hits(rag: RAG, corpus: Path) -> list[list[tuple[str, int, int]]]:
    """The top 5 of each query, checking every citation slices its file exactly."""
    out = []
    for q in QUERIES:
        found = rag.search(q, 5)
        for h in found:
            assert (corpus / h.source).read_text(encoding="utf-8")[h.start : h.end] == h.text
        out.append([(h.source, h.start, h.end) for h in found])
    return out


def in_step(rag: RAG) -> None:
    """Milvus holds exactly the live chunks' vectors."""
    live = rag.index.rows_by_hash()
    assert store_of(rag).count() == len(live)
    assert store_of(rag).keys() == set(live)


def test_milvus_finds_what_faiss_finds(
    settings: Settings, milvus: Settings, corpus: Path, services: list[RAG]
) -> None:
    faiss_rag = service(services, settings)
    faiss_rag.ingest()
    milvus_rag = service(services, milvus)
    milvus_rag.ingest()
    assert milvus_rag.vectors is not None and faiss_rag.vectors is None
    assert hits(milvus_rag, corpus) == hits(faiss_rag, corpus)
    for q in QUERIES:  # dense alone: the same rows in the same order, the same scores
        qv = milvus_rag.embedder.embed_query(q)
        want = faiss_rag.index.dense(qv, 30)
        got = milvus_rag.index.dense(qv, 30, milvus_rag.vectors)
        assert [r for r, _ in got] == [r for r, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    in_step(milvus_rag)
    health = milvus_rag.health()["vector_store"]
    assert health == {
        "engine": "milvus-lite", "uri": milvus.milvus_uri, "collection": "rag_chunks",
        "state": "ok", "vectors": len(milvus_rag.index.rows_by_hash()),
    }  # fmt: skip
    assert faiss_rag.health()["vector_store"] == {"engine": "faiss"}


def test_deleted_and_replaced_articles_leave_nothing_behind(
    milvus: Settings, corpus: Path, services: list[RAG]
) -> None:
    rag = service(services, milvus)
    rag.ingest()
    gone = {c.hash for c in rag.index.chunks if c.source in (CHANGED, REMOVED)}
    removed_text = next(c.text for c in rag.index.chunks if c.source == REMOVED)

    path = corpus / CHANGED
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("hợp tác", "cộng tác").replace("2024", "2025"), "utf-8")
    rag.delete_document(REMOVED)

    live = rag.index.rows_by_hash()
    assert {c.source for c in rag.index.chunks} == {
        "000_0a6a60240146a7b2.txt", CHANGED, "002_f0839f41b8944c8b.txt", "003_1f44b7b7ded05db5.txt",
    }  # fmt: skip
    stale = gone - live.keys()
    assert stale  # the replaced article's old chunks and all of the deleted one's
    in_step(rag)
    assert not stale & store_of(rag).keys()
    # Searching for the deleted text finds neither its vector nor its passage.
    qv = rag.embedder.embed_query(removed_text)
    assert not {k for k, _ in store_of(rag).search(qv, 50)} & stale
    assert all(h.source != REMOVED for h in rag.search(removed_text, 10))
    for found in hits(rag, corpus):
        assert all(source != REMOVED for source, _, _ in found)


def test_a_failed_ingest_keeps_the_previous_version_searchable(
    milvus: Settings, corpus: Path, services: list[RAG], monkeypatch: pytest.MonkeyPatch
) -> None:
    rag = service(services, milvus)
    rag.ingest()
    before, index = hits(rag, corpus), rag.index
    path = corpus / CHANGED
    path.write_text(path.read_text(encoding="utf-8") + "\n\nĐoạn mới về hợp tác năm 2024.\n")

    monkeypatch.setattr(IndexStore, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        rag.ingest()
    # The new vectors went in (the ingest failed after them), yet nothing else changed.
    assert store_of(rag).count() > len(index.rows_by_hash())
    assert rag.index is index
    assert hits(rag, corpus) == before
    orphan = next(iter(store_of(rag).keys() - index.rows_by_hash().keys()))
    assert orphan not in {c.hash for c in rag.index.chunks}

    # A restart drops the orphans; the next ingest then succeeds in step.
    monkeypatch.undo()
    rag.close()
    again = service(services, milvus)
    in_step(again)
    assert hits(again, corpus) == before
    report = again.ingest()
    assert report.updated == [CHANGED]
    in_step(again)
    assert any("Đoạn mới về hợp tác" in c.text for c in again.index.chunks)


def test_the_same_service_cleans_up_after_a_failed_ingest(
    milvus: Settings, corpus: Path, services: list[RAG], monkeypatch: pytest.MonkeyPatch
) -> None:
    rag = service(services, milvus)
    rag.ingest()
    (corpus / "extra.txt").write_text("Bài mới\n\nMột đoạn văn về hợp tác khu vực.\n", "utf-8")
    with monkeypatch.context() as m:
        m.setattr(IndexStore, "save", crash)
        with pytest.raises(OSError, match="disk full"):
            rag.ingest()
    (corpus / "extra.txt").unlink()
    rag.delete_document(REMOVED)  # the next successful ingest removes the failed one's vectors
    in_step(rag)


def test_a_collection_of_another_model_is_refused_until_rebuilt(
    settings: Settings, milvus: Settings, tmp_path: Path, services: list[RAG]
) -> None:
    first = service(services, milvus)  # hashing-syllables/dim=256
    first.ingest()
    first.close()

    other = milvus.model_copy(update={"index_dir": tmp_path / "index-128"})
    rag = service(services, other, HashingEmbedder(dim=128))
    assert rag.health()["vector_store"]["state"] == "refused"  # type: ignore[index]
    with pytest.raises(IndexError_, match=REBUILD) as err:
        rag.ingest()
    assert "hashing-syllables/dim=256" in str(err.value)
    assert not IndexStore(other.index_dir).exists()

    report = rag.ingest(rebuild=True)
    assert report.chunks > 20
    in_step(rag)
    assert rag.search(QUERIES[0], 3)
    rag.close()

    # The first service's own index is fine, but the collection is now the other model's.
    with pytest.raises(IndexError_, match=REBUILD):
        RAG(milvus, HashingEmbedder(), FakeGenerator())


def test_a_restart_searches_without_embedding_again(
    milvus: Settings,
    corpus: Path,
    tmp_path: Path,
    services: list[RAG],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rag = service(services, milvus)
    rag.ingest()
    before = hits(rag, corpus)
    rag.close()

    embedder = CountingEmbedder()
    with monkeypatch.context() as m:  # in step already: not even a listing of the keys
        m.setattr(MilvusStore, "keys", lambda self: pytest.fail("listed the keys"))
        again = service(services, milvus, embedder)
    assert hits(again, corpus) == before
    in_step(again)
    assert again.ingest().embedded == 0
    assert embedder.embedded == 0
    again.close()

    # An empty Milvus gets the live vectors from the index's vectors.npy, not the embedder.
    empty = milvus.model_copy(update={"milvus_uri": str(tmp_path / "other" / "milvus.db")})
    fresh = service(services, empty, embedder)
    in_step(fresh)
    assert hits(fresh, corpus) == before
    assert embedder.embedded == 0


def test_the_default_path_never_imports_pymilvus(settings: Settings) -> None:
    code = (
        "import sys\n"
        "from rag.embedding import HashingEmbedder\n"
        "from rag.service import RAG\n"
        "from rag.settings import Settings\n"
        f"rag = RAG(Settings(data_dir={str(settings.data_dir)!r}, "
        f"index_dir={str(settings.index_dir)!r}, embedder='fake', generator='fake'), "
        "HashingEmbedder())\n"
        "rag.ingest()\n"
        "assert rag.search('hợp tác', 3)\n"
        "assert 'pymilvus' not in sys.modules and 'milvus_lite' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_the_vector_benchmark_measures_both_stores(tmp_path: Path) -> None:
    from rag.bench.vectors import bench_vectors

    r = bench_vectors(600, 16, queries=10, workdir=tmp_path)
    assert r["faiss"]["recall_at_k"] == 1.0  # 600 vectors: the exact flat index
    lite = r["milvus_lite"]
    assert lite["vectors"] == 600
    assert 0.5 <= lite["recall_at_k"] <= 1.0
    for block in (r["faiss"], lite, lite["ef_128"]):
        assert 0 < block["search_ms_p50"] <= block["search_ms_p95"]
    assert not list(tmp_path.iterdir())  # the Milvus Lite folder is gone
