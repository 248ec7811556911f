"""OpenAI-compatible endpoints, so that existing chat clients and SDKs can use the service.

`POST /v1/chat/completions` answers the last user message from the articles (with the earlier
turns as history) and returns the standard `chat.completion` object, or a stream of
`chat.completion.chunk` Server-Sent Events, plus two extra fields: `citations` and `abstained`.
`GET /v1/models` lists the one model this service is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from api.deps import (
    GateDep,
    GenerationGate,
    RagDep,
    ReadAuth,
    SettingsDep,
    timeout_detail,
    unless_client_leaves,
    until_deadline,
)
from api.errors import error_responses
from api.metrics import observed
from api.routes.ask import answer_within_limits as _answer
from api.schemas import Filters
from api.streaming import pump
from rag.generation import ChatMessage, EngineUnavailable
from rag.service import QuestionError, StreamEvent
from rag.types import Answer, Citation

log = logging.getLogger("rag.api")
router = APIRouter(tags=["openai-compatible"])

MODEL_ID = "rag-vi"
"""The name the service answers to; any `model` in a request is accepted and echoed back."""
CREATED = int(time.time())
MAX_HISTORY = 20
"""Earlier user/assistant messages kept as history (the most recent ones)."""

Make = Callable[[], Iterator[StreamEvent]]

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"


# --- request ---------------------------------------------------------------------------------
class ContentPart(BaseModel):
    """One part of a multi-part message; only `text` parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = Field(None, max_length=20000)


class Message(BaseModel):
    """A chat message; `content` may be a string or a list of `{"type": "text", ...}` parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Field(max_length=20000)] | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(BaseModel):
    include_usage: bool = Field(
        False, description="Send a last chunk with `usage` and no choices before `[DONE]`."
    )


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions request; fields not listed here are accepted and ignored."""

    model: str | None = Field(None, description="Ignored except that it is echoed back.")
    messages: list[Message] = Field(
        min_length=1,
        max_length=200,
        description="The conversation. The last `user` message is the question; earlier "
        "`user`/`assistant` messages are the history; `system` messages are ignored.",
    )
    stream: bool = Field(False, description="Stream `chat.completion.chunk` events (SSE).")
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=2048, description="Longest answer, in tokens.")
    max_completion_tokens: int | None = Field(
        None, ge=1, le=2048, description="Same as `max_tokens` (the newer name)."
    )
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Sampling temperature (server default when absent)."
    )
    filters: Filters | None = Field(
        None,
        description="Not OpenAI: search only some articles or dates (the SDKs send it with "
        '`extra_body={"filters": {...}}`).',
    )


EXAMPLES: dict[str, Any] = {
    "simple": {
        "summary": "One question",
        "value": {"model": MODEL_ID, "messages": [{"role": "user", "content": Q170}]},
    },
    "follow-up": {
        "summary": "A follow-up question with the earlier turns",
        "value": {
            "model": MODEL_ID,
            "messages": [
                {"role": "system", "content": "(ignored)"},
                {"role": "user", "content": Q170},
                {
                    "role": "assistant",
                    "content": "Hơn 170 thỏa thuận hợp tác đã được ký kết. [1]",
                },
                {"role": "user", "content": "Quan hệ đối ngoại được mở rộng thế nào?"},
            ],
        },
    },
    "streaming": {
        "summary": "Streamed, with a usage chunk at the end",
        "value": {
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": Q170}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 200,
            "temperature": 0,
        },
    },
}


