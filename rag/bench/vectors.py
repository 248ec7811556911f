"""Dense search at scale, FAISS against Milvus Lite: build time, latency and recall@k.

Both get the same synthetic corpus (unit vectors in clusters, as the ``search`` section uses)
and the same queries; recall is measured against exact inner-product search (IndexFlatIP).
FAISS is built exactly as ``rag.index.build_faiss`` builds a generation's index (HNSW above
``FLAT_LIMIT`` vectors); Milvus Lite gets the collection ``MilvusStore`` makes (AUTOINDEX, IP)
and is searched through ``MilvusStore.search``, as the service searches it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rag.bench.pieces import recall_at, synthetic_queries, synthetic_vectors
from rag.bench.stats import _ms, _round
from rag.embedding import Vectors
from rag.evaluation.metrics import percentile

#: Rows per Milvus upsert request in the benchmark (the service upserts in batches of 1000).
INSERT_BATCH = 5000


def bench_vectors(
    n: int = 100_000,
    dim: int = 768,
    *,
    queries: int = 200,
    k: int = 10,
    seed: int = 6,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Build both stores over ``n`` synthetic vectors and search them with ``queries`` queries,
    one at a time. Times are wall-clock seconds (build) and milliseconds (search)."""
    import faiss

    from rag.index import FLAT_LIMIT, build_faiss

    rng = np.random.default_rng(seed)
    vectors, centers = synthetic_vectors(n, dim, rng)
    qvecs = synthetic_queries(vectors, queries, rng)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, want = exact.search(qvecs, k)

    log(f"vectors: FAISS over {n} vectors")
    t0 = time.perf_counter()
    fidx = build_faiss(vectors)
    build_s = time.perf_counter() - t0
    ms, got = _timed(lambda q: [int(i) for i in fidx.search(q.reshape(1, -1), k)[1][0]], qvecs)
    hnsw = hasattr(fidx, "hnsw")
    result: dict[str, Any] = {
        "n": n, "dim": dim, "queries": queries, "k": k, "clusters": int(centers.shape[0]),
        "faiss": {
            "index": type(fidx).__name__ + ("" if n > FLAT_LIMIT else " (n <= FLAT_LIMIT)"),
            "params": {"M": int(fidx.hnsw.nb_neighbors(1)),
                       "efConstruction": int(fidx.hnsw.efConstruction),
                       "efSearch": int(fidx.hnsw.efSearch)} if hnsw else None,
            "build_s": _round(build_s),
            **_latency(ms),
            "recall_at_k": _round(recall_at(got, want)),
        },
    }  # fmt: skip
    result["milvus_lite"] = _bench_milvus(vectors, qvecs, want, k, workdir, log)
    result["definition"] = (
        "Synthetic unit vectors around random cluster centres (about 500 per cluster), queries "
        "near random data points; recall_at_k = share of the exact top-k (FAISS IndexFlatIP) "
        "each store returns, averaged over the queries. Search latency: one query per call, "
        "k results, in this process (Milvus Lite: through gRPC on loopback to its in-process "
        "server). Milvus insert_s: upserts of the vectors in batches; flush_s: writing them "
        "to segments; index_build_s: the wait for Milvus Lite's background worker to build the "
        "segment indexes (searches before that scan the segments); first_search_s: the first "
        "search after it."
    )
    return result


def _bench_milvus(
    vectors: Vectors,
    qvecs: Vectors,
    want: Any,
    k: int,
    workdir: Path | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from milvus_lite.index.factory import is_faiss_available

    from rag.vectors.milvus import VECTOR_FIELD, MilvusStore

    n, dim = vectors.shape
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = MilvusStore(
            str(Path(tmp) / "bench.db"), "bench", dim=dim, identity=f"synthetic/dim={dim}"
        )
        try:
            keys = [f"{i:016d}" for i in range(n)]
            batches: list[float] = []
            t0 = time.perf_counter()
            for s in range(0, n, INSERT_BATCH):
                tb = time.perf_counter()
                store.upsert(keys[s : s + INSERT_BATCH], vectors[s : s + INSERT_BATCH])
                batches.append(time.perf_counter() - tb)
                log(f"vectors: Milvus Lite {min(n, s + INSERT_BATCH)}/{n} upserted")
            insert_s = time.perf_counter() - t0
            client = store._client
            t0 = time.perf_counter()
            client.flush(store.collection)
            flush_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            drained = _wait_for_lite_indexes(store)
            index_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            store.search(qvecs[0], k)
            first_s = time.perf_counter() - t0
            count = store.count()
            ms, got = _timed(lambda q: [int(key) for key, _ in store.search(q, k)], qvecs)
            index = client.describe_index(store.collection, VECTOR_FIELD)
            out: dict[str, Any] = {
                "index": f"{index.get('index_type')} (metric {index.get('metric_type')}); "
                + (
                    "Milvus Lite builds it as FAISS IndexHNSWFlat per segment, M=16, "
                    "efConstruction=200, search ef=64 (its defaults)"
                    if is_faiss_available()
                    else "brute force (faiss-cpu missing)"
                ),
                "vectors": count,
                "insert_s": _round(insert_s),
                "insert_batch": INSERT_BATCH,
                "insert_batch_s": {"p50": _round(percentile(batches, 50)),
                                   "max": _round(max(batches, default=0.0))},
                "flush_s": _round(flush_s),
                "index_build_s": _round(index_s) if drained else None,
                "first_search_s": _round(first_s),
                **_latency(ms),
                "recall_at_k": _round(recall_at(got, want)),
            }  # fmt: skip
            # The same search with FAISS's efSearch, to compare like with like.
            ef = {"metric_type": "IP", "params": {"ef": 128}}

            def search_ef(q: Vectors) -> list[int]:
                hits = client.search(
                    store.collection, data=[q.tolist()], limit=k, anns_field=VECTOR_FIELD,
                    output_fields=["id"], search_params=ef,
                )  # fmt: skip
                return [int(h["id"]) for h in hits[0]]

            ms, got = _timed(search_ef, qvecs)
            out["ef_128"] = _latency(ms) | {"recall_at_k": _round(recall_at(got, want))}
            return out
        finally:
            store.close()


def _wait_for_lite_indexes(store: Any) -> bool:
    """Wait until Milvus Lite's background worker has indexed every flushed segment.

    Milvus Lite builds segment indexes in a background thread after a flush, and its
    describe_index reports them finished before they are; only its own (private) drain point
    tells. Returns False when that is not available (another Milvus Lite version).
    """
    try:
        from milvus_lite.server_manager import server_manager_instance

        _, db, _ = server_manager_instance._servers[store._lite_path]
        db.get_collection(store.collection)._wait_for_bg(timeout=1800)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    return True


def _timed(
    search: Callable[[Vectors], list[int]], qvecs: Vectors
) -> tuple[list[float], list[list[int]]]:
    """Latency of each query (ms) and the ids it returned."""
    ms: list[float] = []
    got: list[list[int]] = []
    for q in qvecs:
        t0 = time.perf_counter()
        ids = search(q)
        ms.append(_ms(t0))
        got.append(ids)
    return ms, got


def _latency(ms: list[float]) -> dict[str, Any]:
    return {
        "search_ms_p50": _round(percentile(ms, 50)),
        "search_ms_p95": _round(percentile(ms, 95)),
    }
