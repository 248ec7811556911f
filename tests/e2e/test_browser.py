"""The chat page in a real headless Chromium against a real uvicorn server (fake engines).

Needs Debian's Chromium (`apt-get install -y chromium`) and the `playwright` Python package
(which ships its own driver; no `playwright install`). Screenshots go to `test-artifacts/`;
with RAG_UPDATE_SCREENSHOT=1 the README's `docs/screenshot-chat.png` is refreshed too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from live_server import live_server as serve

from api.main import STATIC, create_app
from rag.service import RAG
from rag.settings import Settings
from tests.browser import launched

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
SOURCE = "003_1f44b7b7ded05db5.txt"
FOLLOW_UP = "Quan hệ đối ngoại được mở rộng thế nào?"


@pytest.fixture
def base_url(settings: Settings, rag: RAG) -> Iterator[str]:
    with serve(create_app(settings, rag=rag)) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    with launched() as b:
        yield b


class PageWatch:
    """Collects what the page does that a test should see: asks, errors, outside requests."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.asks: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.outside: list[str] = []
        page.on("request", self._request)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.base_url = base_url

    def _request(self, request: Any) -> None:
        if not request.url.startswith(self.base_url):
            self.outside.append(request.url)
        if request.url.endswith("/v1/ask") and request.method == "POST":
            self.asks.append(request.post_data_json)


def _ask(page: Any, question: str) -> Any:
    """Type a question, send it with Enter, and return the new turn once it is answered."""
    turns = page.locator(".turn")
    before = turns.count()
    page.fill("#question", question)
    page.press("#question", "Enter")
    turn = turns.nth(before)
    turn.locator(".timings").wait_for(state="visible")  # shown with the final answer
    return turn


@pytest.mark.browser
def test_chat_page_streams_cites_and_follows_up(browser: Any, base_url: str, corpus: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="vi-VN")
    page.set_default_timeout(15_000)
    watch = PageWatch(page, base_url)
    page.goto(base_url + "/")
    expect(page).to_have_title(re.compile("Hỏi đáp"))
    expect(page.locator("#corpus-info")).to_contain_text("5 bài viết")

    # The question: the answer streams in with its evidence and a citation.
    turn = _ask(page, Q170)
    answer = turn.locator(".answer-text")
    expect(answer).to_contain_text("170")
    cite = answer.locator("button.cite").first
    expect(cite).to_be_visible()
    expect(turn.locator(".passage")).to_have_count(5)
    expect(turn.locator(".passage.cited")).not_to_have_count(0)
    expect(turn.locator(".bubble.abstained")).to_have_count(0)
    expect(turn.locator(".timings")).to_contain_text("ms")

    # The citation opens the article with the cited span highlighted and in view.
    n = int(cite.get_attribute("data-n") or "0")
    article = (corpus / SOURCE).read_bytes().decode("utf-8")
    api_answer = httpx.post(f"{base_url}/v1/ask", json={"question": Q170}, timeout=30).json()
    citation = next(c for c in api_answer["citations"] if c["n"] == n)
    assert citation["highlights"], "the fake engine's answer has a supporting sentence"
    cite.click()
    panel = page.locator("#source-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#source-title")).to_have_text(
        "Ngoại giao kinh tế tạo đà bứt phá cho tăng trưởng năm 2025"
    )
    mark = panel.locator("mark.cited-span")
    expect(mark).to_have_count(1)
    support = mark.locator("mark.support")  # the sentence backing the claim, within it
    expect(support).to_have_count(len(citation["highlights"]))
    expect(support.first).to_be_in_viewport()
    marked = mark.inner_text()
    assert citation["source"] == SOURCE
    assert marked == citation["text"], "the highlight is not the cited passage"
    assert marked in article and marked.startswith("Hơn 170 thỏa thuận hợp tác")
    assert article[citation["start"] : citation["end"]] == marked
    for span, shown in zip(citation["highlights"], support.all_inner_texts(), strict=True):
        assert article[span["start"] : span["end"]] == shown
        assert shown in marked
    full = panel.locator(".doc-text").inner_text()
    assert full.startswith("Ngoại giao kinh tế tạo đà bứt phá")

    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)  # let the smooth scroll settle
    page.screenshot(path=str(ARTIFACTS / "chat.png"))
    if os.environ.get("RAG_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(ROOT / "docs" / "screenshot-chat.png"))

    # Escape closes the panel and gives the focus back to the citation.
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cite).to_be_focused()

    # A follow-up sends the earlier turn as history.
    first_answer = answer.inner_text()
    turn2 = _ask(page, FOLLOW_UP)
    expect(turn2.locator(".answer-text")).to_contain_text("mở rộng")
    assert len(watch.asks) == 2
    assert watch.asks[0]["history"] == [] and watch.asks[0]["stream"] is True
    history = watch.asks[1]["history"]
    assert [t["role"] for t in history] == ["user", "assistant"]
    assert history[0]["content"] == Q170
    assert history[1]["content"] == api_answer["answer"]
    assert first_answer.replace(" ", "").startswith(api_answer["answer"][:20].replace(" ", ""))

    # A question the articles do not answer is shown as such, with the nearest passages.
    turn3 = _ask(page, "Giá vàng hôm nay là bao nhiêu?")
    expect(turn3.locator(".bubble.abstained")).to_be_visible()
    expect(turn3.locator(".abstain-badge")).to_be_visible()
    expect(turn3.locator(".evidence summary")).to_contain_text("gần nhất")
    expect(turn3.locator(".passage")).not_to_have_count(0)
    expect(turn3.locator("button.cite")).to_have_count(0)

    # A new conversation forgets the history.
    page.click("#new-chat")
    expect(page.locator(".turn")).to_have_count(0)
    _ask(page, Q170)
    assert watch.asks[-1]["history"] == []

    assert not watch.errors, watch.errors
    assert not watch.outside, f"the page fetched outside the server: {watch.outside}"


@pytest.mark.browser
def test_chat_page_on_a_phone(browser: Any, base_url: str) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, locale="vi-VN")
    page.set_default_timeout(15_000)
    page.goto(base_url + "/")
    page.click(".example >> nth=0")  # an example question is sent as it is
    turn = page.locator(".turn").first
    turn.locator(".timings").wait_for(state="visible")
    expect(turn.locator(".question-text")).to_have_text(Q170)
    turn.locator(".answer-text button.cite").first.click()
    panel = page.locator("#source-panel")
    expect(panel.locator("mark.support").first).to_be_in_viewport()
    box = panel.bounding_box()
    assert box is not None and box["width"] >= 380  # the article covers the screen
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)
    page.screenshot(path=str(ARTIFACTS / "chat-phone.png"))
    page.click("#source-close")
    expect(panel).to_be_hidden()


def test_static_page_is_offline_and_text_only(settings: Settings, rag: RAG) -> None:
    """No CDN, no outside URL, no HTML built from strings: the page must work offline."""
    with TestClient(create_app(settings, rag=rag)) as c:
        r = c.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert 'lang="vi"' in r.text
        for name in ("app.js", "style.css"):
            assert c.get(f"/{name}").status_code == 200
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} refers to an outside URL"
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)