# --- responses -------------------------------------------------------------------------------
class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    """A standard `chat.completion`, plus `citations` and `abstained`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    citations: list[Citation] = Field(
        default_factory=list,
        description="Passages cited by the answer's [n] markers, as in `/v1/ask`.",
    )
    abstained: bool = Field(
        False, description="True when the articles do not hold the answer and the service said so."
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- helpers ---------------------------------------------------------------------------------
def split_conversation(messages: list[Message]) -> tuple[str, list[ChatMessage]]:
    """The last user message, and the user/assistant messages before it (most recent kept)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise QuestionError("the messages hold no user message")
    history: list[ChatMessage] = [
        {"role": m.role, "content": m.text()}
        for m in messages[:last]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    return messages[last].text(), history[-MAX_HISTORY:]


def _usage(answer: Answer) -> Usage:
    t = answer.timings_ms
    return Usage(
        prompt_tokens=t.prompt_tokens,
        completion_tokens=t.generated_tokens,
        total_tokens=t.prompt_tokens + t.generated_tokens,
    )


def _chunk(
    cid: str, created: int, model: str, delta: dict[str, str], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _data(obj: dict[str, Any] | str) -> dict[str, str]:
    return {"data": obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}


# --- routes ----------------------------------------------------------------------------------
@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    dependencies=[ReadAuth],
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "A `chat.completion` JSON object, or `chat.completion.chunk` "
            "Server-Sent Events ending with `data: [DONE]` when `stream` is true.",
        },
        **error_responses(
            400, 401, 422, 503, 504,
            notes={
                401: "A Bearer key is required (`require_key_for_reads`)",
                422: "No user message, an empty or too long question, or bad fields",
                504: "The answer exceeded the time limit and was stopped",
            },
        ),
    },
)  # fmt: skip
async def chat_completions(
    body: Annotated[ChatCompletionRequest, Body(openapi_examples=EXAMPLES)],
    request: Request,
    rag: RagDep,
    gate: GateDep,
    settings: SettingsDep,
) -> Any:
    """Answer the conversation's last user message from the articles, in the OpenAI shape.

    This endpoint speaks the OpenAI chat-completions protocol, so the official `openai`
    SDKs and chat front-ends work with it unchanged: point them at
    `base_url="http://HOST:PORT/v1"` with any API key. It is the same question answering as
    `POST /v1/ask` (retrieval over the indexed articles, then a grounded answer with `[n]`
    markers), only in another envelope:

    - **`messages`**: the last `user` message is the question (1–2,000 characters, else 422).
      The `user` and `assistant` messages before it are the conversation history, which
      lets follow-up questions ("Còn năm 2023 thì sao?") be understood; only the most recent
      20 are kept. `system`/`developer` messages are ignored: the service uses its own
      instructions. Content may be a string or a list of `{"type": "text", "text": ...}`
      parts (other parts are ignored).
    - **`model`** is not used to choose anything; it is echoed back (`rag-vi` when absent).
    - **`max_tokens`** (or `max_completion_tokens`) and **`temperature`** are passed to the
      answer model. Other OpenAI fields (`n`, `stop`, `tools`, …) are accepted and ignored.

    The non-streaming response is a `chat.completion` object: `choices[0].message.content`
    is the answer, `finish_reason` is `stop`, and `usage.completion_tokens` counts the
    generated tokens. Two fields are added at the top level:

    - **`citations`**: the passages cited by the `[n]` markers, exactly as in `/v1/ask`:
      `n`, `source` (the file name), `start`/`end` (offsets in the file, so that
      `file[start:end] == text`), `text`, `score` and `title`. Fetch the whole article with
      `GET /v1/documents/{source}`.
    - **`abstained`**: true when the articles do not hold the answer; the content then says
      so ("Không tìm thấy thông tin này trong các bài viết.") and `citations` is empty.

    With the official Python client these extra fields are in `completion.model_extra` (or
    `completion.to_dict()`).

    With **`"stream": true`** the response is Server-Sent Events, each a
    `data: {chat.completion.chunk}` line: first a chunk whose delta has the `assistant` role,
    then one chunk per piece of answer text (`delta.content`), then a final chunk with an
    empty delta, `finish_reason: "stop"` and the extra `citations` and `abstained` fields
    (the reader decides before it streams, so the streamed text is the final answer).
    With `stream_options.include_usage` a chunk with `usage` and no choices
    follows. The stream ends with `data: [DONE]`. A client that disconnects stops the
    generation.

    Answers are produced one at a time; when too many requests are waiting the response is
    503 with `Retry-After`. An answer that takes longer than the time limit
    (`request_timeout_s`, waiting included) is stopped: 504, or, once a stream has started, a
    last `data: {"error": {...}}` event, which the OpenAI clients raise as an `APIError`.
    With `require_key_for_reads` the request needs `Authorization: Bearer <key>` (the SDKs'
    `api_key`).
    """
    question, history = split_conversation(body.messages)
    question = rag.check_question(question)
    f = body.filters or Filters()
    rag.filters(f.sources, f.date_from, f.date_to)  # an unknown article: 422 before queueing
    rag.check_engine()
    max_tokens = body.max_tokens or body.max_completion_tokens
    model = body.model or MODEL_ID
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    limit = settings.request_timeout_s
    deadline = asyncio.get_running_loop().time() + limit

    @observed(request, stream=body.stream)
    def make() -> Iterator[StreamEvent]:
        return rag.stream(
            question,
            history=history,
            max_tokens=max_tokens,
            temperature=body.temperature,
            sources=f.sources,
            date_from=f.date_from,
            date_to=f.date_to,
        )

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = await unless_client_leaves(request, _start(gate, make, deadline, limit))
        return EventSourceResponse(
            _sse(events, cid, created, model, limit, include_usage=include_usage), ping=15
        )
    answer = await unless_client_leaves(request, _answer(gate, make, deadline, limit))
    return ChatCompletion(
        id=cid,
        created=created,
        model=model,
        choices=[Choice(message=AssistantMessage(content=answer.answer))],
        usage=_usage(answer),
        citations=answer.citations,
        abstained=answer.abstained,
    )


