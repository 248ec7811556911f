"""Security and the generation gate: API keys for reads and writes, CORS, the bind address."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import indexed_copy
from fastapi import HTTPException
from fastapi.testclient import TestClient

from api import deps
from api.deps import GenerationGate
from api.main import create_app
from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.service import RAG
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

Q = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
KEYS = ["first-key-0123456789", "second-key-abcdefghij"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> RAG:
    """One indexed service for the module (these tests change no document)."""
    return indexed_copy(tmp_path_factory.mktemp("reliability"))


@pytest.fixture
def settings(service: RAG) -> Settings:
    """The app's own settings (keys, CORS), fresh for each test."""
    return service.settings.model_copy(deep=True)


@pytest.fixture
def rag(service: RAG) -> RAG:
    return service


@pytest.fixture
def locked(settings: Settings, rag: RAG) -> Iterator[TestClient]:
    settings.api_keys = list(KEYS)
    settings.require_key_for_reads = True
    with TestClient(create_app(settings, rag=rag)) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(c: TestClient, headers: dict[str, str] | None = None) -> Any:
    return c.post("/v1/ask", json={"question": Q}, headers=headers or {})


# --- API keys ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(KEYS[0][:-1]),  # a prefix of a real key
        bearer(KEYS[0] + "x"),
        {"Authorization": f"Basic {KEYS[0]}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": KEYS[0]},
        {"X-API-Key": KEYS[0]},
    ],
)
def test_reads_need_a_key_when_required(locked: TestClient, headers: dict[str, str]) -> None:
    r = ask(locked, headers)
    assert r.status_code == 401
    # The same bare answer whatever was wrong: nothing tells a missing key from a wrong one.
    assert r.json() == {"detail": "Unauthorized", "status": 401}
    assert r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("key", KEYS)
def test_any_configured_key_opens_reads(locked: TestClient, key: str) -> None:
    assert ask(locked, bearer(key)).status_code == 200
    assert ask(locked, {"Authorization": f"bearer {key}"}).status_code == 200


