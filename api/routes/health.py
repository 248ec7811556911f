"""Liveness and what is loaded."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RagDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(rag: RagDep) -> Health:
    """Status, number of indexed files and chunks, and the names of the models in use."""
    return Health.model_validate(rag.health())
