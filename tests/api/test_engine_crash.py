"""A crash of the answer engine's process does not take the HTTP API down (real HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from rag.embedding import HashingEmbedder
from rag.generation import FakeGenerator
from rag.generation.worker import WorkerGenerator
from rag.service import RAG
from rag.settings import Settings
from tests.live_server import live_server

Q = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, WorkerGenerator]]:
    worker = WorkerGenerator(partial(FakeGenerator, delay_s=0.3), name="fake", backoff_s=(0.5, 2.0))
    assert worker.wait_ready(30).state == "ready"
    rag = RAG(settings, HashingEmbedder(), worker)
    rag.ingest()
    try:
        with live_server(create_app(settings, rag=rag)) as url:
            yield url, worker
    finally:
        worker.close()


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    kind = ""
    for line in lines:
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            yield kind, json.loads(line.split(":", 1)[1])


def test_sigkill_mid_answer_gives_an_error_event_and_the_service_lives_on(
    served: tuple[str, WorkerGenerator], corpus: Path
) -> None:
    url, worker = served
    seen: list[str] = []
    with (
        httpx.Client(base_url=url, timeout=30) as client,
        client.stream("POST", "/v1/ask", json={"question": Q, "stream": True}) as r,
    ):
        assert r.status_code == 200
        for kind, data in _events(r.iter_lines()):
            seen.append(kind)
            if kind == "passages":
                worker.kill_child()  # the model process dies while it generates
            if kind == "error":
                assert data["status"] == 503
                assert "SIGKILL" in str(data["detail"])
    assert seen[0] == "passages" and seen[-1] == "error" and "done" not in seen

    with httpx.Client(base_url=url, timeout=30) as client:
        # Everything but answering keeps working while the engine restarts.
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["answer_engine"]["state"] in ("restarting", "loading", "ready")
        assert client.get("/v1/search", params={"q": "thỏa thuận"}).status_code == 200
        assert client.get("/v1/documents").status_code == 200
        # An ask is refused with 503 + Retry-After until the engine is back, then answered.
        t0 = time.monotonic()
        while True:
            r = client.post("/v1/ask", json={"question": Q})
            if r.status_code == 200:
                break
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert time.monotonic() - t0 < 60, "the engine did not come back within a minute"
            time.sleep(0.2)
        body = r.json()
        assert not body["abstained"] and "170" in body["answer"]
        engine = client.get("/healthz").json()["answer_engine"]
        assert engine["state"] == "ready" and engine["restarts"] == 1
