from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from rag.service import RAG
from rag.settings import Settings

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"


@pytest.fixture
def client(settings: Settings, rag: RAG) -> Iterator[TestClient]:
    with TestClient(create_app(settings, rag=rag)) as c:
        yield c


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["files"] == 5 and body["chunks"] > 20
    assert body["embedding_model"].startswith("hashing")
    assert body["vector_store"] == {"engine": "faiss"}


def test_ask_contract(client: TestClient, corpus: Path) -> None:
    r = client.post("/v1/ask", json={"question": Q170})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"answer", "abstained", "citations", "timings_ms"}
    assert "170" in body["answer"] and body["abstained"] is False
    assert set(body["timings_ms"]) >= {"retrieval", "first_token", "total"}
    cite = body["citations"][0]
    assert set(cite) >= {"n", "source", "start", "end", "text", "score"}
    assert cite["source"] == "003_1f44b7b7ded05db5.txt"
    original = (corpus / cite["source"]).read_text(encoding="utf-8")
    assert original[cite["start"] : cite["end"]] == cite["text"]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"question": ""}, "empty"),
        ({"question": "   \n "}, "empty"),
        ({"question": "x" * 2001}, "2000"),
        ({}, "question"),
        ({"question": "ok?", "top_k": 0}, "top_k"),
    ],
)
def test_bad_questions_get_422_with_a_reason(
    client: TestClient, payload: dict[str, object], why: str
) -> None:
    r = client.post("/v1/ask", json=payload)
    assert r.status_code == 422
    assert why in json.dumps(r.json())


def test_search_contract(client: TestClient) -> None:
    r = client.get("/v1/search", params={"q": "chi thi 15 ban hanh ngay nao", "k": 3})
    assert r.status_code == 200
    passages = r.json()["passages"]
    assert len(passages) == 3 and [p["n"] for p in passages] == [1, 2, 3]
    assert any("Chỉ thị số 15-CT/TW" in p["text"] for p in passages)
    assert client.get("/v1/search", params={"q": " "}).status_code == 422


def test_ask_streams_evidence_then_tokens_then_the_answer(client: TestClient) -> None:
    with client.stream("POST", "/v1/ask", json={"question": Q170, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [
            line.split(":", 1)[1].strip() for line in r.iter_lines() if line.startswith("event:")
        ]
    assert events[0] == "passages"
    assert events[-1] == "done"
    assert "token" in events


def test_documents_upload_list_delete(client: TestClient) -> None:
    files = {
        "file": ("moi.txt", "Bài mới\n\nĐà Lạt đón 9 triệu lượt khách.".encode(), "text/plain")
    }
    r = client.post("/v1/documents", files=files)
    assert r.status_code == 201, r.text
    assert r.json()["added"] == ["moi.txt"]
    names = [d["name"] for d in client.get("/v1/documents").json()]
    assert "moi.txt" in names and len(names) == 6
    assert client.delete("/v1/documents/moi.txt").status_code == 200
    assert client.delete("/v1/documents/moi.txt").status_code == 404


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("x.txt", b"\x00\x01binary", 422),
        ("x.txt", "Hà Nội".encode("utf-16"), 422),
        ("x.exe", b"hello", 422),
        ("empty.txt", b"", 422),
        ("blank.txt", "\ufeff \n\t\n".encode(), 422),
        ("..", b"hello", 422),
        ("big.txt", b"a" * 2_000_001, 413),
    ],
)
def test_bad_uploads_are_refused(client: TestClient, name: str, data: bytes, status: int) -> None:
    before = client.get("/v1/documents").json()
    r = client.post("/v1/documents", files={"file": (name, data, "text/plain")})
    assert r.status_code == status, r.text
    assert client.get("/v1/documents").json() == before


def test_writes_require_the_key_when_one_is_set(settings: Settings, rag: RAG) -> None:
    settings.api_keys = ["s3cret"]
    with TestClient(create_app(settings, rag=rag)) as c:
        files = {"file": ("k.txt", "Nội dung".encode(), "text/plain")}
        r = c.post("/v1/documents", files=files)
        assert r.status_code == 401 and r.json() == {"detail": "Unauthorized", "status": 401}
        bad = c.post("/v1/documents", files=files, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = c.post("/v1/documents", files=files, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert c.delete("/v1/documents/k.txt").status_code == 401
        assert c.get("/v1/search", params={"q": "Nội dung"}).status_code == 200
