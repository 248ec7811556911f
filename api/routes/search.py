"""Passage search: retrieval only, never waits behind generations."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import RagDep, ReadAuth
from api.schemas import SearchResponse

router = APIRouter(tags=["search"])


@router.get(
    "/v1/search",
    response_model=SearchResponse,
    dependencies=[ReadAuth],
    responses={401: {"description": "A key is required for reads"}},
)
async def search(
    rag: RagDep,
    q: Annotated[
        str, Query(description="Query text (1–2,000 characters).", examples=["Chỉ thị 15"])
    ],
    k: Annotated[int, Query(ge=1, le=50, description="Number of passages.")] = 5,
) -> SearchResponse:
    """Ranked passages for a query, in the same shape as `/v1/ask` citations (`n` is the rank).

    Hybrid retrieval: dense vectors (FAISS) and BM25 over diacritic-folded syllables, fused by
    reciprocal rank. No answer model is involved, so this is fast and does not queue.
    """
    t0 = time.perf_counter()
    passages = await run_in_threadpool(rag.search, q, k)
    return SearchResponse(
        query=q, passages=passages, timings_ms={"total": (time.perf_counter() - t0) * 1000}
    )
