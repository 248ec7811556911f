"""Converted files in a real headless Chromium: the chat page highlights a PDF citation in the
text extracted from it, and a page as Chromium serialises it is extracted as well as ours.

Needs Debian's Chromium and Playwright, as tests/e2e/test_browser.py (fake engines).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from rag.ingest.formats import extract_article
from rag.service import RAG
from rag.settings import Settings
from tests.browser import CHROMIUM_ARGS, chromium_path, launched
from tests.documents import NAMES, article, make_pdf, measure, news_page
from tests.live_server import live_server as serve

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
TXT = "003_1f44b7b7ded05db5.txt"
PDF = "ngoai-giao-kinh-te-2024.pdf"

pytestmark = pytest.mark.browser


@pytest.fixture
def chromium() -> Path:
    return chromium_path()


@pytest.fixture
def browser() -> Iterator[Any]:
    with launched() as b:
        yield b


def test_the_chat_page_highlights_a_pdf_citation_in_its_extracted_text(
    browser: Any, settings: Settings, rag: RAG
) -> None:
    from playwright.sync_api import expect

    rag.delete_document(TXT)
    rag.add_document(PDF, make_pdf(article(TXT), break_before="Hơn 170 thỏa thuận").data)
    with serve(create_app(settings, rag=rag)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="vi-VN")
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        page.fill("#question", Q170)
        page.press("#question", "Enter")
        turn = page.locator(".turn").first
        turn.locator(".timings").wait_for(state="visible")
        expect(turn.locator(".passage .psource").first).to_contain_text("trang")
        turn.locator(".answer-text button.cite").first.click()
        panel = page.locator("#source-panel")
        expect(panel).to_be_visible()
        expect(page.locator("#source-meta")).to_contain_text("trang 2")
        expect(page.locator("#source-meta")).to_contain_text("văn bản trích từ tệp")
        marked = panel.locator("mark.cited-span").inner_text()
        cite = httpx.post(f"{url}/v1/ask", json={"question": Q170}, timeout=30).json()
        first = cite["citations"][0]
        text = httpx.get(f"{url}/v1/documents/{PDF}/text").text
        assert first["source"] == PDF and first["page"] == 2
        assert marked == first["text"] == text[first["start"] : first["end"]]
        assert "170 thỏa thuận" in marked
        expect(panel.locator("mark.support").first).to_be_in_viewport()
        assert not errors, errors


@pytest.mark.parametrize("name", NAMES)
def test_a_page_as_chromium_serialises_it_is_extracted_whole(
    chromium: Path, tmp_path: Path, name: str
) -> None:
    a = article(name)
    src = tmp_path / "page.html"
    src.write_text(news_page(a), encoding="utf-8")
    dom = subprocess.run(
        [str(chromium), "--headless", *CHROMIUM_ARGS, "--dump-dom", src.as_uri()],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    got = extract_article("saved.html", dom)
    s = measure(got.text, a)
    assert s.recall >= 0.95 and not s.leaked.get("nav") and not s.leaked.get("footer")
    assert (got.title, got.date) == (a.title, a.date)