async def _start(
    gate: GenerationGate, make: Make, deadline: float, limit: float
) -> AsyncIterator[StreamEvent]:
    """Take the slot and run retrieval before the stream starts, so errors are still HTTP ones."""
    await gate.acquire(timeout=limit)
    events = until_deadline(pump(make, on_finish=gate.release), deadline)
    try:
        await anext(events)  # the `passages` event; the worker now owns the slot
    except TimeoutError:
        raise HTTPException(504, timeout_detail(limit)) from None
    return events


def _error(message: str, kind: str, code: int) -> dict[str, str]:
    """An in-band error, as OpenAI sends once a stream has started (the SDKs raise APIError)."""
    return _data({"error": {"message": message, "type": kind, "code": code}})


async def _sse(
    events: AsyncIterator[StreamEvent],
    cid: str,
    created: int,
    model: str,
    limit: float,
    *,
    include_usage: bool,
) -> AsyncIterator[dict[str, str]]:
    streamed: list[str] = []
    answer: Answer | None = None
    try:
        yield _data(_chunk(cid, created, model, {"role": "assistant", "content": ""}))
        async for ev in events:
            if ev.kind == "token" and ev.token:
                streamed.append(ev.token)
                yield _data(_chunk(cid, created, model, {"content": ev.token}))
            elif ev.kind == "done":
                answer = ev.answer
    except TimeoutError:
        yield _error(timeout_detail(limit), "timeout", 504)
        return
    except EngineUnavailable as exc:
        yield _error(str(exc), "engine_unavailable", 503)
        return
    except Exception as exc:  # the stream has started: report in-band
        log.exception("chat completion stream failed")
        yield _error(f"the answer failed: {exc}", "server_error", 500)
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    assert answer is not None
    final = _chunk(cid, created, model, {}, "stop")
    sent = "".join(streamed).rstrip()
    if answer.answer != sent:
        if answer.answer.startswith(sent):  # e.g. a citation marker added by grounding
            tail = answer.answer[len(sent) :]
            if "".join(streamed) != sent:  # trailing whitespace already sent
                tail = tail.lstrip()
            yield _data(_chunk(cid, created, model, {"content": tail}))
        else:
            final["answer"] = answer.answer
    final["citations"] = [c.model_dump() for c in answer.citations]
    final["abstained"] = answer.abstained
    yield _data(final)
    if include_usage:
        usage = _chunk(cid, created, model, {})
        usage["choices"] = []
        usage["usage"] = _usage(answer).model_dump()
        yield _data(usage)
    yield _data("[DONE]")


@router.get("/v1/models", response_model=ModelList)
def list_models() -> ModelList:
    """The models this endpoint answers to, in the OpenAI `list` shape.

    There is one, `rag-vi`: question answering over the indexed articles. Chat front-ends
    that ask for the model list before chatting (as most do) can pick it; any other name sent
    as `model` to `/v1/chat/completions` is accepted too.
    """
    return ModelList(data=[ModelCard(id=MODEL_ID, created=CREATED, owned_by="rag-vi")])
