"""Turn an article file of any accepted format into the text that is indexed.

Plain text (.txt, .md) is indexed as it is, and citations point into the file itself. HTML
pages, PDFs and DOCX files are converted: the article's text is extracted once, stored with
the index generation, and citations point into that extracted text (``text_source ==
"extracted"``). Every failure is an ``UnreadableFile`` saying what happened and what to do.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from rag.ingest.loader import (
    MAX_FILE_BYTES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    UnreadableFile,
    decode_article,
)
from rag.text import nfc

log = logging.getLogger("rag")

Format = Literal["text", "html", "pdf", "docx"]
TextSource = Literal["file", "extracted"]

_FORMATS: dict[str, Format] = {
    ".txt": "text", ".md": "text", ".html": "html", ".htm": "html", ".pdf": "pdf",
    ".docx": "docx",
}  # fmt: skip
_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)
_ISO_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
# A PDF line shorter than this share of the longest line in its font size ends its paragraph
# (word wrap leaves less slack than that), as does one ending a sentence, a change of font size
# (a heading) or a wider gap to the next line than the usual line spacing.
_FULL_LINE = 0.6
_LINE_GAP = 1.25
_LINE_END = tuple(".!?…:;\"”)'»")
# An HTML page whose longest paragraph is shorter than this holds no article.
_MIN_PARAGRAPH = 60
_SCANNED = "no text layer: it looks scanned; OCR it first, e.g. `ocrmypdf -l vie {name} ocr.pdf`"


@dataclass(frozen=True)
class ArticleText:
    """The text of one article file as it is indexed, with what its format says about it."""

    text: str  # citation offsets point into this string
    format: Format
    title: str = ""
    date: str = ""  # dd/mm/yyyy, as the cleaner writes dates
    author: str = ""
    #: PDFs: ``pages[i]`` is the offset in ``text`` where page i + 1 starts.
    pages: tuple[int, ...] = ()

    @property
    def converted(self) -> bool:
        return self.format != "text"


def text_source(name: str) -> TextSource:
    """What a citation's offsets of this file point into: the file, or its extracted text."""
    return "file" if Path(name).suffix.lower() in TEXT_SUFFIXES else "extracted"


def page_of(pages: tuple[int, ...] | list[int], offset: int) -> int | None:
    """The 1-based page holding ``offset`` of the extracted text, or None without pages."""
    return bisect_right(pages, offset) if pages else None


