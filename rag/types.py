"""The public value types of the library: what a chunk, a citation and an answer are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class Chunk:
    """A passage of one article, with where it came from in the ORIGINAL file.

    ``original[start:end]`` is exactly the passage as it appears in the file (for a converted
    file, HTML, PDF or DOCX: in the text extracted from it); ``text`` is the cleaned,
    NFC-normalised form that is embedded and shown to the answer model.
    """

    id: str
    source: str
    start: int
    end: int
    text: str
    hash: str
    title: str = ""
    date: str = ""


@dataclass
class Passage:
    """A chunk retrieved for a query, with its fused score and the raw evidence of its rank."""

    chunk: Chunk
    score: float
    original_text: str
    ranks: dict[str, int] = field(default_factory=dict)
    #: PDFs: where each page starts in the extracted text (the citation's page comes from it).
    pages: list[int] = field(default_factory=list)


class Span(BaseModel):
    start: int = Field(description="Start offset in the source text (see `text_source`).")
    end: int = Field(description="End offset (exclusive) in the source text.")


class Citation(BaseModel):
    """One cited passage; ``source`` is the article's file name, ``start``/``end`` are offsets
    such that ``file[start:end] == text`` for a .txt/.md file, and ``extracted[start:end] ==
    text`` for a converted one (``GET /v1/documents/{source}/text``)."""

    n: int = Field(description="The [n] marker used in the answer text.")
    source: str = Field(description="File name of the article, as in the corpus folder.")
    start: int = Field(description="Start offset (characters) of the passage in the file.")
    end: int = Field(description="End offset (characters, exclusive) of the passage in the file.")
    text: str = Field(
        description="The passage exactly as in the source text: file[start:end], or "
        "extracted[start:end] for a converted file."
    )
    score: float = Field(description="Retrieval score (higher is better).")
    title: str = Field(default="", description="Title of the article, when the text gives one.")
    highlights: list[Span] = Field(
        default_factory=list,
        description="Offsets in the source text of the sentence(s) that support the claim.",
    )
    text_source: Literal["file", "extracted"] = Field(
        "file",
        description="What the offsets point into: `file`, the file itself (.txt, .md), or "
        "`extracted`, the text extracted from a converted file (HTML, PDF, DOCX), served by "
        "`GET /v1/documents/{source}/text`.",
    )
    page: int | None = Field(
        None, description="PDFs: the page (from 1) where the passage starts; else null."
    )


class Timings(BaseModel):
    retrieval: float = Field(0.0, description="Milliseconds spent retrieving passages.")
    translation: float = Field(
        0.0,
        description="Milliseconds the answer model spent writing an English question in "
        "Vietnamese before retrieval (setting english_translate; 0 for other questions).",
    )
    first_token: float | None = Field(
        None, description="Milliseconds from the request to the first answer token."
    )
    total: float = Field(0.0, description="Milliseconds for the whole request.")
    generated_tokens: int = Field(0, description="Number of tokens the answer model produced.")
    prompt_tokens: int = Field(0, description="Number of tokens in the prompt.")
    state_tokens: int = Field(
        0,
        description="Prompt tokens read back from a precomputed passage state instead of "
        "being read by the model (0: none; see setting passage_states_mb).",
    )
    decode: float = Field(
        0.0, description="Milliseconds the answer model spent generating, after reading the prompt."
    )


class Answer(BaseModel):
    """The answer to one question, with the passages that support it."""

    question: str = Field(description="The question as asked.")
    answer: str = Field(description="The answer text, with [n] markers pointing at citations.")
    abstained: bool = Field(
        description="True when the articles do not hold the answer and the service said so."
    )
    citations: list[Citation] = Field(
        default_factory=list, description="Passages cited by the answer's [n] markers."
    )
    passages: list[Citation] = Field(
        default_factory=list,
        description="All passages retrieved for the question, best first (also when abstaining).",
    )
    confidence: float | None = Field(
        None,
        description="The reader's calibrated probability that the proposed answer is right "
        "(below the threshold it abstains); null when no answer was proposed.",
    )
    timings_ms: Timings = Field(default_factory=Timings)
    #: The reader's trace (draft answer, signals) for the evaluation harness; not serialised.
    reader: dict[str, Any] | None = Field(None, exclude=True)
