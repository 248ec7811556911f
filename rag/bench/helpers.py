"""Engines and corpus helpers the sections share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rag.embedding import Embedder
from rag.evaluation.runner import GoldItem
from rag.generation import ChatMessage, Completion, Generator
from rag.settings import Settings
from rag.types import Chunk


class RecordingGenerator(Generator):
    """Passes calls through to an engine and keeps the prompts it was given."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[ChatMessage]] = []

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        self.calls.append(list(messages))
        yield from self.inner.stream_chat(messages, max_tokens=max_tokens, temperature=temperature)

    # The reader's own calls pass through too (without them the base class would answer them
    # through stream_chat: no token probabilities, no scoring — not the path the service takes).
    def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        contrast: list[ChatMessage] | None = None,
        alpha: float = 0.0,
    ) -> Completion:
        self.calls.append(list(messages))
        return self.inner.complete(
            messages, max_tokens=max_tokens, temperature=temperature, contrast=contrast,
            alpha=alpha,
        )  # fmt: skip

    def score(self, messages: list[ChatMessage], candidates: list[str]) -> list[list[float]]:
        return self.inner.score(messages, candidates)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def _llm(generator: Generator) -> Any:
    """The llama-cpp-python ``Llama`` behind a generator (None for engines without one)."""
    inner = generator.inner if isinstance(generator, RecordingGenerator) else generator
    return getattr(inner, "_llm", None)


def _count_tokens(generator: Generator, messages: Sequence[ChatMessage]) -> int | None:
    inner = generator.inner if isinstance(generator, RecordingGenerator) else generator
    count = getattr(inner, "count_tokens", None)
    if count is None:
        return None
    return sum(int(count(m["content"])) for m in messages)


# --- corpus helpers ------------------------------------------------------------------------------
def corpus_chunks(settings: Settings) -> list[Chunk]:
    """The chunks ``rag ingest`` makes of the corpus folder, in the same order."""
    from rag.ingest.chunking import chunk_article
    from rag.ingest.formats import extract_article
    from rag.ingest.loader import UnreadableFile, discover

    chunks: list[Chunk] = []
    for path in discover([settings.data_dir]):
        try:
            article = extract_article(path.name, path.read_bytes())
        except UnreadableFile:
            continue
        _, cs = chunk_article(path.name, article.text, chunk_size=settings.chunk_size,
                              chunk_overlap=settings.chunk_overlap, title=article.title,
                              date=article.date)  # fmt: skip
        chunks.extend(cs)
    return chunks


def _rag(
    settings: Settings, embedder: Embedder, generator: Generator | None, index_dir: Path
) -> Any:
    from rag.index import IndexStore
    from rag.service import RAG

    return RAG(settings, embedder, generator, store=IndexStore(index_dir))


def _retrieval_quality(rag: Any, items: Sequence[GoldItem]) -> dict[str, Any]:
    from rag.evaluation.report import aggregate
    from rag.evaluation.runner import InProcessBackend, run

    records = run(InProcessBackend(rag), items, retrieval_only=True, progress=False)
    r = aggregate(records, with_answers=False)["retrieval"]
    keys = ("file_hit@1", "file_hit@5", "passage_hit@5", "mrr@10")
    return {k: r.get(k) for k in keys} | {"answerable": sum(i.answerable for i in items)}