def extract_article(name: str, data: bytes) -> ArticleText:
    """The text to index from a file's bytes, or UnreadableFile saying why there is none."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        accepted = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnreadableFile(f"{name}: not an accepted format (accepted: {accepted})")
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableFile(f"{name}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    fmt = _FORMATS[suffix]
    if fmt == "text":
        return ArticleText(decode_article(name, data), "text")
    if not data.strip():
        raise UnreadableFile(f"{name}: empty (no text to index)")
    convert = {"html": _html, "pdf": _pdf, "docx": _docx}[fmt]
    try:
        article = convert(name, data)
    except UnreadableFile:
        raise
    except Exception as exc:
        # The parsers meet untrusted bytes and fail in many ways (their own errors, but also
        # KeyError, ValueError, zlib.error, RecursionError...): each is this file's fault.
        what = {"html": "HTML page", "pdf": "PDF", "docx": "DOCX file"}[fmt]
        raise UnreadableFile(
            f"{name}: a corrupt or unsupported {what} ({type(exc).__name__}: {str(exc)[:200]}); "
            f"open it and save or export it again"
        ) from exc
    if not article.text.strip():
        raise UnreadableFile(f"{name}: no text found in the {fmt.upper()} file")
    return article


# --- HTML -------------------------------------------------------------------------------------
def _decode_html(name: str, data: bytes) -> str:
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            return data.decode(codec, errors="replace").lstrip("\ufeff")
    if b"\x00" in data:
        raise UnreadableFile(f"{name}: looks binary (contains NUL bytes), not an HTML page")
    declared = _CHARSET_RE.search(data[:4096])
    charset = declared.group(1).decode("ascii").lower() if declared else "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name}: not valid {charset} (byte {exc.start}), so not a readable HTML page; "
            f"save the page again from the browser (as 'Web page, HTML only')"
        ) from None


def _html(name: str, data: bytes) -> ArticleText:
    import trafilatura

    html = _decode_html(name, data)
    if "<" not in html:
        raise UnreadableFile(f"{name}: has no HTML markup; rename it to .txt if it is plain text")
    doc = trafilatura.bare_extraction(
        html,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        include_images=False,
        deduplicate=False,
        # Only dates the page states in its markup, not guesses from its links or copyright.
        date_extraction_params={"extensive_search": False, "original_date": True},
    )
    body = nfc(_text_of(doc)).strip()
    paragraphs = [p.strip() for p in body.split("\n") if p.strip()]
    # With no article in the page trafilatura falls back to whatever text there is: a page of
    # short lines only (a menu, a list of links) has no article.
    if max((len(p) for p in paragraphs), default=0) < _MIN_PARAGRAPH:
        raise UnreadableFile(
            f"{name}: no article text found in the page; save the article's own page, "
            f"or paste its text into a .txt file"
        )
    title = nfc(str(_field(doc, "title") or "")).strip()
    if title and (not paragraphs or paragraphs[0] != title):
        paragraphs.insert(0, title)
    return ArticleText(
        "\n\n".join(paragraphs),
        "html",
        title=title or paragraphs[0],
        date=_dmy(str(_field(doc, "date") or "")),
        author=nfc(str(_field(doc, "author") or "")).strip(),
    )


def _field(doc: Any, key: str) -> Any:
    if doc is None:
        return None
    return doc.get(key) if isinstance(doc, dict) else getattr(doc, key, None)


def _text_of(doc: Any) -> str:
    return str(_field(doc, "text") or "")


def _dmy(iso: str) -> str:
    m = _ISO_DATE_RE.match(iso)
    return f"{m.group(3)}/{m.group(2)}/{m.group(1)}" if m else ""


# --- PDF --------------------------------------------------------------------------------------
def _pdf(name: str, data: bytes) -> ArticleText:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    if not data.lstrip().startswith(b"%PDF-"):
        raise UnreadableFile(f"{name}: not a PDF (it does not start with %PDF-)")
    if b"%%EOF" not in data[-2048:]:
        raise UnreadableFile(
            f"{name}: the PDF is truncated (no end-of-file marker); download or export it again"
        )
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # readable with no password: only editing is locked
        except DependencyError as exc:
            raise UnreadableFile(f"{name}: encrypted with a cipher this install cannot read "
                                 f"({exc}); save an unencrypted copy") from None  # fmt: skip
        if not opened:
            raise UnreadableFile(
                f"{name}: the PDF is encrypted (password-protected); save an unencrypted "
                f"copy, e.g. `qpdf --decrypt --password=PASSWORD {name} plain.pdf`"
            )
    if not reader.pages:
        raise UnreadableFile(f"{name}: the PDF has no pages")
    parts: list[str] = []
    pages: list[int] = []
    blank: list[int] = []
    at = 0
    for no, page in enumerate(reader.pages, 1):
        text = nfc(_reflow(_page_lines(page)))
        if at and text:
            # A paragraph that runs on to the next page goes on with a space, so its sentence
            # is not cut in two; otherwise pages are set apart like paragraphs.
            sep = "\n\n" if parts[-1].endswith(_LINE_END) else " "
            parts.append(sep)
            at += len(sep)
        pages.append(at)
        if text:
            parts.append(text)
            at += len(text)
        else:
            blank.append(no)
    text = "".join(parts)
    if not text.strip():
        if any(_has_images(page) for page in reader.pages):
            raise UnreadableFile(f"{name}: {_SCANNED.format(name=name)}")
        raise UnreadableFile(
            f"{name}: the PDF has neither text nor images: it may be corrupt or blank; "
            f"export it again"
        )
    scanned = [no for no in blank if _has_images(reader.pages[no - 1])]
    if scanned:
        log.warning("%s: pages %s have no text layer (scanned?): not indexed", name, scanned)
    meta = reader.metadata
    return ArticleText(
        text,
        "pdf",
        title=_meta_title(meta.title if meta else None),
        author=nfc(str(meta.author or "")).strip() if meta else "",
        pages=tuple(pages),
    )


def _has_images(page: Any) -> bool:
    """Whether the page draws pictures (an image, or a form that may hold one): a page of
    pictures and no text is a scan; one with neither is blank or broken."""
    try:
        xobjects = page["/Resources"].get_object()["/XObject"].get_object()
        return any(x.get_object().get("/Subtype") in ("/Image", "/Form") for x in xobjects.values())
    except Exception:  # no resources, or unreadable ones
        return False


@dataclass
class _PdfLine:
    text: str
    size: float = 0.0  # font size in points (0: unknown)
    y: float | None = None  # baseline height on the page (None: unknown)


def _page_lines(page: Any) -> list[_PdfLine]:
    """The lines of a page as pypdf extracts them, with each line's font size and height
    (from pypdf's text visitor; without them when the visitor's fragments do not add up to
    the extracted text, and only the text rules of ``_reflow`` apply)."""
    frags: list[tuple[str, float, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        scale = abs(tm[3] * cm[3]) if tm and cm else 0.0
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5] if tm and cm else 0.0
        frags.append((text, float(size) * (scale or 1.0), y))

    text = page.extract_text(visitor_text=visit) or ""
    if "".join(f[0] for f in frags) != text:
        return [_PdfLine(" ".join(ln.split())) for ln in text.splitlines() if ln.strip()]
    lines: list[_PdfLine] = []
    parts: list[str] = []
    meta: tuple[float, float] | None = None
    for frag, size, y in frags:
        for i, piece in enumerate(frag.split("\n")):
            if i:
                if "".join(parts).strip():
                    lines.append(_PdfLine(" ".join("".join(parts).split()), *(meta or (0.0, 0.0))))
                parts, meta = [], None
            if piece.strip() and meta is None:
                meta = (size, y)
            parts.append(piece)
    if "".join(parts).strip():
        lines.append(_PdfLine(" ".join("".join(parts).split()), *(meta or (0.0, 0.0))))
    return lines


def _reflow(lines: list[_PdfLine]) -> str:
    """Join the lines of one PDF page that a paragraph was wrapped into: a line of nearly the
    full width, in the same font size and at the usual spacing, that does not end a sentence
    continues on the next line."""
    if not lines:
        return ""
    widest: dict[float, int] = {}
    gaps: dict[float, list[float]] = {}
    for ln in lines:
        widest[round(ln.size)] = max(widest.get(round(ln.size), 0), len(ln.text))
    for a, b in pairwise(lines):
        if a.y is not None and b.y is not None and round(a.size) == round(b.size) > 0:
            gaps.setdefault(round(a.size), []).append(a.y - b.y)
    usual = {k: sorted(g)[len(g) // 2] for k, g in gaps.items()}
    # Where paragraphs are set apart by space, a line ending in "." may still be mid-paragraph.
    spaced = {k for k, g in gaps.items() if any(x > _LINE_GAP * usual[k] for x in g)}
    out = [lines[0].text]
    for a, b in pairwise(lines):
        size = round(a.size)
        same_block = size == round(b.size) and (
            size not in usual
            or (a.y is not None and b.y is not None and 0 < a.y - b.y <= _LINE_GAP * usual[size])
        )
        ends = a.text.endswith(_LINE_END) and size not in spaced
        if same_block and len(a.text) >= _FULL_LINE * widest[size] and not ends:
            out[-1] += " " + b.text
        else:
            out.append(b.text)
    return "\n".join(out)


def _meta_title(title: object) -> str:
    text = nfc(str(title or "")).strip()
    # Word and LibreOffice often write the file name, not the article's title.
    if re.search(r"\.(docx?|odt|pdf)$|^microsoft word|^untitled", text, re.I):
        return ""
    return text


# --- DOCX -------------------------------------------------------------------------------------
def _docx(name: str, data: bytes) -> ArticleText:
    import docx
    from docx.table import Table

    if data.startswith(b"\xd0\xcf\x11\xe0"):  # an OLE2 compound file, not a zip
        raise UnreadableFile(
            f"{name}: an encrypted (password-protected) Office file or an old binary .doc; "
            f"open it in Word or LibreOffice and save an unprotected .docx"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        raise UnreadableFile(
            f"{name}: not a complete DOCX (not a readable zip archive: truncated or corrupt); "
            f"save it again from the word processor"
        ) from None
    if bad is not None:
        raise UnreadableFile(f"{name}: the DOCX is corrupt ({bad} fails its checksum); "
                             f"save it again from the word processor")  # fmt: skip
    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            for row in item.rows:
                cells = list(dict.fromkeys(c.text.strip() for c in row.cells if c.text.strip()))
                if cells:
                    blocks.append(" | ".join(cells))
        else:
            blocks.extend(ln.strip() for ln in item.text.split("\n") if ln.strip())
    props = document.core_properties
    return ArticleText(
        nfc("\n\n".join(" ".join(b.split()) for b in blocks)),
        "docx",
        title=_meta_title(props.title),
        author=nfc(props.author or "").strip(),
    )


__all__ = [
    "ArticleText",
    "Format",
    "TextSource",
    "extract_article",
    "page_of",
    "text_source",
]
