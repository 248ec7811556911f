"""Stopping a generation whose caller went away (client disconnect, time limit).

The HTTP layer runs each answer in a worker thread inside ``cancellation(event)``; engines
call ``cancelled()`` between tokens and raise ``Cancelled``. A context variable carries the
event, so the service in between needs no extra argument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol


class _Flag(Protocol):
    def is_set(self) -> bool: ...


class Cancelled(Exception):
    """The caller stopped waiting; the generation was stopped at the next token."""


_current: ContextVar[_Flag | None] = ContextVar("rag_cancel", default=None)


@contextmanager
def cancellation(flag: _Flag) -> Iterator[None]:
    token = _current.set(flag)
    try:
        yield
    finally:
        _current.reset(token)


def cancelled() -> bool:
    flag = _current.get()
    return flag is not None and flag.is_set()


def check() -> None:
    if cancelled():
        raise Cancelled("the generation was stopped: its caller went away")
