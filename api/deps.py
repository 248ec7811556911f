"""Shared dependencies: the RAG service, the generation gate and API-key checks."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from rag.service import RAG
from rag.settings import Settings


class GenerationGate:
    """One generation at a time on the CPU, a bounded queue in front, 503 beyond it."""

    def __init__(self, max_waiting: int) -> None:
        self._sem = asyncio.Semaphore(1)
        self.max_waiting = max_waiting
        self.waiting = 0

    async def acquire(self) -> None:
        if self.waiting >= self.max_waiting and self._sem.locked():
            raise HTTPException(
                503, "the answer engine is busy; retry shortly", headers={"Retry-After": "5"}
            )
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._sem.release()


def get_rag(request: Request) -> RAG:
    rag: RAG = request.app.state.rag
    return rag


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_gate(request: Request) -> GenerationGate:
    gate: GenerationGate = request.app.state.gate
    return gate


RagDep = Annotated[RAG, Depends(get_rag)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GateDep = Annotated[GenerationGate, Depends(get_gate)]


def _key_ok(request: Request, keys: list[str]) -> bool:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    # Compare against every key, in constant time, so timing tells nothing.
    return any(secrets.compare_digest(token.encode(), k.encode()) for k in keys)


def require_write_key(request: Request, settings: SettingsDep) -> None:
    if settings.api_keys and not _key_ok(request, settings.api_keys):
        raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})


WriteAuth = Depends(require_write_key)
