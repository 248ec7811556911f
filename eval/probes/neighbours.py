"""Probe helper (issue 12): evidence sentences with the sentence before each (``PROBE_NEIGHBOURS``
in ``prompt_drafts.py``). Wraps ``rag.context.evidence_sentences``: the same items, each
widened backwards by one sentence of its passage, best-ranked passage first, while the added
characters stay within ``extra``."""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rag.context import sentences
from rag.types import Passage


def with_neighbours(pick: Callable[..., list[Passage]], extra: int) -> Callable[..., list[Passage]]:
    def widened(passages: list[Passage], question: str, **kw: Any) -> list[Passage]:
        items = pick(passages, question, **kw)
        by_id = {p.chunk.id: p for p in passages}
        added = 0
        out = []
        for item in items:
            whole = by_id.get(item.chunk.id)
            text = whole.chunk.text if whole else ""
            at = text.find(item.chunk.text) if whole else -1
            if at > 0 and added < extra:
                before = [s for s, e in sentences(text) if e <= at]
                taken = {o.chunk.text for o in items}
                if before:
                    start = before[-1]
                    prev = text[start:at]
                    if (not any(prev.strip() and prev.strip() in o for o in taken)
                            and added + len(prev) <= extra):  # fmt: skip
                        added += len(prev)
                        item = replace(
                            item,
                            chunk=replace(item.chunk, text=text[start : at + len(item.chunk.text)]),
                        )
            out.append(item)
        return out

    return widened
