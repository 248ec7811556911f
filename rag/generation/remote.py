"""An answer engine on another machine: any OpenAI-compatible model server.

vLLM, llama.cpp's ``llama-server`` and llama-cpp-python's server all speak the same
``/v1/chat/completions`` protocol. This engine talks to one over HTTP (``httpx``):

- ``stream_chat``: ``stream: true``, the server-sent ``delta.content`` pieces;
- ``complete``: the same streamed call with ``logprobs: true``, so the reader gets the
  log-probability of every token the model chose (``choices[].logprobs.content[].logprob``);
  a server that sends none gives ``[]`` and the reader decides without those signals;
- ``score``: ``[]``. The OpenAI protocol has no way to ask how likely a *given* reply is; the
  closest, ``/v1/completions`` with ``echo``, needs the model's chat template on this side, and
  llama-cpp-python's implementation of it is off by one token and sorts the whole vocabulary for
  every prompt token (minutes per question). The reader treats the missing signal as "no
  information" (see ``Calibration.probability``).

Failures are never a hang and never a 500: connect and read timeouts; connection errors are
retried with back-off (``retries``), nothing is retried once the server has accepted a
request; every failure is ``EngineUnavailable`` (HTTP 503 with ``Retry-After``) saying what
happened and what to check.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from rag.generation.base import ChatMessage, Completion, EngineState, EngineUnavailable, Generator
from rag.generation.cancel import check

log = logging.getLogger("rag.remote")

#: Statuses a model server uses for "busy, come back later".
_BUSY = {429, 503}


class Refused(EngineUnavailable):
    """The model server answered the request with an error status (kept for the fallback)."""

    def __init__(self, message: str, *, status: int, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class RemoteGenerator(Generator):
    """A model behind an OpenAI-compatible HTTP API. Safe to use from several threads."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "",
        api_key: str = "",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        logprobs: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.logprobs = logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=None
        )
        self._client = httpx.Client(
            base_url=self.base_url + "/", headers=headers, timeout=timeout, transport=transport
        )
        self._model = model
        self._model_lock = threading.Lock()
        self.name = model or "remote"
        self._last_error = ""
        self._failures = 0

    # --- the model's name ------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The configured model name, else the first one the server lists (asked once)."""
        with self._model_lock:
            if not self._model:
                with self._request("GET", "models") as resp:
                    data = _json(resp, self.base_url)
                try:
                    self._model = str(data["data"][0]["id"])
                except (KeyError, IndexError, TypeError):
                    raise self._unavailable(
                        "lists no model at /models; set RAG_LLM_MODEL", retry_after=30
                    ) from None
                self.name = self._model
            return self._model

    # --- HTTP ------------------------------------------------------------------------------
    def _unavailable(self, what: str, *, retry_after: int = 5) -> EngineUnavailable:
        self._last_error = f"the model server at {self.base_url} {what}"
        return EngineUnavailable(self._last_error, retry_after=retry_after)

    @contextmanager
    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Iterator[httpx.Response]:
        """One request, its response open for streaming. Connection failures are retried;
        anything after the server accepted the request is not (it may be generating)."""
        attempt = 0
        while True:
            try:
                req = self._client.build_request(method, path, json=body)
                resp = self._client.send(req, stream=True)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retries:
                    self._failures += 1
                    raise self._unavailable(
                        f"cannot be reached ({type(exc).__name__}: {exc}) after "
                        f"{attempt + 1} attempts; start it, or check RAG_LLM_URL"
                    ) from exc
                time.sleep(self.backoff_s * 2**attempt)
                attempt += 1
            except httpx.TimeoutException as exc:
                self._failures += 1
                raise self._unavailable(f"did not answer in time ({exc})") from exc
            except httpx.HTTPError as exc:
                self._failures += 1
                raise self._unavailable(f"failed ({type(exc).__name__}: {exc})") from exc
        try:
            if resp.status_code >= 400:
                detail = _error_text(resp)
                if resp.status_code in _BUSY:
                    raise self._unavailable(
                        f"is busy ({resp.status_code}: {detail})",
                        retry_after=_retry_after(resp),
                    )
                err = self._unavailable(f"refused the request ({resp.status_code}: {detail})")
                raise Refused(str(err), status=resp.status_code, retry_after=err.retry_after)
            self._failures = 0
            self._last_error = ""
            yield resp
        except httpx.TimeoutException as exc:
            raise self._unavailable(
                f"stopped sending within the read timeout (RAG_LLM_READ_TIMEOUT_S) ({exc})"
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise self._unavailable(
                f"closed the connection mid-answer ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            resp.close()

    def _events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The server-sent events of a streamed chat completion, as dicts."""
        with self._request("POST", "chat/completions", body) as resp:
            for line in resp.iter_lines():
                check()  # the caller went away: closing the response stops the server too
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise self._unavailable(
                        f"sent an event that is not JSON: {data[:200]!r}"
                    ) from None
                if isinstance(event, dict) and "error" in event:
                    raise self._unavailable(f"reported an error mid-answer: {event['error']}")
                if isinstance(event, dict):
                    yield event

    def _body(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }

    # --- the Generator interface -------------------------------------------------------------
    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        body = self._body(messages, max_tokens=max_tokens, temperature=temperature)
        finish = None
        for event in self._events(body):
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece
                finish = choice.get("finish_reason") or finish
        self._check_finished(finish)

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        contrast: list[ChatMessage] | None = None,
        alpha: float = 0.0,
    ) -> Completion:
        # ``contrast`` is not used: the protocol gives no logits to combine (plain decoding).
        body = self._body(messages, max_tokens=max_tokens, temperature=temperature)
        body["stream_options"] = {"include_usage": True}
        if not self.logprobs:
            return self._complete(body)
        try:
            return self._complete({**body, "logprobs": True, "top_logprobs": 0})
        except Refused as exc:
            if exc.status not in (400, 422):
                raise
            # A server that does not take the field: answer without token probabilities from
            # now on (the reader then decides on the evidence signals; see the README).
            log.warning("the model server refused logprobs (%s); asking without them", exc)
            self.logprobs = False
            return self._complete(body)

    def _complete(self, body: dict[str, Any]) -> Completion:
        t0 = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        logprobs: list[float] = []
        finish = None
        prompt_tokens = cached = 0
        for event in self._events(body):
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter() - t0
                    pieces.append(piece)
                for tok in (choice.get("logprobs") or {}).get("content") or []:
                    if isinstance(tok, dict) and isinstance(tok.get("logprob"), int | float):
                        logprobs.append(float(tok["logprob"]))
                finish = choice.get("finish_reason") or finish
            usage = event.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or prompt_tokens)
            details = usage.get("prompt_tokens_details") or {}
            cached = int(details.get("cached_tokens") or cached)
        self._check_finished(finish)
        total = time.perf_counter() - t0
        return Completion(
            text="".join(pieces),
            token_logprobs=logprobs,
            finished=finish != "length",
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            first_token_s=first if first is not None else total,
            decode_s=total - (first if first is not None else total),
        )

    def _check_finished(self, finish: object) -> None:
        """A stream that ends without a ``finish_reason`` was cut short by the server (an
        answer taken for a whole one would be silently truncated, often empty)."""
        if finish is None:
            raise self._unavailable(
                "ended the answer before it finished (no finish_reason); llama-cpp-python's "
                "server does that to a request when another arrives unless it runs with "
                "`--interrupt_requests false` (as `rag serve-model` starts it)"
            )

    def score(self, messages: list[ChatMessage], candidates: list[str]) -> list[list[float]]:
        return []  # see the module docstring: no portable way to score a given reply

    def state(self) -> EngineState:
        if self._last_error:
            return EngineState("failed", detail=self._last_error, info={"url": self.base_url})
        return EngineState("ready", detail=f"remote model server {self.base_url}",
                           info={"url": self.base_url})  # fmt: skip

    def unavailable(self) -> EngineUnavailable | None:
        # Fail fast only after repeated connection failures; one probe per request otherwise.
        if self._failures >= 3 and self._last_error:
            try:
                with self._request("GET", "models"):
                    pass
            except EngineUnavailable as exc:
                return exc
        return None

    def close(self) -> None:
        self._client.close()


def _json(resp: httpx.Response, url: str) -> Any:
    try:
        return json.loads(resp.read())
    except ValueError:
        raise EngineUnavailable(
            f"the model server at {url} sent a reply that is not JSON"
        ) from None


def _error_text(resp: httpx.Response) -> str:
    try:
        raw = resp.read()
    except httpx.HTTPError:
        return "(no body)"
    try:
        body = json.loads(raw)
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:300]
    except ValueError:
        return raw.decode("utf-8", "replace")[:300]


def _retry_after(resp: httpx.Response) -> int:
    try:
        return max(1, min(300, int(float(resp.headers.get("Retry-After", "5")))))
    except ValueError:
        return 5
