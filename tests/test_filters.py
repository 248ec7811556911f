"""Search filters: some articles, a date range; applied before ranking (Python API and HTTP)."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from rag.embedding import HashingEmbedder
from rag.filters import FilterError, SearchFilter, article_date
from rag.generation import FakeGenerator
from rag.service import RAG, QuestionError
from rag.settings import Settings

A000 = "000_0a6a60240146a7b2.txt"  # the one bundled article with a date: 27/07/2025
A003 = "003_1f44b7b7ded05db5.txt"
A004 = "004_f840cf0540fc0e3d.txt"
Q = "Thủ tướng chủ trì hội nghị ngoại giao kinh tế với các Đại sứ"


@pytest.fixture
def rag(settings: Settings) -> RAG:
    service = RAG(settings, HashingEmbedder(), FakeGenerator())
    service.ingest()
    return service


def test_article_dates_are_read_in_both_forms() -> None:
    assert article_date("27/07/2025") == date(2025, 7, 27)
    assert article_date("2025-07-27") == date(2025, 7, 27)
    assert article_date("2025-07-27T10:00:00+07:00") == date(2025, 7, 27)
    assert article_date("") is None and article_date("31/02/2025") is None
    assert article_date("hôm qua") is None


def test_an_empty_filter_is_none_and_an_empty_range_is_refused() -> None:
    assert SearchFilter.of(None, None, None) is None
    assert SearchFilter.of(["  "], None, None) is None
    with pytest.raises(FilterError, match="after"):
        SearchFilter.of(None, date(2025, 2, 1), date(2025, 1, 1))


def test_a_source_filter_ranks_within_the_article_and_still_returns_k(rag: RAG) -> None:
    everything = rag.search(Q, 5)
    assert len({p.source for p in everything}) > 1  # unfiltered, several articles compete
    only = rag.search(Q, 5, sources=[A003])
    assert len(only) == 5 and {p.source for p in only} == {A003}
    # Ranked, not cut after: the first passage is the article's best, which is what the
    # unfiltered search over that article alone would put first among its passages.
    deep = [p for p in rag.search(Q, 50) if p.source == A003]
    assert only[0].start == deep[0].start
    two = rag.search(Q, 8, sources=[A003, A004])
    assert {p.source for p in two} <= {A003, A004} and len(two) == 8


def test_a_date_range_keeps_only_articles_dated_within_it(rag: RAG) -> None:
    dated = rag.search(Q, 5, date_from=date(2025, 7, 1), date_to=date(2025, 7, 31))
    assert dated and {p.source for p in dated} == {A000}
    assert rag.search(Q, 5, date_to=date(2025, 1, 1)) == []  # no article is known to be that old
    assert rag.search(Q, 5, sources=[A003], date_from=date(2020, 1, 1)) == []  # 003 has no date


def test_an_unknown_article_is_a_clear_error(rag: RAG) -> None:
    with pytest.raises(QuestionError, match=r"no indexed article is named 'nope\.txt'"):
        rag.search(Q, 5, sources=["nope.txt"])
    with pytest.raises(QuestionError, match="after"):
        rag.ask(Q, date_from=date(2025, 2, 1), date_to=date(2025, 1, 1))


def test_a_filtered_answer_cites_only_the_allowed_article(rag: RAG) -> None:
    answer = rag.ask("Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?", sources=[A004])
    assert {p.source for p in answer.passages} == {A004}
    assert all(c.source == A004 for c in answer.citations)
    full = rag.ask("Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?")
    assert "170" in full.answer and A003 in {c.source for c in full.citations}


def test_filters_over_http(settings: Settings, rag: RAG) -> None:
    with TestClient(create_app(settings, rag=rag)) as client:
        r = client.get("/v1/search", params={"q": Q, "k": 4, "sources": [A003, A004]})
        assert r.status_code == 200
        assert len(r.json()["passages"]) == 4
        assert {p["source"] for p in r.json()["passages"]} <= {A003, A004}
        r = client.get("/v1/search", params={"q": Q, "date_from": "2025-07-01"})
        assert {p["source"] for p in r.json()["passages"]} == {A000}
        r = client.get("/v1/search", params={"q": Q, "date_from": "not a date"})
        assert r.status_code == 422
        r = client.get("/v1/search", params={"q": Q, "sources": "nope.txt"})
        assert r.status_code == 422 and "nope.txt" in r.text

        body = {"question": "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?",
                "filters": {"sources": [A003]}}  # fmt: skip
        r = client.post("/v1/ask", json=body)
        assert r.status_code == 200
        assert {p["source"] for p in r.json()["passages"]} == {A003}
        r = client.post("/v1/ask", json={**body, "filters": {"sources": ["nope.txt"]}})
        assert r.status_code == 422 and "nope.txt" in r.text

        chat = {"messages": [{"role": "user", "content": body["question"]}],
                "filters": {"sources": [A004]}}  # fmt: skip
        r = client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200
        assert all(c["source"] == A004 for c in r.json()["citations"])
        r = client.post(
            "/v1/chat/completions",
            json={**chat, "filters": {"date_from": "2025-08-01", "date_to": "2025-07-01"}},
        )
        assert r.status_code == 422
