"""One error body (`ErrorBody`) for every 4xx/5xx, and an OpenAPI document that says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.schemas import ErrorBody
from rag.generation import EngineUnavailable
from rag.service import RAG
from rag.settings import Settings

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
OPEN = {("GET", "/healthz"), ("GET", "/v1/models")}  # never need a key


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = create_app(Settings(_env_file=None)).openapi()
    return spec


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_every_documented_error_is_an_error_body() -> None:
    spec = _spec()
    assert "HTTPValidationError" not in json.dumps(spec)  # FastAPI's 422, never sent
    for method, path, op in _operations(spec):
        where = f"{method} {path}"
        for code, response in op["responses"].items():
            if code[0] in "45":
                assert response["content"]["application/json"]["schema"] == ERROR_REF, where
        codes = set(op["responses"])
        assert "500" in codes, where
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in codes, where
        if op.get("requestBody"):
            assert "400" in codes, where  # a body that cannot be parsed at all
        if (method, path) not in OPEN:
            assert "401" in codes, where
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        if method in ("POST", "DELETE") and path.startswith(("/v1/documents", "/v1/trash")):
            assert "403" in codes, where
    for path in ("/v1/ask", "/v1/chat/completions"):
        responses = _spec()["paths"][path]["post"]["responses"]
        for code in ("503", "504"):
            assert "Retry-After" in responses[code]["headers"]


@pytest.fixture
def client(settings: Settings, rag: RAG) -> Iterator[TestClient]:
    with TestClient(create_app(settings, rag=rag), raise_server_exceptions=False) as c:
        yield c


def _error(r: Any, status: int) -> ErrorBody:
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/json"
    body = ErrorBody.model_validate(r.json())
    assert body.status == status and body.detail
    return body


def test_a_request_that_fails_validation_lists_each_field(client: TestClient) -> None:
    r = client.post("/v1/ask", json={"top_k": 0})
    body = _error(r, 422)
    assert {(tuple(e.loc), e.type) for e in body.errors} == {
        (("body", "question"), "missing"),
        (("body", "top_k"), "greater_than_equal"),
    }
    assert body.detail.startswith("invalid request: body.question: Field required")
    # The input is not echoed back (JSON cannot always encode it: 1e999, a lone surrogate).
    assert all(set(e) == {"type", "loc", "msg"} for e in r.json()["errors"])


def test_input_json_cannot_encode_still_gets_a_422(client: TestClient) -> None:
    raw = b'{"question": 1e999, "history": [{"role": "user", "content": "\\udfff"}]}'
    r = client.post("/v1/ask", content=raw, headers={"content-type": "application/json"})
    locs = [e.loc for e in _error(r, 422).errors]
    assert locs == [["body", "question"], ["body", "history", 0, "content"]]


def test_a_refused_question_has_only_a_reason(client: TestClient) -> None:
    r = client.get("/v1/search", params={"q": " "})
    assert _error(r, 422).detail == "invalid question: the question is empty"
    assert "errors" not in r.json()


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"question": "\xff\xfe"}'])
def test_a_body_that_cannot_be_read_gets_a_400(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/ask", content=raw, headers={"content-type": "application/json"})
    assert _error(r, 400).detail == "There was an error parsing the body"


def test_not_found_and_method_not_allowed(client: TestClient) -> None:
    assert "nope.txt" in _error(client.get("/v1/documents/nope.txt"), 404).detail
    assert _error(client.get("/no/such/page"), 404).detail == "Not Found"
    assert _error(client.put("/v1/ask", json={}), 405).detail == "Method Not Allowed"


def test_an_upload_over_the_limit_gets_a_413(client: TestClient) -> None:
    files = {"file": ("big.txt", b"a" * 2_000_001, "text/plain")}
    assert "larger" in _error(client.post("/v1/documents", files=files), 413).detail


def test_keys_401_and_closed_writes_403(settings: Settings, rag: RAG) -> None:
    settings.allow_open_writes = False
    with TestClient(create_app(settings, rag=rag)) as c:
        assert "RAG_API_KEYS" in _error(c.delete("/v1/documents/x.txt"), 403).detail
    settings.api_keys = ["k-0123456789"]
    settings.require_key_for_reads = True
    with TestClient(create_app(settings, rag=rag)) as c:
        r = c.post("/v1/ask", json={"question": Q170})
        assert _error(r, 401).detail == "Unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


def test_an_engine_that_is_down_gets_503_with_retry_after(
    client: TestClient, rag: RAG, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> None:
        raise EngineUnavailable("the answer engine is restarting: SIGKILL", retry_after=7)

    monkeypatch.setattr(rag, "check_engine", down)
    for path, body in [
        ("/v1/ask", {"question": Q170}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": Q170}]}),
    ]:
        r = client.post(path, json=body)
        assert "SIGKILL" in _error(r, 503).detail and r.headers["retry-after"] == "7"


def test_a_bug_gets_a_500_error_body_without_internals(
    client: TestClient, rag: RAG, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(rag, "search", broken)
    r = client.get("/v1/search", params={"q": "Chỉ thị 15"})
    assert "secret" not in _error(r, 500).detail
