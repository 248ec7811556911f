"""Question answering routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from api.deps import GateDep, RagDep
from api.schemas import AskRequest, AskResponse
from api.streaming import pump
from rag.generation import ChatMessage
from rag.service import StreamEvent

router = APIRouter(tags=["answers"])


def _event_json(ev: StreamEvent) -> dict[str, str]:
    if ev.kind == "passages":
        data = json.dumps({"passages": [p.model_dump() for p in ev.passages]}, ensure_ascii=False)
    elif ev.kind == "token":
        data = json.dumps({"text": ev.token}, ensure_ascii=False)
    else:
        assert ev.answer is not None
        data = ev.answer.model_dump_json()
    return {"event": ev.kind, "data": data}


@router.post(
    "/v1/ask",
    response_model=AskResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
        422: {"description": "Empty, too long or malformed question"},
        503: {"description": "Queue full; retry after the Retry-After seconds"},
    },
)
async def ask(body: AskRequest, rag: RagDep, gate: GateDep) -> object:
    """Answer a question from the articles, citing the passages it used.

    The answer text carries `[n]` markers; each citation gives the article's file name
    (`source`) and the character offsets of the passage in that file, so that
    `file[start:end] == text`. When the articles do not hold the answer, `abstained` is true,
    the answer says so, and `passages` still lists the nearest passages.

    With `"stream": true` the response is Server-Sent Events: one `passages` event (the
    evidence, sent before the model starts), `token` events with answer text, and a final
    `done` event carrying the same JSON as the non-streaming answer. A client that disconnects
    stops the generation.
    """
    question = rag.check_question(body.question)
    history: list[ChatMessage] = [{"role": t.role, "content": t.content} for t in body.history]
    await gate.acquire()

    def make():  # type: ignore[no-untyped-def]
        return rag.stream(question, top_k=body.top_k, history=history, max_tokens=body.max_tokens)

    events = pump(make, on_finish=gate.release)
    if body.stream:

        async def sse() -> AsyncIterator[dict[str, str]]:
            async for ev in events:
                yield _event_json(ev)

        return EventSourceResponse(sse(), ping=15)
    answer = None
    async for ev in events:
        if ev.kind == "done":
            answer = ev.answer
    return answer
