"""Narrowing a search: to some articles (file names), and to a range of article dates.

Filters apply before ranking: the dense and BM25 rankings are computed over the allowed chunks
only, so a filtered search still returns ``k`` passages when the allowed articles have them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np

_DMY = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$")
_ISO = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})")


class FilterError(ValueError):
    """A filter cannot be applied as given (an unknown article, an empty date range)."""


def article_date(text: str) -> date | None:
    """The date an article's metadata gives (``27/07/2025`` as the cleaner finds it in the
    text, or ISO ``2025-07-27`` as page metadata gives it); None if there is none."""
    if not text:
        return None
    m = _DMY.match(text)
    try:
        if m:
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        m = _ISO.match(text)
        if m:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class SearchFilter:
    """Which chunks a search may return. Empty fields do not filter.

    ``sources``: file names (as ``GET /v1/documents`` lists them). ``date_from``/``date_to``:
    inclusive bounds on the article date; an article without a known date is left out of a
    date-filtered search (it cannot be shown to be in the range).
    """

    sources: frozenset[str] | None = None
    date_from: date | None = None
    date_to: date | None = None

    @classmethod
    def of(
        cls,
        sources: Iterable[str] | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> SearchFilter | None:
        """A filter, or None when nothing is asked for."""
        names = frozenset(s.strip() for s in sources if s.strip()) if sources else None
        if not names and date_from is None and date_to is None:
            return None
        if date_from is not None and date_to is not None and date_from > date_to:
            raise FilterError(f"date_from {date_from} is after date_to {date_to}")
        return cls(names or None, date_from, date_to)

    def check(self, known: Mapping[str, object]) -> None:
        """Refuse file names the index does not hold (a typo would silently match nothing)."""
        if self.sources:
            unknown = sorted(self.sources - set(known))
            if unknown:
                raise FilterError(
                    f"no indexed article is named {', '.join(map(repr, unknown))}; "
                    "GET /v1/documents (or `rag documents list`) lists them"
                )

    def allows(self, source: str, article_date_text: str) -> bool:
        """Whether an article (file name, its date as indexed) may be searched."""
        if self.sources is not None and source not in self.sources:
            return False
        if self.date_from is None and self.date_to is None:
            return True
        d = article_date(article_date_text)
        if d is None:
            return False
        if self.date_from is not None and d < self.date_from:
            return False
        return not (self.date_to is not None and d > self.date_to)

    def rows(self, files: Mapping[str, str], rows_of: Mapping[str, np.ndarray]) -> np.ndarray:
        """The allowed rows, ascending: decided per article (``files``: name → date; a chunk
        carries its article's date), the rows taken from ``rows_of`` (name → its rows)."""
        parts = [rows_of[n] for n, d in files.items() if n in rows_of and self.allows(n, d)]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.sources:
            out["sources"] = sorted(self.sources)
        if self.date_from:
            out["date_from"] = self.date_from.isoformat()
        if self.date_to:
            out["date_to"] = self.date_to.isoformat()
        return out