def test_liveness_stays_open(locked: TestClient) -> None:
    assert locked.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/ask", {"question": Q}),
        ("GET", "/v1/search?q=Ch%E1%BB%89%20th%E1%BB%8B%2015", None),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": Q}]}),
        ("GET", "/v1/documents", None),
        ("GET", "/v1/documents/003_1f44b7b7ded05db5.txt", None),
        ("GET", "/v1/trash", None),
    ],
)
def test_every_read_route_needs_the_key(
    locked: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    refused = locked.request(method, path, json=body)
    assert refused.status_code == 401, f"{method} {path} answers without the key"
    ok = locked.request(method, path, json=body, headers=bearer(KEYS[1]))
    assert ok.status_code == 200


def test_reads_are_refused_when_required_but_no_key_is_set(settings: Settings, rag: RAG) -> None:
    settings.require_key_for_reads = True  # and api_keys left empty: fail closed
    with TestClient(create_app(settings, rag=rag)) as c:
        assert ask(c).status_code == 401
        assert ask(c, bearer("")).status_code == 401


def test_reads_are_open_by_default_even_with_write_keys(settings: Settings, rag: RAG) -> None:
    settings.api_keys = list(KEYS)
    with TestClient(create_app(settings, rag=rag)) as c:
        assert ask(c).status_code == 200
        files = {"file": ("k.txt", "Nội dung".encode(), "text/plain")}
        assert c.post("/v1/documents", files=files).status_code == 401


def test_every_key_is_compared_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit on a match and digests of one length: the time taken says nothing."""
    seen: list[tuple[int, int]] = []
    real = secrets.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return bool(real(a, b))

    monkeypatch.setattr(secrets, "compare_digest", spy)

    class Req:
        def __init__(self, auth: str) -> None:
            self.headers = {"authorization": auth}

    keys = ["a", "bb" * 40, "ccc"]
    for token, ok in [("a", True), ("zz", False), ("ccc", True), ("b" * 500, False)]:
        seen.clear()
        assert deps._key_ok(Req(f"Bearer {token}"), keys) is ok  # type: ignore[arg-type]
        assert seen == [(32, 32)] * len(keys)


# --- CORS and the bind address -------------------------------------------------------------------
PREFLIGHT = {
    "Origin": "https://evil.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_is_closed_by_default(settings: Settings, rag: RAG) -> None:
    assert settings.cors_origins == []
    with TestClient(create_app(settings, rag=rag)) as c:
        pre = c.options("/v1/ask", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in pre.headers
        assert pre.status_code >= 400
        simple = c.get(
            "/v1/search", params={"q": "Chỉ thị"}, headers={"Origin": PREFLIGHT["Origin"]}
        )
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers


def test_cors_opens_only_to_the_listed_origins(settings: Settings, rag: RAG) -> None:
    settings.cors_origins = ["https://ok.example"]
    with TestClient(create_app(settings, rag=rag)) as c:
        ok = c.options("/v1/ask", headers={**PREFLIGHT, "Origin": "https://ok.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ok.example"
        evil = c.options("/v1/ask", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in evil.headers


def test_the_server_binds_to_loopback_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from rag.cli import app

    for name in ("RAG_HOST", "RAG_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    # `rag serve` builds the service before uvicorn starts; fake engines keep that instant.
    monkeypatch.setenv("RAG_EMBEDDER", "fake")
    monkeypatch.setenv("RAG_GENERATOR", "fake")
    assert Settings().host == "127.0.0.1"
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda _app, **kw: calls.append(kw))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert calls and calls[0]["host"] == "127.0.0.1"


def test_new_settings_have_safe_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAG_REQUEST_TIMEOUT_S", "RAG_REQUIRE_KEY_FOR_READS", "RAG_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.request_timeout_s == 120
    assert s.require_key_for_reads is False
    assert s.max_waiting >= 1
    described = Settings.model_fields
    assert described["request_timeout_s"].description
    assert described["require_key_for_reads"].description


# --- the gate on its own -------------------------------------------------------------------------
def test_the_gate_turns_away_beyond_its_queue_and_times_out() -> None:
    async def scenario() -> None:
        gate = GenerationGate(max_waiting=1, retry_after_s=7)
        await gate.acquire()
        assert gate.busy and gate.active == 1
        waiter = asyncio.ensure_future(gate.acquire(timeout=5))
        await asyncio.sleep(0)
        assert gate.waiting == 1
        with pytest.raises(HTTPException) as full:
            await gate.acquire()
        assert full.value.status_code == 503
        assert full.value.headers == {"Retry-After": "7"}
        gate.release()
        await waiter  # the waiter gets the slot when it is freed
        assert gate.active == 1 and gate.waiting == 0
        with pytest.raises(HTTPException) as slow:
            await gate.acquire(timeout=0.05)
        assert slow.value.status_code == 504 and "time limit" in str(slow.value.detail)
        assert gate.waiting == 0
        gate.release()
        assert not gate.busy

    asyncio.run(scenario())


def test_a_stray_release_does_not_open_a_second_slot() -> None:
    async def scenario() -> None:
        gate = GenerationGate(max_waiting=4)
        gate.release()  # ignored (and logged): no slot was taken
        await gate.acquire()
        second = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)
        assert not second.done()  # still one generation at a time
        gate.release()
        await second
        gate.release()

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = GenerationGate(max_waiting=1)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.waiting == 0
        gate.release()
        await asyncio.wait_for(gate.acquire(), 1)  # the slot was not lost to the cancelled one
        gate.release()

    asyncio.run(scenario())


def test_retry_after_follows_how_long_answers_take() -> None:
    async def scenario() -> None:
        gate = GenerationGate(max_waiting=0, retry_after_s=5)
        assert gate.retry_after() == 5  # nothing measured yet
        for _ in range(3):
            await gate.acquire()
            await asyncio.sleep(0.3)
            gate.release()
        assert gate.hold_s is not None and 0.25 < gate.hold_s < 1.5
        await gate.acquire()
        with pytest.raises(HTTPException) as busy:
            await gate.acquire()
        assert busy.value.headers == {"Retry-After": "1"}  # about one answer ahead
        gate.hold_s = 30.0
        gate.waiting = 3
        assert gate.retry_after() == GenerationGate.MAX_RETRY_AFTER_S  # capped
        gate.waiting = 0
        gate.release()

    asyncio.run(scenario())


def test_a_gate_with_slots_runs_that_many_at_once() -> None:
    """With a remote model server (which batches) the gate lets ``llm_concurrency`` through."""

    async def scenario() -> None:
        gate = GenerationGate(max_waiting=2, slots=3)
        for _ in range(3):
            await asyncio.wait_for(gate.acquire(), 1)  # none of the three waits
        assert gate.active == 3 and gate.busy
        fourth = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)
        assert not fourth.done() and gate.waiting == 1
        gate.release()
        await asyncio.wait_for(fourth, 1)
        for _ in range(3):
            gate.release()
        assert not gate.busy

    asyncio.run(scenario())


@pytest.mark.parametrize(("llm_url", "slots"), [("", 1), ("http://127.0.0.1:9/v1", 3)])
def test_the_app_gives_a_remote_model_server_its_concurrency(
    settings: Settings, llm_url: str, slots: int
) -> None:
    s = settings.model_copy(update={"llm_url": llm_url, "llm_concurrency": 3})
    rag = RAG(s, HashingEmbedder(), FakeGenerator())
    with TestClient(create_app(s, rag=rag)) as client:
        assert client.app.state.gate.slots == slots  # type: ignore[attr-defined]
