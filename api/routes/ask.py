"""Question answering routes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from fastapi import APIRouter, HTTPException, Request
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
from api.schemas import AskRequest, AskResponse, Filters
from api.streaming import pump
from rag.generation import ChatMessage, EngineUnavailable
from rag.service import QuestionError, StreamEvent
from rag.types import Answer

log = logging.getLogger("rag.api")
router = APIRouter(tags=["answers"])

Make = Callable[[], Iterator[StreamEvent]]


def _event_json(ev: StreamEvent) -> dict[str, str]:
    if ev.kind == "passages":
        data = json.dumps({"passages": [p.model_dump() for p in ev.passages]}, ensure_ascii=False)
    elif ev.kind == "token":
        data = json.dumps({"text": ev.token}, ensure_ascii=False)
    else:
        assert ev.answer is not None
        data = ev.answer.model_dump_json()
    return {"event": ev.kind, "data": data}


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _error_event(status: int, detail: str) -> dict[str, str]:
    return {
        "event": "error",
        "data": json.dumps({"status": status, "detail": detail}, ensure_ascii=False),
    }


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    dependencies=[ReadAuth],
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
        **error_responses(
            400, 401, 422, 503, 504,
            notes={
                401: "A Bearer key is required (`require_key_for_reads`)",
                422: "Empty, too long or malformed question (`errors` lists bad fields)",
                503: "Queue full, or the answer engine is loading or restarting after a "
                "crash; retry after the Retry-After seconds",
                504: "The answer exceeded the time limit and was stopped",
            },
        ),
    },
)  # fmt: skip
async def ask(
    body: AskRequest, request: Request, rag: RagDep, gate: GateDep, settings: SettingsDep
) -> object:
    """Answer a question from the articles, citing the passages it used.

    The answer text carries `[n]` markers; each citation gives the article's file name
    (`source`) and the character offsets of the passage in that file, so that
    `file[start:end] == text`. When the articles do not hold the answer, `abstained` is true,
    the answer says so, and `passages` still lists the nearest passages.

    With `"stream": true` the response is Server-Sent Events: one `passages` event (the
    evidence, sent before the model starts), `token` events with the answer text, and a final
    `done` event carrying the same JSON as the non-streaming answer. The reader decides (answer
    or "not found", with its `confidence`) before it streams, so the tokens are exactly the
    final answer. A client that disconnects stops the generation. If the answer engine's
    process dies, the stream ends with an `error` event (`{"status": 503, ...}`) and the
    engine restarts by itself; while it is down, asks get 503 with `Retry-After`.

    Answers are produced one at a time. When too many questions are already waiting the
    response is 503 with `Retry-After`. A question that takes longer than the time limit
    (waiting included) is stopped: 504, or, once a stream has started, a last `error` event
    (`{"status": 504, "detail": ...}`) instead of `done`.
    """
    if not all(_is_unicode(t) for t in [body.question, *(t.content for t in body.history)]):
        # JSON may escape lone surrogates ("\ud800"); no model or response can encode them.
        raise QuestionError("the text is not valid Unicode (it holds a lone surrogate)")
    question = rag.check_question(body.question)
    f = body.filters or Filters()
    rag.filters(f.sources, f.date_from, f.date_to)  # an unknown article: 422 before queueing
    rag.check_engine()
    history: list[ChatMessage] = [{"role": t.role, "content": t.content} for t in body.history]
    limit = settings.request_timeout_s
    deadline = asyncio.get_running_loop().time() + limit

    @observed(request, stream=body.stream)
    def make() -> Iterator[StreamEvent]:
        return rag.stream(
            question, top_k=body.top_k, history=history, max_tokens=body.max_tokens,
            sources=f.sources, date_from=f.date_from, date_to=f.date_to,
        )  # fmt: skip

    if not body.stream:
        return await unless_client_leaves(
            request, answer_within_limits(gate, make, deadline, limit)
        )
    events, first = await unless_client_leaves(request, _start(gate, make, deadline, limit))
    return EventSourceResponse(_sse(events, first, limit), ping=15)


async def answer_within_limits(
    gate: GenerationGate, make: Make, deadline: float, limit: float
) -> Answer:
    """Wait for the generation slot, run to the `done` event, 504 past the time limit."""
    await gate.acquire(timeout=limit)
    # From here the slot belongs to pump's worker, which frees it when the generation has ended.
    answer = None
    try:
        async for ev in until_deadline(pump(make, on_finish=gate.release), deadline):
            if ev.kind == "done":
                answer = ev.answer
    except TimeoutError:
        raise HTTPException(504, timeout_detail(limit)) from None
    assert answer is not None
    return answer


async def _start(
    gate: GenerationGate, make: Make, deadline: float, limit: float
) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
    """Take the slot and run retrieval before the stream starts, so errors are still HTTP ones."""
    await gate.acquire(timeout=limit)
    events = until_deadline(pump(make, on_finish=gate.release), deadline)
    try:
        first = await anext(events)  # the `passages` event; the worker now owns the slot
    except TimeoutError:
        raise HTTPException(504, timeout_detail(limit)) from None
    return events, first


async def _sse(
    events: AsyncIterator[StreamEvent], first: StreamEvent, limit: float
) -> AsyncIterator[dict[str, str]]:
    try:
        yield _event_json(first)
        async for ev in events:
            yield _event_json(ev)
    except TimeoutError:
        yield _error_event(504, timeout_detail(limit))
    except EngineUnavailable as exc:
        yield _error_event(503, str(exc))
    except Exception as exc:  # the stream has started: report in-band
        log.exception("answer stream failed")
        yield _error_event(500, f"the answer failed: {exc}")
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
