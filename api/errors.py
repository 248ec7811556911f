"""One error body for every 4xx and 5xx (`ErrorBody`): the handlers that send it, and the
OpenAPI entries that document it, so that a client generated from the schema parses every error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from api.schemas import ErrorBody
from rag.generation import EngineUnavailable
from rag.service import QuestionError

log = logging.getLogger("rag.api")

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again.",
        "schema": {"type": "integer"},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: _RETRY_AFTER,
    504: _RETRY_AFTER,
}
DESCRIPTIONS: dict[int, str] = {
    400: "The body could not be read at all: not UTF-8, nested too deeply, a broken form.",
    401: "A Bearer key is needed and none, or a wrong one, was sent (the body says no more).",
    403: "Writes are disabled: no API key is configured (`detail` names the settings).",
    404: "No such resource.",
    413: "The upload is larger than `max_upload_bytes`.",
    422: "Refused: `errors` lists the fields that failed validation; a request the service "
    "refuses for what it says (an empty or too long question, a bad file) has `detail` only.",
    500: "An unexpected error (a bug): the server log has the traceback.",
    503: "The answer engine is busy (queue full), loading or restarting after a crash; retry "
    "after `Retry-After` seconds.",
    504: "No answer within the time limit (`request_timeout_s`): stopped.",
}


def error_responses(*codes: int, notes: Mapping[int, str] | None = None) -> dict[int | str, Any]:
    """OpenAPI `responses=` entries for ``codes``, each an `ErrorBody`; ``notes`` replace the
    generic descriptions where a route can say more."""
    notes = notes or {}
    out: dict[int | str, Any] = {}
    for code in codes:
        description = notes.get(code) or DESCRIPTIONS[code]
        entry: dict[str, Any] = {"model": ErrorBody, "description": description}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out


def error_response(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if errors is not None:
        body["errors"] = errors
    try:
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate echoed from the input: escape it
        content = json.dumps(body, ensure_ascii=True).encode("ascii")
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Not FastAPI's own list: it echoes the input, which JSON cannot always encode (1e999).
    return [
        {
            "type": str(e.get("type", "")),
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
        }
        for e in exc.errors()
    ]


def _summary(errors: list[dict[str, Any]], shown: int = 3) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:shown]]
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "invalid request: " + "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Send every error as an `ErrorBody` and make the OpenAPI document say so."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        errors = _field_errors(exc)
        return error_response(422, _summary(errors), errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(EngineUnavailable)
    async def engine_down(_: Request, exc: EngineUnavailable) -> Response:
        return error_response(503, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(QuestionError)
    async def bad_question(_: Request, exc: QuestionError) -> Response:
        return error_response(422, f"invalid question: {exc}")

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> Response:
        # Starlette logs the traceback (it re-raises after sending this); no internals here.
        return error_response(500, "internal server error; the server log has the details")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Make every documented 4xx/5xx an `ErrorBody` in JSON, in place.

    Routes document their errors with `error_responses`; this catches the rest: FastAPI's own
    422 entry (`HTTPValidationError`, a `detail` list this API never sends) on a route that
    did not document its 422, error entries given without a body, and the media type FastAPI
    gives error entries of a route whose success is not JSON (`/metrics`: text/plain).
    """
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for code, response in operation.get("responses", {}).items():
                if code[:1] in ("4", "5"):
                    response["content"] = {"application/json": {"schema": dict(_ERROR_REF)}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if "ErrorBody" not in components:  # no route documented one through `error_responses`
        own = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(own.pop("$defs", {}))
        components["ErrorBody"] = own
    return schema
