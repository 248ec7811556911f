"""Offline question answering over Vietnamese articles: ``from rag import RAG``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.service import RAG, IngestReport, StreamEvent
    from rag.settings import Settings
    from rag.types import Answer, Citation

__all__ = ["RAG", "Answer", "Citation", "IngestReport", "Settings", "StreamEvent"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `rag models fetch` does not pay for torch and FAISS.
    if name in ("RAG", "IngestReport", "StreamEvent"):
        from rag import service

        return getattr(service, name)
    if name == "Settings":
        from rag.settings import Settings

        return Settings
    if name in ("Answer", "Citation"):
        from rag import types

        return getattr(types, name)
    raise AttributeError(name)
