"""The FastAPI application: engines load once in `lifespan`; routes stay thin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.deps import GenerationGate, write_mode
from api.errors import error_responses, install_error_handlers
from api.metrics import install_metrics
from api.routes import ask, documents, health, openai_compat, search
from rag.service import RAG
from rag.settings import Settings

log = logging.getLogger("rag.api")
STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None, rag: RAG | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = getattr(app.state, "rag", None) is None
        if owned:
            app.state.rag = await run_in_threadpool(RAG.from_settings, settings)
        # Load the answer model now, not on the first question.
        await run_in_threadpool(lambda: app.state.rag.generator)
        # A remote model server batches concurrent answers; the local model runs one at a time.
        slots = settings.llm_concurrency if settings.llm_url else 1
        app.state.gate = GenerationGate(settings.max_waiting, slots=slots)
        log.warning("%s", write_mode(settings))
        yield
        if owned:
            await run_in_threadpool(app.state.rag.close)

    app = FastAPI(
        title="Vietnamese articles QA",
        version="1.0",
        summary="Offline question answering over Vietnamese articles, with cited passages.",
        lifespan=lifespan,
        responses=error_responses(500),
    )
    app.state.settings = settings
    app.state.rag = rag
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip

    install_error_handlers(app)
    install_metrics(app)

    for module in (health, ask, search, documents, openai_compat):
        app.include_router(module.router)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app
