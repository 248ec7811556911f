"""Strip page furniture from scraped Vietnamese news articles while keeping exact offsets into
the original text, so citations can always be checked against the file."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_SEP = "\n\n"
# Body text needed before a related-news block may cut the tail: a widget near the top must
# never swallow the whole article.
_MIN_BODY_CHARS = 300
_MAX_CAPTION_CHARS = 250
_MAX_HEADLINE_CHARS = 250
# Zero-width characters are invisible in the page but are not str.isspace().
_INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"

_DATE_RE = re.compile(r"(?<!\d)(\d{1,2})[/-](\d{1,2})[/-](\d{4})(?!\d)")
_DATE_LINE_RE = re.compile(
    r"(?:(?:cập nhật|ngày đăng|đăng lúc|đăng ngày|xuất bản)\s*:?\s*)?"
    r"(?:(?:thứ\s*(?:hai|ba|tư|năm|sáu|bảy|[2-7])|chủ\s*nhật|cn)\s*,?\s*)?"
    r"(?:\d{1,2}[:h]\d{2}\s*[,|-]?\s*)?(?:ngày\s*)?\d{1,2}[/-]\d{1,2}[/-]\d{4}"
    r"(?:\s*[,|-]?\s*\d{1,2}[:h]\d{2}(?::\d{2})?)?(?:\s*\(?(?:gmt|utc)\s*[+-]\s*\d{1,2}\)?)?",
    re.IGNORECASE,
)
_FOLLOW_RE = re.compile(
    r"theo dõi\s+(.{1,60}?)\s+trên"
    r"(?:\s+(?:google news|google tin tức|facebook|zalo|youtube|tiktok|twitter|x))?\s*:?",
    re.IGNORECASE,
)
_QR_RE = re.compile(r"quét\s+(?:mã\s+)?qr\b", re.IGNORECASE)
# "Xem thêm: <headline>" inside the body is a link to another article, not content.
_INLINE_LINK_RE = re.compile(
    r"[>»\s]*(?:xem thêm|đọc thêm|tin liên quan|xem tiếp)\s*[:>»]+\s*\S", re.IGNORECASE
)
_CAPTION_RES = (
    re.compile(
        r"\((?:ảnh|nguồn|photo|video|đồ họa)(?:\s+minh\s+họa)?\s*(?::[^()]{0,80})?\)$", re.I
    ),
    re.compile(
        r"(?:^|[.!?”\"]\s*|\s[-–—]\s*)(?:ảnh|nguồn|photo|đồ họa)(?:\s+minh\s+họa)?\s*:"
        r"\s*[^.!?]{1,80}\.?\s*\|?$",
        re.IGNORECASE,
    ),
    re.compile(r"\|$"),  # figcaption remnant: "<caption>. Nguồn: X |"
    re.compile(r"(?:ảnh|hình)\s+minh\s+họa\.?", re.IGNORECASE),
)
_SENTENCE_END = tuple(".!?…:;\"”)'")
_FURNITURE_RE = re.compile(
    r"phiên bản (?:di động|máy tính)|(?:về|lên) đầu trang|in bài(?: viết)?|chia sẻ"
    r"|(?:gửi )?bình luận|quay lại"
)
# A bare heading introducing the related-news block of the page.
_MARKER_RE = re.compile(
    r"(?:tin |bài |bài viết |các tin )?(?:cùng chuyên mục|cùng chủ đề|liên quan)"
    r"|(?:các )?tin (?:bài )?khác|xem thêm|đọc thêm|đọc nhiều|(?:có thể bạn|bạn có thể) quan tâm"
    r"|tin (?:mới hơn|đã đăng|cũ hơn|mới nhất)"
)


@dataclass(frozen=True)
class CleanDocument:
    text: str  # cleaned text, NFC; kept lines separated by "\n\n"
    starts: list[int]  # starts[i]: offset in the original where text[i] comes from
    ends: list[int]  # ends[i]: offset just after the original character(s) text[i] comes from
    title: str
    date: str

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a span [start, end) of `text` (end > start) to the span of the original string it
        covers."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"bad span [{start}, {end}) for text of length {len(self.text)}")
        return self.starts[start], self.ends[end - 1]


@dataclass(frozen=True)
class _Line:
    no: int  # physical line number: tells adjacent lines from blank-separated ones
    text: str  # stripped and NFC
    starts: list[int]
    ends: list[int]

    @property
    def key(self) -> str:
        return " ".join(self.text.split())


def _nfc_map(s: str, lo: int, hi: int) -> tuple[str, list[int], list[int]]:
    """NFC of s[lo:hi], one combining sequence at a time, so every output character knows the
    original span it was composed from (NFD input is shorter after NFC)."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = lo
    while i < hi:
        j = i + 1
        while j < hi and (unicodedata.combining(s[j]) or _composes(s[i:j], s[j])):
            j += 1
        for ch in unicodedata.normalize("NFC", s[i:j]):
            out.append(ch)
            starts.append(i)
            ends.append(j)
        i = j
    return "".join(out), starts, ends


def _composes(seq: str, starter: str) -> bool:
    # A few starters still compose with what precedes them (Hangul jamo, some Indic vowels);
    # none is below U+0300, which keeps the common case free of normalisation calls.
    if ord(starter) < 0x300:
        return False
    nfc = unicodedata.normalize
    return nfc("NFC", seq + starter) != nfc("NFC", seq) + nfc("NFC", starter)


