"""Uploads of HTML pages, PDFs and DOCX files over HTTP: the answer cites the converted file,
its offsets point into the extracted text `GET /v1/documents/{name}/text` serves, and bad files
are refused with a clear 422 that changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from rag.service import RAG
from rag.settings import Settings
from tests.documents import (
    Article,
    article,
    bad_files,
    make_docx,
    make_pdf,
    news_page,
    pages_holding,
)


@dataclass(frozen=True)
class Case:
    article: str  # the bundled article it is made from (deleted first, so only it can answer)
    name: str
    make: Callable[[Article], bytes]
    mime: str
    question: str
    sentence: str  # in the sentence that answers


CASES = {
    "html": Case(
        "002_f0839f41b8944c8b.txt", "da-dang-hoa-thi-truong.html", lambda a: news_page(a).encode(),
        "text/html", "Những thị trường truyền thống nào được Thủ tướng nêu tên khi yêu cầu đa dạng hóa thị trường để bù đắp khó khăn?",
        "Mỹ, Trung Quốc, EU, Nhật Bản, Hàn Quốc, ASEAN",
    ),
    "pdf": Case(
        "003_1f44b7b7ded05db5.txt", "ngoai-giao-kinh-te-2024.pdf",
        lambda a: make_pdf(a, break_before="Hơn 170 thỏa thuận").data, "application/pdf",
        "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?", "170 thỏa thuận hợp tác",
    ),
    "docx": Case(
        "001_8edc742d7bef5736.txt", "hnng-30.docx", make_docx,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "Theo Thứ trưởng Bùi Thanh Sơn tại HNNG 30, Việt Nam đã thiết lập quan hệ đối tác chiến lược và đối tác toàn diện với bao nhiêu nước?",
        "27 nước",
    ),
}  # fmt: skip


@pytest.fixture
def client(settings: Settings, rag: RAG) -> Iterator[TestClient]:
    with TestClient(create_app(settings, rag=rag)) as c:
        yield c


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_a_converted_upload_is_cited_exactly_in_its_extracted_text(
    client: TestClient, fmt: str
) -> None:
    case = CASES[fmt]
    assert client.delete(f"/v1/documents/{case.article}").status_code == 200
    data = case.make(article(case.article))
    r = client.post("/v1/documents", files={"file": (case.name, data, case.mime)})
    assert r.status_code == 201, r.text
    assert r.json()["added"] == [case.name]
    listed = {d["name"]: d for d in client.get("/v1/documents").json()}
    assert listed[case.name]["format"] == fmt and listed[case.name]["text_source"] == "extracted"

    body = client.post("/v1/ask", json={"question": case.question}).json()
    assert body["abstained"] is False, body
    cite = body["citations"][0]
    assert cite["source"] == case.name and cite["text_source"] == "extracted"

    r = client.get(f"/v1/documents/{case.name}/text")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    text = r.text
    assert text[cite["start"] : cite["end"]] == cite["text"]
    assert cite["highlights"]
    assert any(case.sentence in text[h["start"] : h["end"]] for h in cite["highlights"])
    assert client.get(f"/v1/documents/{case.name}").json()["text"] == text  # the chat page's
    if fmt == "pdf":
        assert cite["page"] == 2
        assert pages_holding(data, cite["text"][:30]) == [2]
    else:
        assert cite["page"] is None


def test_text_of_a_plain_article_is_the_file_and_unknown_names_are_404(
    client: TestClient, corpus: Path
) -> None:
    name = "003_1f44b7b7ded05db5.txt"
    r = client.get(f"/v1/documents/{name}/text")
    assert r.status_code == 200 and r.text == (corpus / name).read_text(encoding="utf-8")
    body = client.post("/v1/ask", json={"question": CASES["pdf"].question}).json()
    cite = body["citations"][0]
    assert cite["text_source"] == "file" and cite["page"] is None
    assert r.text[cite["start"] : cite["end"]] == cite["text"]
    assert client.get("/v1/documents/khong-co.pdf/text").status_code == 404
    assert client.get("/v1/documents/khong-co.txt/text").status_code == 404
    assert client.get("/v1/documents/x.exe/text").status_code == 422


def _bad(kind: str) -> tuple[str, bytes]:
    return bad_files("003_1f44b7b7ded05db5.txt")[kind]


BAD = {
    "scanned": "no text layer: it looks scanned; OCR it first",
    "encrypted": "encrypted",
    "truncated-pdf": "truncated",
    "truncated-docx": "not a complete DOCX",
    "binary-html": "looks binary",
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_file_is_refused_with_422_and_changes_nothing(
    client: TestClient, corpus: Path, kind: str
) -> None:
    name, data = _bad(kind)
    good = make_docx(article("004_f840cf0540fc0e3d.txt"))
    assert client.post("/v1/documents", files={"file": ("same.docx", good)}).status_code == 201
    before = (client.get("/v1/documents").json(), _snapshot(corpus), client.get("/v1/trash").json())
    r = client.post("/v1/documents", files={"file": (name, data)})
    assert r.status_code == 422, r.text
    assert BAD[kind] in r.json()["detail"] and r.json()["detail"].startswith(name)
    # a bad file under the name of a good one does not replace it either
    r = client.post("/v1/documents", files={"file": ("same.docx", _bad("truncated-docx")[1])})
    assert r.status_code == 422
    after = (client.get("/v1/documents").json(), _snapshot(corpus), client.get("/v1/trash").json())
    assert after == before


def test_the_text_needs_the_key_when_reads_do(settings: Settings, rag: RAG) -> None:
    settings.api_keys = ["s3cret"]
    settings.require_key_for_reads = True
    name = "003_1f44b7b7ded05db5.txt"
    with TestClient(create_app(settings, rag=rag)) as c:
        assert c.get(f"/v1/documents/{name}/text").status_code == 401
        ok = c.get(f"/v1/documents/{name}/text", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.text.startswith("Ngoại giao kinh tế")
