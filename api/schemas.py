"""Request and response bodies of the HTTP API (the stable contract for tools)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.types import Answer, Citation


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20000)


class Filters(BaseModel):
    """Narrow the search before ranking (a filtered search still returns `top_k` passages
    when the allowed articles hold that many)."""

    sources: list[str] | None = Field(
        None,
        max_length=500,
        description="Only these articles (file names as GET /v1/documents lists them); an "
        "unknown name is a 422.",
        examples=[["003_1f44b7b7ded05db5.txt"]],
    )
    date_from: date | None = Field(
        None, description="Only articles dated on or after this day (ISO date)."
    )
    date_to: date | None = Field(
        None,
        description="Only articles dated on or before this day (ISO date). Articles without "
        "a known date are left out of a date-filtered search.",
    )


class AskRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"question": "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"}]
        }
    )

    question: str = Field(description="The question, in Vietnamese or English (1–2,000 chars).")
    top_k: int | None = Field(None, ge=1, le=50, description="Passages to retrieve.")
    stream: bool = Field(False, description="Stream Server-Sent Events instead of one JSON.")
    history: list[Turn] = Field(
        default_factory=list, max_length=20, description="Earlier turns, for follow-up questions."
    )
    max_tokens: int | None = Field(None, ge=1, le=2048, description="Longest answer, in tokens.")
    filters: Filters | None = Field(None, description="Search only some articles or dates.")


class AskResponse(Answer):
    pass


class SearchResponse(BaseModel):
    query: str
    passages: list[Citation]
    timings_ms: dict[str, float]


class EngineHealth(BaseModel):
    state: str = Field(
        description="ready, loading, restarting (after a crash, with back-off), failed (with "
        "the reason; retried), or not-loaded (loads on the first question)"
    )
    detail: str = ""
    restarts: int = Field(0, description="Times the model process was restarted.")
    pid: int | None = Field(None, description="The model worker's process id.")
    extra_buffers: bool | None = Field(
        None, description="Whether llama.cpp's extra buffer types (weight repacking) are on."
    )
    extra_buffers_reason: str | None = None


class Health(BaseModel):
    status: str = Field(
        description="ok while search and documents work (the answer engine "
        "may still be down: see answer_engine)"
    )
    files: int
    chunks: int
    embedding_model: str
    generator_model: str
    answer_engine: EngineHealth
    vector_store: dict[str, object] = Field(
        default_factory=dict,
        description="where dense search runs: engine faiss (in the index), milvus-lite or "
        "milvus (uri, collection, state ok|refused|unreachable, vectors)",
    )


class FieldError(BaseModel):
    """One part of the request that failed validation (pydantic's error, without the input)."""

    type: str = Field(description="The kind of error, e.g. `missing` or `string_too_long`.")
    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field.")
    msg: str = Field(description="What is wrong with it.")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx response, on every route."""

    detail: str = Field(description="What went wrong, in a sentence for people.")
    status: int = Field(description="The HTTP status code, repeated.")
    errors: list[FieldError] = Field(
        default_factory=list,
        description="Only when the request failed validation (422): each field that failed.",
    )
