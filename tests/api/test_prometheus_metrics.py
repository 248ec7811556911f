"""GET /metrics: Prometheus text whose counters and histograms move with requests and answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.service import RAG
from rag.settings import Settings
from tests.live_server import live_server

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
NOT_IN_THE_ARTICLES = "2024年越南签署了多少合作协议？"  # abstains (tests/api/test_fuzz.py)
DOC = "003_1f44b7b7ded05db5.txt"

Samples = list[tuple[str, dict[str, str], float]]


@pytest.fixture
def client(settings: Settings, rag: RAG) -> Iterator[TestClient]:
    with TestClient(create_app(settings, rag=rag)) as c:
        yield c


def scrape(c: TestClient | httpx.Client, **headers: str) -> Samples:
    r = c.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when there is none yet)."""
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else 0.0


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_requests_are_counted_and_timed_by_route_template_and_status(client: TestClient) -> None:
    before = scrape(client)
    assert client.post("/v1/ask", json={"question": Q170}).status_code == 200
    assert client.get("/v1/search", params={"q": "Chỉ thị 15"}).status_code == 200
    assert client.get("/v1/search", params={"q": "ok", "k": 0}).status_code == 422
    assert client.post("/v1/ask", json={"question": " "}).status_code == 422
    for name in ("nope.txt", "khong-co.txt"):
        assert client.get(f"/v1/documents/{name}").status_code == 404
    assert client.get("/v1/documents/no/such/path").status_code == 404
    after = scrape(client)

    expected = {
        ("POST", "/v1/ask", "200"): 1,
        ("POST", "/v1/ask", "422"): 1,
        ("GET", "/v1/search", "200"): 1,
        ("GET", "/v1/search", "422"): 1,
        ("GET", "/v1/documents/{name}", "404"): 2,  # the template, not the two names
        ("GET", "other", "404"): 1,  # not a route: the static files answered
    }
    for (method, route, status), n in expected.items():
        labels = {"method": method, "route": route, "status": status}
        assert moved(before, after, "rag_http_requests_total", **labels) == n, labels
        assert moved(before, after, "rag_http_request_duration_seconds_count", **labels) == n
        assert moved(before, after, "rag_http_request_duration_seconds_sum", **labels) > 0
        inf = moved(before, after, "rag_http_request_duration_seconds_bucket", le="+Inf", **labels)
        assert inf == n
    routes = {ls["route"] for n, ls, _ in after if n == "rag_http_requests_total"}
    assert not any("nope" in r or "such" in r for r in routes)
    assert "/metrics" not in routes  # scrapes do not count themselves
    total = sum(v for n, _, v in after if n == "rag_http_requests_total")
    assert total - sum(v for n, _, v in before if n == "rag_http_requests_total") == 7


def test_answer_times_and_abstentions_streamed_or_not(client: TestClient) -> None:
    before = scrape(client)
    answered = client.post("/v1/ask", json={"question": Q170}).json()
    abstained = client.post("/v1/ask", json={"question": NOT_IN_THE_ARTICLES}).json()
    assert not answered["abstained"] and abstained["abstained"]
    streamed = client.post("/v1/ask", json={"question": Q170, "stream": True})
    assert "event: done" in streamed.text
    chat = {"messages": [{"role": "user", "content": NOT_IN_THE_ARTICLES}]}
    assert client.post("/v1/chat/completions", json=chat).json()["abstained"] is True
    chat_stream = client.post("/v1/chat/completions", json={**chat, "stream": True})
    assert "[DONE]" in chat_stream.text
    assert client.post("/v1/ask", json={"question": ""}).status_code == 422  # no answer
    after = scrape(client)

    ask_json = {"route": "/v1/ask", "stream": "false"}
    assert moved(before, after, "rag_answer_seconds_count", **ask_json) == 2
    total_s = (answered["timings_ms"]["total"] + abstained["timings_ms"]["total"]) / 1000
    assert moved(before, after, "rag_answer_seconds_sum", **ask_json) == pytest.approx(total_s)
    with_first_token = [a for a in (answered, abstained) if a["timings_ms"]["first_token"]]
    assert moved(before, after, "rag_answer_first_token_seconds_count", **ask_json) == len(
        with_first_token
    )
    assert moved(before, after, "rag_abstentions_total", **ask_json) == 1

    ask_sse = {"route": "/v1/ask", "stream": "true"}
    assert moved(before, after, "rag_answer_seconds_count", **ask_sse) == 1
    assert moved(before, after, "rag_abstentions_total", **ask_sse) == 0
    for stream in ("false", "true"):
        chat_labels = {"route": "/v1/chat/completions", "stream": stream}
        assert moved(before, after, "rag_answer_seconds_count", **chat_labels) == 1
        assert moved(before, after, "rag_abstentions_total", **chat_labels) == 1
    assert sum(v for n, _, v in after if n == "rag_abstentions_total") == 3


