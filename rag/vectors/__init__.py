"""Where dense search runs: FAISS inside the index generation (default) or an external store."""

from __future__ import annotations

from rag.index import IndexError_
from rag.settings import Settings
from rag.vectors.base import VectorStore


def open_store(settings: Settings, dim: int, identity: str) -> VectorStore | None:
    """The external vector store the settings ask for, or None for the in-generation FAISS.

    pymilvus is imported only here, only with ``vector_store="milvus"``.
    """
    if settings.vector_store == "faiss":
        return None
    try:
        from rag.vectors.milvus import MilvusStore
    except ImportError as exc:
        raise IndexError_(
            f"vector_store=milvus needs pymilvus and milvus-lite ({exc}): install them with "
            "`pip install -e '.[milvus]'`"
        ) from exc
    return MilvusStore(
        settings.milvus_uri, settings.milvus_collection, dim=dim, identity=identity,
        token=settings.milvus_token,
    )  # fmt: skip


__all__ = ["VectorStore", "open_store"]
