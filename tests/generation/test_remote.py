"""The remote answer engine against scripted model-server replies (httpx's mock transport).

The real server (llama-cpp-python's, with the small model) is in tests/e2e/test_model_server.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from rag.generation import EngineUnavailable
from rag.generation.cancel import Cancelled, cancellation
from rag.generation.remote import RemoteGenerator

MESSAGES = [{"role": "user", "content": "Thủ đô của Việt Nam?"}]


def sse(*events: object) -> bytes:
    out = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (out + "data: [DONE]\n\n").encode()


def chunk(content: str, logprob: float | None = None, finish: str | None = None) -> dict:
    choice: dict = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    if logprob is not None:
        choice["logprobs"] = {"content": [{"token": content, "logprob": logprob}]}
    return {"choices": [choice]}


def engine(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> RemoteGenerator:
    kw.setdefault("model", "m")
    kw.setdefault("backoff_s", 0.0)
    return RemoteGenerator(
        "http://models.test/v1",
        transport=httpx.MockTransport(handler),
        **kw,  # type: ignore[arg-type]
    )


def test_streams_the_pieces_and_sends_an_openai_request() -> None:
    seen: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        assert req.url.path == "/v1/chat/completions"
        assert req.headers["authorization"] == "Bearer k"
        return httpx.Response(
            200, content=sse(chunk("Hà "), chunk("Nội"), chunk("", finish="stop"))
        )

    pieces = list(engine(handler, api_key="k").stream_chat(MESSAGES, max_tokens=7, temperature=0.0))
    assert pieces == ["Hà ", "Nội"]
    assert seen[0]["model"] == "m" and seen[0]["max_tokens"] == 7 and seen[0]["stream"] is True
    assert seen[0]["messages"] == MESSAGES


def test_complete_collects_the_token_logprobs_and_how_it_ended() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert json.loads(req.content)["logprobs"] is True
        return httpx.Response(200, content=sse(
            chunk("Hà", -0.1), chunk(" Nội", -0.3), chunk("", finish="length"),
            {"choices": [], "usage": {"prompt_tokens": 41, "prompt_tokens_details": {"cached_tokens": 30}}},
        ))  # fmt: skip

    c = engine(handler).complete(MESSAGES, max_tokens=2)
    assert c.text == "Hà Nội"
    assert c.token_logprobs == [-0.1, -0.3]
    assert c.finished is False  # cut by max_tokens
    assert (c.prompt_tokens, c.cached_tokens) == (41, 30)
    assert c.first_token_s >= 0.0


def test_a_server_without_logprobs_gives_none_and_scoring_is_not_offered() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(chunk("25"), chunk("", finish="stop")))

    g = engine(handler, logprobs=False)
    c = g.complete(MESSAGES, max_tokens=5)
    assert c.text == "25" and c.token_logprobs == [] and c.finished
    assert g.score(MESSAGES, ["Không tìm thấy."]) == []


def test_the_model_name_is_asked_once_when_not_configured() -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.path)
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "qwen-1.5b"}]})
        assert json.loads(req.content)["model"] == "qwen-1.5b"
        return httpx.Response(200, content=sse(chunk("x", finish="stop")))

    g = engine(handler, model="")
    for _ in range(2):
        assert list(g.stream_chat(MESSAGES, max_tokens=3, temperature=0)) == ["x"]
    assert calls.count("/v1/models") == 1 and g.name == "qwen-1.5b"


def test_connection_errors_are_retried_then_unavailable_with_what_to_do() -> None:
    attempts = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=req)

    g = engine(handler, retries=2)
    with pytest.raises(EngineUnavailable, match=r"cannot be reached.*RAG_LLM_URL") as err:
        g.complete(MESSAGES, max_tokens=3)
    assert attempts == 3  # one try and two retries
    assert err.value.retry_after > 0
    assert g.state().state == "failed" and "cannot be reached" in g.state().detail


def test_a_connection_that_recovers_within_the_retries_answers() -> None:
    attempts = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts < 2:
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, content=sse(chunk("ok", finish="stop")))

    g = engine(handler, retries=2)
    assert g.complete(MESSAGES, max_tokens=3).text == "ok"
    assert g.state().state == "ready"


def test_a_busy_server_passes_its_retry_after_on_and_is_not_retried() -> None:
    attempts = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        return httpx.Response(
            503, headers={"Retry-After": "17"}, json={"error": {"message": "overloaded"}}
        )

    with pytest.raises(EngineUnavailable, match=r"busy.*overloaded") as err:
        engine(handler).complete(MESSAGES, max_tokens=3)
    assert err.value.retry_after == 17 and attempts == 1


@pytest.mark.parametrize("status", [400, 404, 500])
def test_a_refused_request_is_unavailable_with_the_servers_reason(status: int) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "context too long"}})

    with pytest.raises(
        EngineUnavailable, match=f"refused the request \\({status}: context too long"
    ):
        engine(handler).complete(MESSAGES, max_tokens=3)


def test_a_read_timeout_is_unavailable_not_a_hang() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    with pytest.raises(EngineUnavailable, match="did not answer in time"):
        engine(handler).complete(MESSAGES, max_tokens=3)


def test_an_error_event_mid_stream_is_unavailable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(chunk("Hà"), {"error": {"message": "killed"}}))

    with pytest.raises(EngineUnavailable, match="error mid-answer"):
        list(engine(handler).stream_chat(MESSAGES, max_tokens=3, temperature=0))


def test_a_caller_that_went_away_stops_the_stream() -> None:
    class Flag:
        def __init__(self) -> None:
            self.set = False

        def is_set(self) -> bool:
            return self.set

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(*[chunk(f"t{i} ") for i in range(50)]))

    flag = Flag()
    got: list[str] = []
    with cancellation(flag), pytest.raises(Cancelled):
        for piece in engine(handler).stream_chat(MESSAGES, max_tokens=50, temperature=0):
            got.append(piece)
            if len(got) == 3:
                flag.set = True
    assert len(got) == 3


def test_a_server_that_refuses_logprobs_is_asked_without_them_from_then_on() -> None:
    bodies: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        bodies.append(body)
        if "logprobs" in body:
            return httpx.Response(400, json={"error": {"message": "unknown field logprobs"}})
        return httpx.Response(200, content=sse(chunk("25"), chunk("", finish="stop")))

    g = engine(handler)
    assert g.complete(MESSAGES, max_tokens=5).text == "25"
    assert g.complete(MESSAGES, max_tokens=5).token_logprobs == []
    assert ["logprobs" in b for b in bodies] == [True, False, False]
    assert g.state().state == "ready"


def test_a_stream_cut_short_by_the_server_is_an_error_not_an_empty_answer() -> None:
    """llama-cpp-python's server, by default, ends a streaming answer with [DONE] and no
    finish_reason when another request arrives: taken as whole, the answer would be empty."""

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(chunk("Hà")))  # [DONE], no finish_reason

    g = engine(handler)
    with pytest.raises(EngineUnavailable, match=r"before it finished.*interrupt_requests"):
        g.complete(MESSAGES, max_tokens=5)
    with pytest.raises(EngineUnavailable, match="before it finished"):
        list(g.stream_chat(MESSAGES, max_tokens=5, temperature=0))
