"""The OpenAI-compatible endpoints, driven by the official `openai` client against a real
uvicorn server; and the full-text document route the chat page uses to show a citation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_server import live_server as serve
from openai import OpenAI

from api.main import create_app
from rag.generation import FakeGenerator
from rag.prompts import NOT_FOUND_VI
from rag.service import RAG
from rag.settings import Settings

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
SOURCE = "003_1f44b7b7ded05db5.txt"
FOLLOW_UP = "Quan hệ đối ngoại được mở rộng thế nào?"


@pytest.fixture
def app(settings: Settings, rag: RAG) -> FastAPI:
    return create_app(settings, rag=rag)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0, timeout=30) as c:
        yield c


def _original(corpus: Path, name: str) -> str:
    return (corpus / name).read_bytes().decode("utf-8")


def _final_text(chunks: list[Any]) -> str:
    """What a stream answered: the deltas, or the `answer` the final chunk gives when the
    service corrected the streamed text (grounding moved a marker, dropped a sentence, …)."""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"][-1]
    answer: str = (final.model_extra or {}).get("answer", text)
    return answer


def _gate_free(app: FastAPI, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not app.state.gate._sem.locked():
            return True
        time.sleep(0.02)
    return False


# --- POST /v1/chat/completions ----------------------------------------------------------------
def test_completion_answers_and_cites_the_article(client: OpenAI, corpus: Path) -> None:
    resp = client.chat.completions.create(
        model="rag-vi", messages=[{"role": "user", "content": Q170}]
    )
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == "rag-vi"
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content is not None and "170" in choice.message.content
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens >= resp.usage.completion_tokens

    extra = resp.model_extra or {}
    assert extra["abstained"] is False
    citations = extra["citations"]
    assert citations == resp.to_dict()["citations"]
    assert citations[0]["source"] == SOURCE
    for c in citations:
        assert set(c) >= {"n", "source", "start", "end", "text", "score", "title"}
        assert f"[{c['n']}]" in choice.message.content
        assert _original(corpus, c["source"])[c["start"] : c["end"]] == c["text"]


def test_model_name_is_echoed(client: OpenAI) -> None:
    resp = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": Q170}], max_tokens=50
    )
    assert resp.model == "gpt-4o-mini"


def test_streaming_completion(client: OpenAI, corpus: Path) -> None:
    stream = client.chat.completions.create(
        model="rag-vi",
        messages=[{"role": "user", "content": Q170}],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
    )
    chunks = list(stream)  # the client stops at `data: [DONE]`
    assert len(chunks) >= 4
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"

    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert "170" in text
    finals = [c for c in with_choices if c.choices[0].finish_reason is not None]
    assert len(finals) == 1 and finals[0] is with_choices[-1]
    assert finals[0].choices[0].finish_reason == "stop"
    extra = finals[0].model_extra or {}
    assert extra["abstained"] is False
    assert extra["citations"][0]["source"] == SOURCE
    c = extra["citations"][0]
    assert _original(corpus, SOURCE)[c["start"] : c["end"]] == c["text"]
    # no extra fields on the other chunks
    assert all("citations" not in (c.model_extra or {}) for c in with_choices[:-1])

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens > 0

    whole = client.chat.completions.create(
        model="rag-vi", messages=[{"role": "user", "content": Q170}]
    )
    assert _final_text(chunks) == whole.choices[0].message.content
    if "answer" not in extra:
        assert text == whole.choices[0].message.content


def test_stream_wire_format(base_url: str) -> None:
    """Exactly `data: {json}` events separated by blank lines, ending with `data: [DONE]`."""
    body = {"model": "rag-vi", "messages": [{"role": "user", "content": Q170}], "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line[6:]) for line in lines[:-1]]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)


def test_multi_turn_passes_the_history(client: OpenAI, fake_generator: FakeGenerator) -> None:
    first = client.chat.completions.create(
        model="rag-vi", messages=[{"role": "user", "content": Q170}]
    )
    previous = first.choices[0].message.content or ""
    resp = client.chat.completions.create(
        model="rag-vi",
        messages=[
            {"role": "system", "content": "SYSTEM-PROMPT-IGNORED"},
            {"role": "user", "content": Q170},
            {"role": "assistant", "content": previous},
            {"role": "user", "content": FOLLOW_UP},
        ],
    )
    content = resp.choices[0].message.content or ""
    assert "mở rộng" in content
    assert (resp.model_extra or {})["citations"]

    prompt = fake_generator.calls[-1]
    assert {"role": "user", "content": Q170} in prompt
    assert {"role": "assistant", "content": previous} in prompt
    assert FOLLOW_UP in prompt[-1]["content"]
    assert all("SYSTEM-PROMPT-IGNORED" not in m["content"] for m in prompt)


def test_text_parts_are_read(client: OpenAI) -> None:
    resp = client.chat.completions.create(
        model="rag-vi",
        messages=[{"role": "user", "content": [{"type": "text", "text": Q170}]}],
    )
    assert "170" in (resp.choices[0].message.content or "")


def test_abstention(client: OpenAI, fake_generator: FakeGenerator) -> None:
    # The shape of a "not found" on this route (whether to abstain is the reader's call,
    # tested in tests/test_service.py and measured by the evaluation).
    fake_generator.replies = [NOT_FOUND_VI]
    resp = client.chat.completions.create(
        model="rag-vi", messages=[{"role": "user", "content": "Giá vàng hôm nay là bao nhiêu?"}]
    )
    extra = resp.model_extra or {}
    assert extra["abstained"] is True and extra["citations"] == []
    assert resp.choices[0].message.content == NOT_FOUND_VI


def test_stream_carries_the_grounded_answer(client: OpenAI, fake_generator: FakeGenerator) -> None:
    # No marker in the model's text: grounding adds one; the stream ends with the same answer.
    reply = "Hơn 170 thỏa thuận hợp tác đã được ký kết."
    fake_generator.replies = [reply]
    whole = client.chat.completions.create(
        model="rag-vi", messages=[{"role": "user", "content": Q170}]
    )
    fake_generator.replies = [reply]
    chunks = list(
        client.chat.completions.create(
            model="rag-vi", messages=[{"role": "user", "content": Q170}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(reply[:-1]) and "  " not in text
    assert _final_text(chunks) == whole.choices[0].message.content
    assert "[1]" in _final_text(chunks)
    assert (chunks[-1].model_extra or {})["citations"]

    # An abstention worded its own way: the reader decides before anything streams, so the
    # stream carries the service's own words and nothing has to be corrected afterwards.
    fake_generator.replies = ["Xin lỗi, tôi không tìm thấy thông tin về điều này."]
    chunks = list(
        client.chat.completions.create(
            model="rag-vi", messages=[{"role": "user", "content": Q170}], stream=True
        )
    )
    extra = chunks[-1].model_extra or {}
    assert extra["abstained"] is True and extra["citations"] == []
    assert _final_text(chunks).strip() == NOT_FOUND_VI
    assert "answer" not in extra


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([], "messages"),
        ([{"role": "user", "content": ""}], "empty"),
        ([{"role": "user", "content": " \n "}], "empty"),
        ([{"role": "user", "content": "x" * 2001}], "2000"),
        ([{"role": "system", "content": "Chỉ có lời nhắc hệ thống."}], "no user message"),
    ],
)
def test_bad_requests_get_422(client: OpenAI, messages: list[Any], why: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(model="rag-vi", messages=messages)
    assert why in json.dumps(err.value.body)


def test_the_generation_slot_is_freed(client: OpenAI, base_url: str, app: FastAPI) -> None:
    body = {"messages": [{"role": "user", "content": Q170}], "stream": True}
    for _ in range(3):  # clients that go away after the first chunk
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as r:
            next(r.iter_lines())
    assert _gate_free(app)
    resp = client.chat.completions.create(
        model="rag-vi", messages=[{"role": "user", "content": Q170}]
    )
    assert "170" in (resp.choices[0].message.content or "")
    assert _gate_free(app)


class SlowGenerator(FakeGenerator):
    """The fake engine with a pause before every piece: generations last as long as needed."""

    def __init__(self, delay: float) -> None:
        super().__init__(replies=["Hơn 170 thỏa thuận hợp tác đã được ký kết [1]. " * 40])
        self.delay = delay
        self.stopped = threading.Event()

    def stream_chat(self, messages: Any, *, max_tokens: int, temperature: float) -> Iterator[str]:
        try:
            for piece in super().stream_chat(
                messages, max_tokens=max_tokens, temperature=temperature
            ):
                time.sleep(self.delay)
                yield piece
        finally:
            self.stopped.set()


def test_answers_over_the_time_limit_are_stopped(settings: Settings, rag: RAG) -> None:
    settings.request_timeout_s = 0.6
    slow = SlowGenerator(delay=0.05)
    rag._generator = slow
    app = create_app(settings, rag=rag)
    with serve(app) as url, OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        messages: Any = [{"role": "user", "content": Q170}]
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="rag-vi", messages=messages)
        assert err.value.status_code == 504
        assert slow.stopped.wait(5) and _gate_free(app)

        slow.replies = ["Hơn 170 thỏa thuận hợp tác đã được ký kết [1]. " * 40]
        slow.stopped.clear()
        pieces: list[str] = []
        with pytest.raises(openai.APIError) as stream_err:
            for chunk in client.chat.completions.create(
                model="rag-vi", messages=messages, stream=True
            ):
                pieces.extend(c.delta.content or "" for c in chunk.choices)
        assert "time limit" in str(stream_err.value)
        # The reader decides before it streams, so a stopped answer sent no answer text.
        assert "170" not in "".join(pieces)
        assert slow.stopped.wait(5) and _gate_free(app)


def test_reads_can_require_a_key(settings: Settings, rag: RAG) -> None:
    settings.api_keys = ["s3cret"]
    settings.require_key_for_reads = True
    with serve(create_app(settings, rag=rag)) as url:
        messages: Any = [{"role": "user", "content": Q170}]
        with (
            OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.chat.completions.create(model="rag-vi", messages=messages)
        with OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0) as good:
            resp = good.chat.completions.create(model="rag-vi", messages=messages)
            assert "170" in (resp.choices[0].message.content or "")
        doc = f"{url}/v1/documents/{SOURCE}"
        assert httpx.get(doc).status_code == 401
        ok = httpx.get(doc, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["name"] == SOURCE


# --- GET /v1/models ---------------------------------------------------------------------------
def test_models_list(client: OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models] == ["rag-vi"]
    assert models[0].object == "model" and models[0].owned_by


# --- GET /v1/documents/{name} -----------------------------------------------------------------
@pytest.fixture
def tc(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def test_document_text_matches_the_citations(tc: TestClient, corpus: Path) -> None:
    answer = tc.post("/v1/ask", json={"question": Q170}).json()
    cites = answer["citations"] + answer["passages"]
    assert answer["citations"][0]["source"] == SOURCE
    for c in cites:
        r = tc.get(f"/v1/documents/{c['source']}")
        assert r.status_code == 200
        doc = r.json()
        assert set(doc) == {"name", "title", "date", "author", "text_source", "pages", "text"}
        assert doc["text_source"] == "file" and doc["pages"] == []
        assert doc["name"] == c["source"]
        assert doc["text"] == _original(corpus, c["source"])
        assert doc["text"][c["start"] : c["end"]] == c["text"]
    doc = tc.get(f"/v1/documents/{SOURCE}").json()
    assert doc["title"] == "Ngoại giao kinh tế tạo đà bứt phá cho tăng trưởng năm 2025"


def test_unknown_document_is_404(tc: TestClient, corpus: Path) -> None:
    assert tc.get("/v1/documents/khong-co.txt").status_code == 404
    # a file in the folder that is not indexed is not served either
    (corpus / "chua-lap-chi-muc.txt").write_text("Bí mật", encoding="utf-8")
    assert tc.get("/v1/documents/chua-lap-chi-muc.txt").status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fpyproject.toml",
        "%2E%2E%2Farticles%2F003_1f44b7b7ded05db5.txt",
        "..%5C..%5Cpyproject.toml",
        ".hidden.txt",
        "%2Fetc%2Fpasswd",
        "003_1f44b7b7ded05db5.py",
    ],
)
def test_unsafe_document_names_are_refused(tc: TestClient, name: str) -> None:
    r = tc.get(f"/v1/documents/{name}")
    assert r.status_code in (404, 422), r.text
    assert "text" not in r.json()
