"""Chunk vectors in Milvus: Milvus Lite embedded when the URI is a file, a server otherwise."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from pymilvus import DataType, MilvusClient

from rag.embedding import Vectors
from rag.index import REBUILD_HINT, IndexError_
from rag.vectors.base import VectorStore

#: Rows per upsert or delete request (a 768-dim batch is about 3 MB on the wire).
BATCH = 1000
#: Collection properties: which embedding model the vectors come from, and the fingerprint of
#: the live keys the collection was last made to match (so a restart need not list them).
EMBEDDER_KEY, DIM_KEY, MARK_KEY = "rag.embedder", "rag.dim", "rag.keys"
KEY_FIELD, VECTOR_FIELD = "id", "vector"

# Milvus Lite's servers are per file and per process; count the stores using each, so closing
# one store does not stop the server another store of this process still talks to.
_lite_users: Counter[str] = Counter()
_lite_lock = threading.Lock()
# Milvus Lite does not hand out the server timestamp the query iterator asks for; pymilvus then
# warns on every listing and uses the client's clock, which is right for a local server.
logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)


def is_lite(uri: str) -> bool:
    """A file path (not a URL) means Milvus Lite, run inside this process."""
    return "://" not in uri and not uri.startswith("unix:")


class MilvusStore(VectorStore):
    """One Milvus collection: VARCHAR primary key = chunk hash, FLOAT_VECTOR, metric IP.

    The collection records the embedding model's identity and dimension in its properties; a
    collection made with another model is refused until `rag ingest --rebuild` recreates it.
    Reads and writes use Strong consistency, so a search sees every vector upserted before it.
    """

    def __init__(
        self, uri: str, collection: str, *, dim: int, identity: str, token: str = ""
    ) -> None:
        super().__init__()
        self.uri, self.collection, self.dim, self.identity = uri, collection, dim, identity
        self.lite = is_lite(uri)
        self._lite_path = ""
        if self.lite:
            if not uri.endswith(".db"):
                raise IndexError_(
                    f"milvus_uri {uri!r} is neither a URL (http://host:19530) nor a Milvus "
                    "Lite file: a Lite file name must end in .db (set RAG_MILVUS_URI)"
                )
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            self._lite_path = os.path.abspath(uri)  # how Milvus Lite names its server
        try:
            self._client = MilvusClient(uri=uri, token=token, timeout=30.0)
        except Exception as exc:
            hint = (
                "a Milvus Lite file is used by one process at a time: stop the other one, or "
                "use a Milvus server"
                if self.lite
                else "check that the server is up and RAG_MILVUS_URI / RAG_MILVUS_TOKEN"
            )
            raise IndexError_(f"cannot open Milvus at {_public(uri)} ({exc}); {hint}") from exc
        self._open = True
        if self.lite:
            with _lite_lock:
                _lite_users[self._lite_path] += 1
        self._mismatch: str | None = None
        try:
            if self._client.has_collection(collection):
                self._mismatch = self._compare()
                if self._mismatch is None:
                    self._client.load_collection(collection)
            else:
                self._create()
        except BaseException:
            self.close()
            raise

    # --- the collection --------------------------------------------------------------------------
    def _create(self) -> None:
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(KEY_FIELD, DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        index = self._client.prepare_index_params()
        index.add_index(VECTOR_FIELD, index_type="AUTOINDEX", metric_type="IP")
        self._client.create_collection(
            self.collection, schema=schema, consistency_level="Strong",
            properties={EMBEDDER_KEY: self.identity, DIM_KEY: str(self.dim)},
        )  # fmt: skip
        # Not waiting for the (empty) index: the wait asks for a server timestamp, which Milvus
        # Lite does not implement (it logs a traceback, and pymilvus sleeps before moving on).
        self._client.create_index(self.collection, index, sync=False)
        self._client.load_collection(self.collection)

    def _compare(self) -> str | None:
        """Why the existing collection cannot be used with this model (None if it can)."""
        info = self._client.describe_collection(self.collection)
        props = info.get("properties") or {}
        fields = {f["name"]: f for f in info.get("fields", [])}
        vec = fields.get(VECTOR_FIELD, {})
        dim = (vec.get("params") or {}).get("dim")
        found = props.get(EMBEDDER_KEY)
        where = f"the Milvus collection {self.collection!r} at {_public(self.uri)}"
        if found is None or KEY_FIELD not in fields or dim is None:
            return f"{where} was not made by this service; {REBUILD_HINT}"
        if found != self.identity or int(dim) != self.dim:
            return (
                f"{where} holds vectors of embedding model {found!r} (dim {dim}), but the "
                f"service is configured with {self.identity!r} (dim {self.dim}); {REBUILD_HINT}"
            )
        return None

    def mark(self) -> str:
        props = self._client.describe_collection(self.collection).get("properties") or {}
        return str(props.get(MARK_KEY, ""))

    def set_mark(self, mark: str) -> None:
        self._client.alter_collection_properties(self.collection, properties={MARK_KEY: mark})

    def check(self) -> None:
        if self._mismatch is not None:
            raise IndexError_(self._mismatch)

    def reset(self) -> None:
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)
        self._create()
        self._mismatch = None

    # --- vectors -----------------------------------------------------------------------------
    def search(self, query: Vectors, k: int) -> list[tuple[str, float]]:
        self.check()
        hits = self._client.search(
            self.collection, data=[np.asarray(query, dtype=np.float32).ravel().tolist()],
            limit=min(k, self.max_k), anns_field=VECTOR_FIELD, output_fields=[KEY_FIELD],
            search_params={"metric_type": "IP"},
        )  # fmt: skip
        return [(str(h["id"]), float(h["distance"])) for h in hits[0]]

    def upsert(self, keys: Sequence[str], vectors: Vectors) -> None:
        for s in range(0, len(keys), BATCH):
            block = np.asarray(vectors[s : s + BATCH], dtype=np.float32).tolist()
            rows = [
                {KEY_FIELD: key, VECTOR_FIELD: vec}
                for key, vec in zip(keys[s : s + BATCH], block, strict=True)
            ]
            self._client.upsert(self.collection, rows)

    def delete(self, keys: Collection[str]) -> None:
        ordered = sorted(keys)
        for s in range(0, len(ordered), BATCH):
            self._client.delete(self.collection, ids=ordered[s : s + BATCH])

    def keys(self) -> set[str]:
        out: set[str] = set()
        it = self._client.query_iterator(
            self.collection, batch_size=BATCH * 4, output_fields=[KEY_FIELD]
        )
        try:
            while batch := it.next():
                out.update(str(row[KEY_FIELD]) for row in batch)
        finally:
            it.close()
        return out

    def count(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "engine": "milvus-lite" if self.lite else "milvus",
            "uri": _public(self.uri),
            "collection": self.collection,
        }
        if self._mismatch is not None:
            return out | {"state": "refused", "detail": self._mismatch}
        try:
            return out | {"state": "ok", "vectors": self.count()}
        except Exception as exc:  # health must answer even when Milvus does not
            return out | {"state": "unreachable", "detail": str(exc)}

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._client.close()
        if self.lite:
            with _lite_lock:
                _lite_users[self._lite_path] -= 1
                last = _lite_users[self._lite_path] <= 0
                if last:
                    del _lite_users[self._lite_path]
            if last:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self._lite_path)


def _public(uri: str) -> str:
    """The URI without any user:password in it (it goes into messages and health)."""
    parts = urlsplit(uri)
    if parts.username is None:
        return uri
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl()
