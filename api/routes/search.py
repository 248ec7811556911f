"""Passage search: retrieval only, never waits behind generations."""

from __future__ import annotations

import time
from datetime import date
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import RagDep, ReadAuth
from api.errors import error_responses
from api.schemas import SearchResponse

router = APIRouter(tags=["search"])


@router.get(
    "/v1/search",
    response_model=SearchResponse,
    dependencies=[ReadAuth],
    responses=error_responses(
        401, 422, notes={422: "An empty or too long query, a bad `k`, or an unknown source"}
    ),
)
async def search(
    rag: RagDep,
    q: Annotated[
        str, Query(description="Query text (1–2,000 characters).", examples=["Chỉ thị 15"])
    ],
    k: Annotated[int, Query(ge=1, le=50, description="Number of passages.")] = 5,
    sources: Annotated[
        list[str] | None,
        Query(
            description="Only these articles (file names; repeat the parameter for several). "
            "An unknown name is a 422."
        ),
    ] = None,
    date_from: Annotated[
        date | None, Query(description="Only articles dated on or after this day (ISO).")
    ] = None,
    date_to: Annotated[
        date | None,
        Query(
            description="Only articles dated on or before this day (ISO); articles without a "
            "known date are left out of a date-filtered search."
        ),
    ] = None,
) -> SearchResponse:
    """Ranked passages for a query, in the same shape as `/v1/ask` citations (`n` is the rank).

    Hybrid retrieval: dense vectors (FAISS) and BM25 over diacritic-folded syllables, fused by
    reciprocal rank. No answer model is involved, so this is fast and does not queue. Filters
    (`sources`, `date_from`, `date_to`) apply before ranking.
    """
    t0 = time.perf_counter()
    passages = await run_in_threadpool(
        partial(rag.search, q, k, sources=sources, date_from=date_from, date_to=date_to)
    )
    return SearchResponse(
        query=q, passages=passages, timings_ms={"total": (time.perf_counter() - t0) * 1000}
    )
