"""Tests for rag.ingest.formats: HTML pages, PDFs and DOCX files made from the bundled
articles are extracted whole with their metadata, every kind of bad file is refused saying
what to do, and the extracted text is kept with the index (restarts, delete, restore)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.ingest.clean import clean_article
from rag.ingest.formats import extract_article, page_of, text_source
from rag.ingest.loader import UnreadableFile
from rag.service import RAG
from rag.settings import Settings
from tests.documents import (
    AUTHOR,
    NAMES,
    Score,
    article,
    bad_files,
    binary_blob,
    encrypted_pdf,
    make_docx,
    make_pdf,
    measure,
    news_page,
    pages_holding,
    visible_text,
)

PDF_ARTICLE = "003_1f44b7b7ded05db5.txt"
PAGE_BREAK = "Hơn 170 thỏa thuận"


# --- HTML: trafilatura against the project's own furniture cleaner -----------------------------
@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, Score]]:
    """Each bundled article as a news page, extracted three ways."""
    out = {}
    for name in NAMES:
        a = article(name)
        page = news_page(a)
        extracted = extract_article("page.html", page.encode()).text
        out[name] = {
            "trafilatura": measure(extracted, a),
            # what is indexed: trafilatura's text, then the cleaner as for every article
            "trafilatura+cleaner": measure(clean_article(extracted).text, a),
            # the cleaner alone, on the page's visible text as a plain scraper saves it
            "cleaner": measure(clean_article(visible_text(page)).text, a),
        }
    return out


def test_trafilatura_keeps_the_article_and_leaks_no_menu_or_footer(
    scores: dict[str, dict[str, Score]],
) -> None:
    for name, by in scores.items():
        for way in ("trafilatura", "trafilatura+cleaner"):
            s = by[way]
            assert s.recall >= 0.95, (name, way, s.recovered, s.sentences)
            assert not s.leaked.get("nav") and not s.leaked.get("footer"), (name, way, s.leaked)
    recovered = sum(by["trafilatura+cleaner"].recovered for by in scores.values())
    total = sum(by["trafilatura+cleaner"].sentences for by in scores.values())
    assert recovered / total >= 0.97


def test_the_measure_sees_a_leak_and_a_loss() -> None:
    a = article(NAMES[3])
    everything = measure(visible_text(news_page(a)), a)
    assert everything.recall == 1.0
    assert everything.leaked["nav"] and everything.leaked["footer"] and everything.leaked["related"]
    half = measure("\n".join(a.body[: len(a.body) // 2]), a)
    assert half.recall < 0.7 and not half.leaked


def test_html_keeps_the_title_date_and_author_of_the_page() -> None:
    a = article(PDF_ARTICLE)
    got = extract_article("bai.html", news_page(a).encode())
    assert got.format == "html" and got.converted and text_source("bai.html") == "extracted"
    assert (got.title, got.date, got.author) == (a.title, a.date, AUTHOR)
    assert got.text.startswith(a.title + "\n\n")
    assert a.body[1] in got.text.split("\n\n")


def test_html_in_a_declared_legacy_charset_reads_the_same() -> None:
    a = article(PDF_ARTICLE)
    page = news_page(a)
    legacy = page.replace('<meta charset="utf-8">', '<meta charset="windows-1258">')
    got = extract_article("cu.htm", legacy.encode("cp1258", errors="xmlcharrefreplace"))
    assert got.text == extract_article("moi.html", page.encode()).text


def test_a_page_without_an_article_is_refused() -> None:
    page = "<html><body><nav><a href='/'>Trang chủ</a><a href='/x'>Thời sự</a></nav></body></html>"
    with pytest.raises(UnreadableFile, match="no article text found"):
        extract_article("menu.html", page.encode())


# --- PDF, DOCX --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_pdf_text_is_the_articles_paragraphs_line_for_line(name: str) -> None:
    a = article(name)
    got = extract_article("bai.pdf", make_pdf(a).data)
    # wrapped lines joined, the heading apart, paragraphs across page breaks joined too
    assert got.text.replace("\n\n", "\n").split("\n") == [a.title, *a.body]


def test_pdf_text_keeps_paragraphs_whole_and_knows_their_pages() -> None:
    a = article(PDF_ARTICLE)
    pdf = make_pdf(a, break_before=PAGE_BREAK)
    got = extract_article("bai.pdf", pdf.data)
    assert got.format == "pdf" and got.title == a.title and got.author == AUTHOR
    assert len(got.pages) == max(pdf.pages.values()) >= 2
    for para, page in pdf.pages.items():
        at = got.text.find(para)
        assert at >= 0, para  # wrapped lines joined again, Vietnamese glyphs read back
        assert page_of(got.pages, at) == page, para
    assert page_of(got.pages, got.text.find(PAGE_BREAK)) == 2
    assert got.text.split("\n")[0] == a.title  # a heading line is not run into the text


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_a_pdf_locked_only_against_editing_is_read(algorithm: str) -> None:
    a = article(PDF_ARTICLE)
    plain = make_pdf(a).data
    got = extract_article("khoa.pdf", encrypted_pdf(plain, password="", algorithm=algorithm))
    assert got.text == extract_article("mo.pdf", plain).text
    with pytest.raises(UnreadableFile, match="password-protected"):
        extract_article("khoa.pdf", encrypted_pdf(plain, algorithm=algorithm))


def test_docx_text_title_and_author() -> None:
    a = article(NAMES[1])
    got = extract_article("bai.docx", make_docx(a))
    assert got.format == "docx" and got.pages == ()
    assert got.text.split("\n\n") == [a.title, *a.body]
    assert (got.title, got.author) == (a.title, AUTHOR)


def _docx_without_its_body() -> bytes:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(make_docx(article(NAMES[1])))) as src,
        zipfile.ZipFile(buf, "w") as dst,
    ):
        for item in src.infolist():
            if item.filename != "word/document.xml":
                dst.writestr(item, src.read(item))
    return buf.getvalue()


def _bad(kind: str) -> tuple[str, bytes]:
    pdf = make_pdf(article(PDF_ARTICLE)).data
    return {
        **bad_files(PDF_ARTICLE),
        "garbled-pdf": ("garbled.pdf", pdf[:400] + binary_blob(3000) + pdf[-200:]),
        "not-pdf": ("fake.pdf", "Chỉ là văn bản.".encode()),
        "docx-no-body": ("hollow.docx", _docx_without_its_body()),
        "ole-docx": ("locked.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + binary_blob(2000)),
        "latin1-html": (
            "latin.html",
            "<p>Hà Nội</p>".encode("latin-1", errors="replace") + b"\xff",
        ),
        "empty-pdf": ("empty.pdf", b""),
    }[kind]


BAD = {
    "scanned": "no text layer: it looks scanned; OCR it first",
    "encrypted": "encrypted (password-protected); save an unencrypted copy",
    "truncated-pdf": "truncated",
    "garbled-pdf": "neither text nor images: it may be corrupt",
    "not-pdf": "not a PDF",
    "truncated-docx": "not a complete DOCX",
    "docx-no-body": "corrupt or unsupported DOCX",
    "ole-docx": "encrypted (password-protected) Office file",
    "binary-html": "looks binary",
    "latin1-html": "not valid utf-8",
    "empty-pdf": "empty",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_are_refused_saying_what_happened(kind: str) -> None:
    name, data = _bad(kind)
    with pytest.raises(UnreadableFile, match=re.escape(BAD[kind])) as err:
        extract_article(name, data)
    assert str(err.value).startswith(f"{name}: ")


# --- kept with the index ----------------------------------------------------------------------
def _upload_all(rag: RAG) -> tuple[dict[str, str], bytes]:
    a = article(PDF_ARTICLE)
    files = {
        "bai.html": news_page(a).encode(),
        "bai.pdf": make_pdf(a, break_before=PAGE_BREAK).data,
        "bai.docx": make_docx(a),
    }
    for name, data in files.items():
        assert rag.add_document(name, data).added == [name]
    return {n: extract_article(n, data).text for n, data in files.items()}, files["bai.pdf"]


def test_extracted_texts_survive_a_restart_and_follow_delete_and_restore(
    rag: RAG, settings: Settings
) -> None:
    texts, pdf = _upload_all(rag)
    gen = settings.index_dir / (settings.index_dir / "CURRENT").read_text().strip()
    assert len(list((gen / "extracted").glob("*.txt"))) == 3
    again = RAG(settings, HashingEmbedder(), FakeGenerator())  # a restart
    for name, text in texts.items():
        assert again.document_text(name) == text
        record = again.index.files[name]
        assert (
            record.format == name.rsplit(".", 1)[1] and record.title == article(PDF_ARTICLE).title
        )
    hits = again.search("Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?", 10)
    converted = [c for c in hits if c.text_source == "extracted"]
    assert {c.source for c in converted} >= {"bai.pdf"}
    for c in converted:
        assert texts[c.source][c.start : c.end] == c.text
        assert (c.page is not None) == (c.source == "bai.pdf")
        if c.page is not None:
            assert c.page in pages_holding(pdf, c.text[:20])
    assert all(
        c.page is None and c.text_source == "file" for c in hits if c.source.endswith(".txt")
    )

    again.delete_document("bai.pdf")
    with pytest.raises(KeyError):
        again.document_text("bai.pdf")
    again.restore_document("bai.pdf")
    assert again.document_text("bai.pdf") == texts["bai.pdf"]
    assert (
        RAG(settings, HashingEmbedder(), FakeGenerator()).document_text("bai.pdf")
        == texts["bai.pdf"]
    )


def test_a_bad_file_in_the_folder_is_skipped_and_nothing_else_is_lost(
    rag: RAG, settings: Settings, tmp_path: Path
) -> None:
    before = {n: r.sha256 for n, r in rag.index.files.items()}
    chunks = len(rag.index.chunks)
    name, data = _bad("scanned")
    (settings.data_dir / name).write_bytes(data)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "cut.docx").write_bytes(_bad("truncated-docx")[1])
    (outside / "ok.docx").write_bytes(make_docx(article(NAMES[1])))
    report = rag.ingest([outside])
    assert "scanned" in report.skipped[name] and "not a complete DOCX" in report.skipped["cut.docx"]
    assert not (settings.data_dir / "cut.docx").exists()  # a bad file is not copied in
    assert report.added == ["ok.docx"]
    assert {n: r.sha256 for n, r in rag.index.files.items() if n != "ok.docx"} == before
    assert len(rag.index.chunks) > chunks
