"""Vietnamese-aware text normalisation shared by ingestion, retrieval, grounding and evaluation."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)
# Vietnamese letters that do not decompose into base + combining mark.
_FOLD_EXTRA = str.maketrans({"đ": "d", "Đ": "D"})
_VI_MARKS = set("ăâđêôơưàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def fold(text: str) -> str:
    """Lower-case and strip diacritics: "Chỉ thị" -> "chi thi" (as people type without accents)."""
    decomposed = unicodedata.normalize("NFD", text.translate(_FOLD_EXTRA).lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """NFC, lower-cased word tokens (Vietnamese syllables, numbers kept whole as 1.000 -> 1000)."""
    return _WORD.findall(normalize_numbers(nfc(text).lower()))


def normalize_numbers(text: str) -> str:
    """Unify number formats: "1.000" / "1,000" / "1 000" -> "1000"; "2,5" stays a decimal."""
    return re.sub(r"(?<=\d)[.,\u00a0 ](?=\d{3}(?!\d))", "", text)


def has_vietnamese_marks(text: str) -> bool:
    return any(c in _VI_MARKS for c in nfc(text).lower())


_EN_HINTS = {
    "the", "what", "which", "who", "when", "how", "many", "much", "did", "does", "is", "are",
    "was", "were", "of", "in", "to", "and", "for", "with", "about", "why", "where", "vietnam",
}  # fmt: skip


def looks_english(text: str) -> bool:
    """True for a question written in English (Vietnamese typed without accents is not English)."""
    if has_vietnamese_marks(text):
        return False
    toks = words(text)
    if not toks:
        return False
    hits = sum(t in _EN_HINTS for t in toks)
    return hits >= 2 or hits / len(toks) >= 0.25