def test_the_index_size_and_the_engine_are_read_at_scrape_time(
    client: TestClient, rag: RAG, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = client.get("/healthz").json()
    samples = scrape(client)
    assert value(samples, "rag_index_files") == health["files"] == 5
    assert value(samples, "rag_index_chunks") == health["chunks"]
    assert value(samples, "rag_answer_queue_waiting") == value(samples, "rag_answer_queue_active")
    assert value(samples, "rag_answer_queue_active") == 0
    assert value(samples, "rag_answer_slots") == 1
    assert value(samples, "rag_answer_engine_restarts_total") == 0
    assert value(samples, "rag_answer_engine_state", state="ready") == 1

    files = {
        "file": ("moi.txt", "Bài mới\n\nĐà Lạt đón 9 triệu lượt khách.".encode(), "text/plain")
    }
    assert client.post("/v1/documents", files=files).status_code == 201
    monkeypatch.setattr(
        rag, "engine_state", lambda: {"state": "restarting", "detail": "", "restarts": 3}
    )
    samples = scrape(client)
    assert value(samples, "rag_index_files") == 6
    assert value(samples, "rag_index_chunks") > health["chunks"]
    assert value(samples, "rag_answer_engine_restarts_total") == 3
    assert value(samples, "rag_answer_engine_state", state="restarting") == 1
    assert value(samples, "rag_answer_engine_state", state="ready") == 0


def test_queue_depth_while_an_answer_holds_the_slot(settings: Settings) -> None:
    service = RAG(settings, HashingEmbedder(), FakeGenerator(delay_s=0.5))
    service.ingest()
    body = {"question": Q170, "stream": True}
    with (
        live_server(create_app(settings, rag=service)) as url,
        httpx.Client(base_url=url, timeout=30, trust_env=False) as c,
    ):
        with c.stream("POST", "/v1/ask", json=body) as first:
            lines = first.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: passages"
            # The first answer holds the slot now; a second one queues behind it.
            second: list[httpx.Response] = []
            waiter = threading.Thread(
                target=lambda: second.append(c.post("/v1/ask", json={"question": Q170}))
            )
            waiter.start()
            for _ in range(200):
                samples = scrape(c)
                if value(samples, "rag_answer_queue_waiting") == 1:
                    break
                threading.Event().wait(0.05)
            assert value(samples, "rag_answer_queue_waiting") == 1
            assert value(samples, "rag_answer_queue_active") == 1
        waiter.join(60)  # leaving the stream stopped the first answer and freed the slot
        assert second and second[0].status_code == 200
        samples = scrape(c)
        assert value(samples, "rag_answer_queue_waiting") == 0
        assert value(samples, "rag_answer_queue_active") == 0


def test_metrics_are_a_read_protected_like_any_other(settings: Settings, rag: RAG) -> None:
    settings.api_keys = ["k-0123456789"]
    with TestClient(create_app(settings, rag=rag)) as c:
        assert c.get("/metrics").status_code == 200  # keys alone protect writes only
    settings.require_key_for_reads = True
    with TestClient(create_app(settings, rag=rag)) as c:
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json() == {"detail": "Unauthorized", "status": 401}
        assert value(scrape(c, authorization="Bearer k-0123456789"), "rag_index_files") == 5


def test_label_values_stay_bounded(client: TestClient) -> None:
    for i in range(30):
        client.get(f"/v1/documents/doc-{i}.txt")
        client.get(f"/no/such/page-{i}")
        client.request(f"X{i}", "/v1/search")
    samples = scrape(client)
    requests = [ls for n, ls, _ in samples if n == "rag_http_requests_total"]
    assert {ls["route"] for ls in requests} <= {"/v1/documents/{name}", "/v1/search", "other"}
    assert {ls["method"] for ls in requests} == {"GET", "other"}
