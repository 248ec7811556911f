"""Shared dependencies: the RAG service, the generation gate, time limits and API-key checks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request

from rag.service import RAG
from rag.settings import Settings

log = logging.getLogger("rag.api")
T = TypeVar("T")

#: Status logged when the client went away before its answer was ready (nginx's convention);
#: nobody receives the response.
CLIENT_CLOSED = 499


class GenerationGate:
    """``slots`` generations at a time (one for the local model on the CPU; more for a remote
    model server, which batches them), a bounded queue in front, 503 beyond it.

    ``acquire`` either takes the slot, or raises 503 (more than ``max_waiting`` requests are
    already queued) or 504 (the slot did not come free within ``timeout`` seconds). Both carry
    ``Retry-After``: the time the queue ahead should take, from how long recent generations
    held the slot (``retry_after_s`` until one has finished; at most ``MAX_RETRY_AFTER_S``).
    Whoever acquired calls ``release`` exactly once, when the generation has really ended
    (``pump``'s ``on_finish``), so a stopped generation frees the slot only after the model has
    stopped.
    """

    MAX_RETRY_AFTER_S = 60

    def __init__(self, max_waiting: int, *, retry_after_s: int = 5, slots: int = 1) -> None:
        self._sem = asyncio.Semaphore(slots)
        self.slots = slots
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.waiting = 0
        self.active = 0
        #: Moving average of how long a generation holds the slot (None until one has ended).
        self.hold_s: float | None = None
        self._since = 0.0

    @property
    def busy(self) -> bool:
        return self._sem.locked()

    def retry_after(self) -> int:
        if self.hold_s is None:
            return self.retry_after_s
        ahead = self.hold_s * (self.waiting + 1) / self.slots
        return max(1, min(self.MAX_RETRY_AFTER_S, math.ceil(ahead)))

    async def acquire(self, timeout: float | None = None) -> None:
        if self.waiting >= self.max_waiting and self._sem.locked():
            raise HTTPException(
                503,
                f"the answer engine is busy ({self.waiting} questions waiting); retry shortly",
                headers={"Retry-After": str(self.retry_after())},
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._sem.acquire()
        except TimeoutError:
            raise HTTPException(
                504,
                f"no answer slot came free within the {timeout:g} s time limit "
                "(request_timeout_s); retry later",
                headers={"Retry-After": str(self.retry_after())},
            ) from None
        finally:
            self.waiting -= 1
        self.active += 1
        self._since = time.monotonic()

    def release(self) -> None:
        if self.active <= 0:  # a double release would let two generations run at once
            log.error("GenerationGate.release() without a matching acquire; ignored")
            return
        held = time.monotonic() - self._since
        self.hold_s = held if self.hold_s is None else 0.7 * self.hold_s + 0.3 * held
        self.active -= 1
        self._sem.release()


def get_rag(request: Request) -> RAG:
    rag: RAG = request.app.state.rag
    return rag


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_gate(request: Request) -> GenerationGate:
    gate: GenerationGate = request.app.state.gate
    return gate


RagDep = Annotated[RAG, Depends(get_rag)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GateDep = Annotated[GenerationGate, Depends(get_gate)]


# --- time limits and disconnects ---------------------------------------------------------------
def timeout_detail(limit: float) -> str:
    return (
        f"the answer took longer than the {limit:g} s time limit (request_timeout_s) and was "
        "stopped; ask again, perhaps with a smaller max_tokens"
    )


async def _client_gone(request: Request) -> None:
    """Return when the client disconnects (the request body has already been read)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a server that cannot tell: never report a disconnect
        log.debug("cannot watch for a disconnect", exc_info=True)
        await asyncio.Future()


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` as long as the client is connected.

    Servers do not cancel a handler whose client went away, so without this a request waiting
    for the answer slot (or a non-streamed generation) would go on for nobody. When the client
    disconnects first, ``work`` is cancelled (``pump`` then stops the generation, which frees
    the slot) and the request ends with status 499, which only the access log sees.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise HTTPException(CLIENT_CLOSED, "the client closed the connection")


async def until_deadline(events: AsyncIterator[T], deadline: float) -> AsyncIterator[T]:
    """Items of ``events`` until the loop's clock reaches ``deadline``, then ``TimeoutError``.

    ``events`` is closed in every case, which (for ``pump``) stops the worker at its next step.
    """
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(events)
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


# --- API keys ------------------------------------------------------------------------------------
def _key_ok(request: Request, keys: list[str]) -> bool:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token or not keys:
        return False
    # Digests have one length, and every key is compared (no early exit), so the time taken
    # tells nothing about the keys.
    digest = hashlib.sha256(token.encode()).digest()
    ok = False
    for key in keys:
        ok |= secrets.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return ok


def _unauthorized() -> HTTPException:
    # No detail beyond the status: nothing says whether a key was missing, malformed or wrong.
    return HTTPException(401, headers={"WWW-Authenticate": "Bearer"})


WRITES_CLOSED = (
    "writes are disabled: no API key is configured. Set RAG_API_KEYS='[\"<key>\"]' and send "
    "`Authorization: Bearer <key>`, or, on a single-user machine, RAG_ALLOW_OPEN_WRITES=true"
)


def write_mode(settings: Settings) -> str:
    """One line saying who may upload and delete, for the start-up log."""
    if settings.api_keys:
        return f"writes need one of {len(settings.api_keys)} API key(s)"
    if settings.allow_open_writes:
        return "writes are OPEN to anyone who can reach the port (RAG_ALLOW_OPEN_WRITES=true)"
    return "writes are disabled (no RAG_API_KEYS set; uploads and deletes answer 403)"


def require_write_key(request: Request, settings: SettingsDep) -> None:
    """Uploads, deletes, restores and purges: a key when keys are set; with none, refused
    unless ``allow_open_writes`` — the default is closed."""
    if settings.api_keys:
        if not _key_ok(request, settings.api_keys):
            raise _unauthorized()
        return
    if not settings.allow_open_writes:
        raise HTTPException(403, WRITES_CLOSED)


def require_read_key(request: Request, settings: SettingsDep) -> None:
    """With ``require_key_for_reads``, reads need a key too (refused if none is configured)."""
    if settings.require_key_for_reads and not _key_ok(request, settings.api_keys):
        raise _unauthorized()


WriteAuth = Depends(require_write_key)
ReadAuth = Depends(require_read_key)
