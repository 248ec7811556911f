"""Prometheus metrics at `GET /metrics`: requests by route template and status, answer timings,
abstentions, the answer queue, engine restarts and the index size.

Each app has its own registry (tests build many apps in one process). Label values are bounded:
the route is the template (`/v1/documents/{name}`), never the raw path, and whatever is not an
API route (static files, unknown paths) is `other`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector
from starlette.datastructures import State
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ReadAuth
from api.errors import error_responses
from rag.service import StreamEvent
from rag.types import Answer

METRICS_PATH = "/metrics"
#: The classic text format, which `generate_latest` writes and every Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: First token takes 1–3 s on the CPU with the default model, a whole answer up to a minute.
ANSWER_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120)
ENGINE_STATES = ("ready", "loading", "restarting", "failed", "not-loaded")

Make = Callable[[], Iterator[StreamEvent]]


class Metrics:
    """The app's registry and the metrics updated as requests and answers go by."""

    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rag_http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "rag_http_request_duration_seconds",
            "Time from the request to the end of its response (a whole stream for SSE).",
            ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "rag_answer_first_token_seconds",
            "From the question to the first answer token (the answer's timings_ms.first_token).",
            ["route", "stream"], buckets=ANSWER_BUCKETS, registry=r,
        )  # fmt: skip
        self.answer = Histogram(
            "rag_answer_seconds", "Whole answers (the answer's timings_ms.total).",
            ["route", "stream"], buckets=ANSWER_BUCKETS, registry=r,
        )  # fmt: skip
        self.abstentions = Counter(
            "rag_abstentions", "Answers that said the articles do not hold the answer.",
            ["route", "stream"], registry=r,
        )  # fmt: skip
        r.register(_ServiceCollector(state))
        ProcessCollector(registry=r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method if method in METHODS else "other", route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_answer(self, route: str, stream: bool, answer: Answer) -> None:
        labels = (route, "true" if stream else "false")
        t = answer.timings_ms
        if t.first_token is not None:
            self.first_token.labels(*labels).observe(t.first_token / 1000)
        self.answer.labels(*labels).observe(t.total / 1000)
        if answer.abstained:
            self.abstentions.labels(*labels).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector:
    """What is read at scrape time: the answer queue, the engine, the index."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        gate = getattr(self.state, "gate", None)  # set in lifespan
        if gate is not None:
            yield GaugeMetricFamily(
                "rag_answer_queue_waiting", "Questions waiting for an answer slot.", gate.waiting
            )
            yield GaugeMetricFamily(
                "rag_answer_queue_active", "Answers being generated now.", gate.active
            )
            yield GaugeMetricFamily("rag_answer_slots", "Answers generated at once.", gate.slots)
        rag = getattr(self.state, "rag", None)
        if rag is None:
            return
        engine = rag.engine_state()
        restarts = engine.get("restarts", 0)
        yield CounterMetricFamily(
            "rag_answer_engine_restarts",
            "Times the answer engine's process was restarted after dying.",
            value=restarts if isinstance(restarts, int) else 0,
        )
        states = GaugeMetricFamily(
            "rag_answer_engine_state", "1 for the answer engine's current state.", labels=["state"]
        )
        for name in ENGINE_STATES:
            states.add_metric([name], 1.0 if engine.get("state") == name else 0.0)
        yield states
        index = rag.index  # one reference: files and chunks of the same generation
        yield GaugeMetricFamily("rag_index_files", "Indexed articles.", len(index.files))
        yield GaugeMetricFamily("rag_index_chunks", "Indexed passages.", len(index.chunks))


def route_label(scope: Scope) -> str:
    """The route template the request matched, or `other` (static files, unknown paths)."""
    route = scope.get("route")
    return route.path if isinstance(route, Route) else "other"


class RequestMetrics:
    """ASGI middleware: count and time every request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # an exception before the response started: the server sends 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_label(scope)
            if route != METRICS_PATH:  # scrapes would count themselves
                seconds = time.perf_counter() - t0
                self.metrics.observe_request(scope["method"], route, status, seconds)


def observed(request: Request, *, stream: bool) -> Callable[[Make], Make]:
    """Decorate an answer's event source so that its `done` event is recorded (timings,
    abstention), streamed or not; the route label is the request's route template."""
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    route = route_label(request.scope)

    def wrap(make: Make) -> Make:
        if metrics is None:
            return make

        def events() -> Iterator[StreamEvent]:
            inner = make()
            try:
                for ev in inner:
                    if ev.kind == "done" and ev.answer is not None:
                        metrics.observe_answer(route, stream, ev.answer)
                    yield ev
            finally:
                close = getattr(inner, "close", None)
                if close is not None:  # stops the generation (pump closes this one)
                    close()

        return events

    return wrap


class PrometheusText(Response):
    media_type = CONTENT_TYPE


router = APIRouter(tags=["metrics"])


@router.get(
    METRICS_PATH,
    response_class=PrometheusText,
    dependencies=[ReadAuth],
    responses={
        200: {
            "description": "The metrics in the Prometheus text format.",
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
        **error_responses(401),
    },
)
def metrics(request: Request) -> Any:
    """Prometheus metrics: requests and latencies by route template and status, first-token and
    whole-answer times, abstentions, the answer queue (waiting, active), answer-engine
    restarts and state, and the index size (files, chunks). With `require_key_for_reads`
    the scrape needs `Authorization: Bearer <key>` like every read. The README lists each
    metric with its labels."""
    app_metrics: Metrics = request.app.state.metrics
    return PrometheusText(app_metrics.exposition())


def install_metrics(app: FastAPI) -> None:
    app.state.metrics = Metrics(app.state)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    app.include_router(router)