def _split_lines(original: str) -> list[_Line]:
    lines: list[_Line] = []
    pos = 0
    for no, raw in enumerate(original.split("\n")):
        lo, hi = pos, pos + len(raw)
        pos = hi + 1
        while lo < hi and (original[lo].isspace() or original[lo] in _INVISIBLE):
            lo += 1
        while hi > lo and (original[hi - 1].isspace() or original[hi - 1] in _INVISIBLE):
            hi -= 1
        if lo < hi:
            lines.append(_Line(no, *_nfc_map(original, lo, hi)))
    return lines


def _bare(text: str) -> str:
    return re.sub(r"^[\s:»›>«<.…|*-]+|[\s:»›>«<.…|*-]+$", "", text.casefold())


def _site_key(name: str) -> str:
    return " ".join(name.casefold().replace("&", " và ").split())


def _is_caption(text: str) -> bool:
    if _CAPTION_RES[3].fullmatch(text):
        return True
    return len(text) <= _MAX_CAPTION_CHARS and any(r.search(text) for r in _CAPTION_RES[:3])


def _is_furniture(text: str) -> bool:
    return (
        len(text) == 1
        or not any(c.isalnum() for c in text)
        or _FURNITURE_RE.fullmatch(_bare(text)) is not None
        or _DATE_LINE_RE.fullmatch(text) is not None
        or _FOLLOW_RE.fullmatch(text) is not None
        or (len(text) <= 200 and _QR_RE.search(text) is not None)
        or _INLINE_LINK_RE.match(text) is not None
        or _is_caption(text)
    )


def _is_marker(line: _Line) -> bool:
    return _MARKER_RE.fullmatch(_bare(line.text)) is not None


def _is_pair(a: _Line, b: _Line) -> bool:
    """A related-news headline printed twice (link text, then the headline under it)."""
    return a.key == b.key and len(a.text) <= _MAX_HEADLINE_CHARS and not a.text.endswith(".")


def _starts_related_list(lines: list[_Line], i: int) -> bool:
    if i + 1 >= len(lines) or not _is_pair(lines[i], lines[i + 1]):
        return False
    # Only a tail made mostly of headline pairs (each with a summary) counts, so one heading
    # the scraper happened to duplicate inside the body does not cut off the rest.
    rest = [ln for ln in lines[i:] if not _is_marker(ln)]
    pairs = others = k = 0
    while k < len(rest):
        if k + 1 < len(rest) and _is_pair(rest[k], rest[k + 1]):
            pairs, k = pairs + 1, k + 2
        else:
            others, k = others + 1, k + 1
    return others <= 2 * pairs + 2


def _cut_tail(lines: list[_Line]) -> list[_Line]:
    total = sum(len(ln.text) for ln in lines if not _is_marker(ln))
    before = 0
    end = len(lines)
    for i, ln in enumerate(lines):
        if before >= _MIN_BODY_CHARS and (
            # A marker in the first half is more likely an inline box than the page's tail.
            (_is_marker(ln) and total - before < before) or _starts_related_list(lines, i)
        ):
            end = i
            break
        if not _is_marker(ln):
            before += len(ln.text)
    return [ln for ln in lines[:end] if not _is_marker(ln)]


def _is_name(text: str) -> bool:
    """An author name alone ("Trung Hiếu") or an all-caps signature ("HỒNG NHUNG")."""
    words = text.split()
    if not 1 <= len(words) <= 5 or not all(
        w.replace(".", "").replace("-", "").isalpha() for w in words
    ):
        return False
    if text.isupper():
        return len(text) >= 2
    return 2 <= len(words) <= 4 and all(w[0].isupper() for w in words)


def _drop_bylines(lines: list[_Line]) -> list[_Line]:
    drop: set[int] = set()
    for i in range(1, len(lines)):  # between the title and the first real paragraph
        if len(lines[i].text) >= 100:
            break
        if _is_name(lines[i].text):
            drop.add(i)
    for i in range(len(lines) - 1, 0, -1):  # signature at the end of the body
        if not _is_name(lines[i].text):
            break
        drop.add(i)
    return [ln for i, ln in enumerate(lines) if i not in drop]


def _find_date(lines: list[_Line]) -> str:
    for ln in lines[:5]:
        for m in _DATE_RE.finditer(ln.text):
            day, month, year = (int(g) for g in m.groups())
            if 1 <= day <= 31 and 1 <= month <= 12:
                return f"{day:02d}/{month:02d}/{year}"
    return ""


def clean_article(original: str) -> CleanDocument:
    lines = _split_lines(original)
    captions = {ln.no for ln in lines if _is_caption(ln.text)}
    sites = {_site_key(m.group(1)) for ln in lines if (m := _FOLLOW_RE.fullmatch(ln.text))}
    content = [ln for ln in lines if not _is_furniture(ln.text)]
    heads = [ln for ln in content if not _is_marker(ln)]
    title = heads[0] if heads else None
    content = _cut_tail(content)

    kept: list[_Line] = []
    seen: set[str] = set()
    for ln in content:
        if ln.key in seen or _site_key(ln.text) in sites:
            continue
        seen.add(ln.key)
        # Image alt text: an unpunctuated line sitting directly on top of a photo caption.
        if (
            ln is not title
            and ln.no + 1 in captions
            and len(ln.text) <= 200
            and not ln.text.endswith(_SENTENCE_END)
        ):
            continue
        kept.append(ln)
    kept = _drop_bylines(kept)

    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for ln in kept:
        if parts:
            gap = ends[-1]  # separators point at the end of the previous segment
            parts.append(_SEP)
            starts.extend([gap] * len(_SEP))
            ends.extend([gap] * len(_SEP))
        parts.append(ln.text)
        starts.extend(ln.starts)
        ends.extend(ln.ends)
    title_text = title.text if title else ""
    return CleanDocument("".join(parts), starts, ends, title_text, _find_date(lines))
