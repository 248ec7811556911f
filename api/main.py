"""The FastAPI application: engines load once in `lifespan`; routes stay thin."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.deps import GenerationGate, write_mode
from api.routes import ask, documents, health, openai_compat, search
from rag.generation import EngineUnavailable
from rag.service import RAG, QuestionError
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
    )
    app.state.settings = settings
    app.state.rag = rag
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input, which JSON cannot always encode (a lone
        # surrogate, 1e999): a 422 would turn into a 500.
        errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
        body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(EngineUnavailable)
    async def engine_down(_: Request, exc: EngineUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)}
        )

    @app.exception_handler(QuestionError)
    async def bad_question(_: Request, exc: QuestionError) -> JSONResponse:
        return JSONResponse({"detail": f"invalid question: {exc}"}, status_code=422)

    for module in (health, ask, search, documents, openai_compat):
        app.include_router(module.router)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    return app
