"""Run a blocking event generator in a worker thread and consume it from async code.

The worker owns the generator from start to close, so a client that goes away only sets a flag:
the worker stops at the next token, closes the generator (which stops llama.cpp) and only then
frees the generation slot.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from rag.generation.cancel import cancellation

T = TypeVar("T")
_END = object()


async def pump(
    make: Callable[[], Iterator[T]], on_finish: Callable[[], None] | None = None
) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            # Engines check this flag between tokens: a generation in progress stops too.
            with cancellation(stop):
                gen = make()
                try:
                    for item in gen:
                        if stop.is_set():
                            break
                        put(item)
                finally:
                    close = getattr(gen, "close", None)
                    if close is not None:
                        close()
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(exc)
        finally:
            put(_END)

    future = loop.run_in_executor(None, work)
    if on_finish is not None:
        future.add_done_callback(lambda _: on_finish())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
