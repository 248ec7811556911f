"""Request and response bodies of the HTTP API (the stable contract for tools)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.types import Answer, Citation


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20000)


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


class AskResponse(Answer):
    pass


class SearchResponse(BaseModel):
    query: str
    passages: list[Citation]
    timings_ms: dict[str, float]


class Health(BaseModel):
    status: str
    files: int
    chunks: int
    embedding_model: str
    generator_model: str


class ErrorBody(BaseModel):
    detail: str
