"""Copy-constrained answers: every phrase of the answer is copied from the evidence.

A small model reading Vietnamese passages often answers with words no passage holds: it
restates the question in its own words, or names a person or a figure from what it knows. With
this constraint the engine, at each step, takes the most likely token that keeps the answer a
sequence of *copied phrases*: the text after the last separator (a comma, semicolon, colon,
bracket, line break, sentence end, or the word "và"/"and"), list bullets and ``[n]`` markers
aside, must occur in one of the evidence texts (case-insensitive, NFC). The model still chooses
which phrases and where they end; it can no longer write a phrase the evidence does not hold. The
"not found" reply is one of the texts, so it can always be said.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_MARKER = re.compile(r"\[\d+\]")
_OPEN_MARKER = re.compile(r"\[\d*$")  # a marker being written at the end: "[", "[12"
_SEPARATOR = re.compile(r"[,;:()\n]|\.(?=\s|$)|\s(?:và|and)(?=\s|$)", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower()


class CopyConstraint:
    """Whether a partial answer is made of phrases copied from ``sources``."""

    def __init__(self, sources: Sequence[str]) -> None:
        # Separate the texts so that no phrase runs from the end of one into the next.
        self.haystack = "\x00".join(_norm(s) for s in sources)

    def open_phrase(self, text: str) -> str:
        """The phrase being written: what follows the last separator, markers and bullets
        aside, without surrounding spaces."""
        body = _OPEN_MARKER.sub("", _MARKER.sub(" ", text))
        last = _SEPARATOR.split(body)[-1]
        return _BULLET.sub("", last).strip()

    def allows(self, text: str) -> bool:
        phrase = _norm(self.open_phrase(text))
        return not phrase or phrase in self.haystack
