"""Split a cleaned article into passages that know their file and ORIGINAL offsets."""

from __future__ import annotations

import hashlib

from langchain_text_splitters import RecursiveCharacterTextSplitter

from rag.ingest.clean import CleanDocument, clean_article
from rag.types import Chunk

# Paragraphs first, then lines, then sentences (Vietnamese uses Latin punctuation), then words.
SEPARATORS = ["\n\n", "\n", ". ", "; ", ", ", " ", ""]


def make_splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=min(chunk_overlap, chunk_size // 2),
        separators=SEPARATORS,
        keep_separator="end",
        add_start_index=True,
        strip_whitespace=True,
    )


def chunk_article(
    source: str,
    original: str,
    *,
    chunk_size: int = 900,
    chunk_overlap: int = 150,
    title: str = "",
    date: str = "",
) -> tuple[CleanDocument, list[Chunk]]:
    """Clean ``original`` (the file's text, or the text extracted from it) and cut it into
    chunks named after ``source``. ``title``/``date`` (from a page's metadata) win over what
    the cleaner reads off the text."""
    doc = clean_article(original)
    title = title or doc.title
    date = date or doc.date
    if not doc.text.strip():
        return doc, []
    chunks: list[Chunk] = []
    for piece in make_splitter(chunk_size, chunk_overlap).create_documents([doc.text]):
        text = piece.page_content
        start = int(piece.metadata["start_index"])
        if start < 0 or doc.text[start : start + len(text)] != text:
            # The splitter locates pieces with str.find; fall back to our own search if it missed.
            start = doc.text.find(text)
            if start < 0:
                continue
        s, e = doc.to_original(start, start + len(text))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        chunks.append(
            Chunk(
                id=f"{source}:{s}-{e}",
                source=source,
                start=s,
                end=e,
                text=text,
                hash=digest,
                title=title,
                date=date,
            )
        )
    return doc, chunks
