"""Read article files safely: UTF-8 text here (converted formats in ``rag.ingest.formats``);
anything else is reported, never half-ingested."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md"}
#: Converted to text on ingest (rag.ingest.formats); citations point into the extracted text.
CONVERTED_SUFFIXES = {".html", ".htm", ".pdf", ".docx"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | CONVERTED_SUFFIXES
MAX_FILE_BYTES = 20 * 1024 * 1024


class UnreadableFile(ValueError):
    """A file that cannot be ingested; the message says why, in one sentence."""


@dataclass(frozen=True)
class ArticleFile:
    name: str
    text: str
    data: bytes


def decode_article(name: str, data: bytes) -> str:
    """Return the file's text exactly (offsets are into this string) or raise UnreadableFile."""
    if Path(name).suffix.lower() not in TEXT_SUFFIXES:
        raise UnreadableFile(f"{name}: not a plain-text file (.txt or .md)")
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableFile(f"{name}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    if b"\x00" in data:
        raise UnreadableFile(f"{name}: looks binary (contains NUL bytes), not a text article")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name}: not valid UTF-8 (byte {exc.start}); convert it, e.g. "
            f"`iconv -f CP1258 -t UTF-8 {name} > fixed.txt`"
        ) from None
    if not text.lstrip("\ufeff").strip():
        raise UnreadableFile(f"{name}: empty (no text to index)")
    # Kept exactly as decoded (a BOM included) so citation offsets index this very string.
    return text


def discover(paths: list[Path]) -> list[Path]:
    """Files to ingest under the given files/folders (sorted, hidden files skipped)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                f for f in sorted(p.rglob("*"))
                if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )  # fmt: skip
        elif p.is_file():
            found.append(p)
    return found
