"""Article files as people have them, made from the bundled articles: HTML pages with a news
site's furniture (menus, related headlines, footers), PDFs, DOCX files, and broken ones.

``measure`` scores an extraction of a page against the article it was made from: the share of
the article's own sentences recovered, and the furniture lines that leaked in.
"""

from __future__ import annotations

import html
import io
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

from rag.context import sentences
from rag.ingest.clean import clean_article

ROOT = Path(__file__).resolve().parent.parent
ARTICLES = ROOT / "data" / "articles"
NAMES = sorted(p.name for p in ARTICLES.glob("*.txt"))
#: A Unicode TTF with the Vietnamese glyphs that is always there: matplotlib (a dependency)
#: ships DejaVu Sans.
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"

SITE = "Báo Điện tử Tin Việt"
AUTHOR = "Minh Anh"
NAV = [
    "Trang chủ", "Thời sự", "Chính trị", "Kinh tế", "Thế giới", "Xã hội", "Pháp luật",
    "Văn hóa", "Giáo dục", "Thể thao", "Công nghệ", "Video", "Podcast", "E-paper",
]  # fmt: skip
BREADCRUMB = ["Trang chủ", "Thời sự", "Ngoại giao"]
SHARE = ["Chia sẻ", "Facebook", "Zalo", "Sao chép liên kết", "In bài"]
MOST_READ = [
    "Giá vàng hôm nay tăng mạnh, vượt mốc 90 triệu đồng mỗi lượng",
    "Hà Nội công bố phương án phân luồng giao thông dịp Tết Nguyên đán",
    "Đội tuyển Việt Nam công bố danh sách 26 cầu thủ dự giải Đông Nam Á",
    "Dự báo thời tiết: miền Bắc đón đợt không khí lạnh tăng cường",
    "Ngân hàng Nhà nước điều chỉnh lãi suất điều hành từ tuần sau",
]
FOOTER = [
    f"© 2025 {SITE}. Giữ bản quyền.",
    "Giấy phép hoạt động báo điện tử số 123/GP-BTTTT do Bộ Thông tin và Truyền thông cấp ngày 01/02/2023.",
    "Tổng biên tập: Nguyễn Văn Mẫu",
    "Tòa soạn: Số 12 phố Mẫu, quận Hoàn Kiếm, Hà Nội",
    "Điện thoại: 024 3999 9999 – Email: toasoan@tinviet.example",
    "Liên hệ quảng cáo: 0912 345 678",
    f"Chỉ được phát hành lại thông tin từ website này khi có sự đồng ý bằng văn bản của {SITE}.",
]
SEE_ALSO = [
    "Việt Nam và Nhật Bản nâng cấp quan hệ lên Đối tác chiến lược toàn diện",
    "Xuất khẩu nông sản sang châu Âu tăng trưởng hai con số",
]
AD = "Quảng cáo: Vay mua nhà lãi suất ưu đãi chỉ từ 5,9%/năm"
COMMENTS = ["Bình luận (0)", "Gửi bình luận", "Ý kiến của bạn sẽ được biên tập trước khi đăng."]
TAGS = "Từ khóa: ngoại giao kinh tế, Bộ Ngoại giao, hội nhập quốc tế"
CAPTION = "Quang cảnh hội nghị. (Ảnh: TTXVN)"


@dataclass(frozen=True)
class Article:
    name: str
    title: str
    body: list[str]  # the article's own paragraphs, as the project's cleaner keeps them
    date: str  # dd/mm/yyyy

    @property
    def iso_date(self) -> str:
        d, m, y = self.date.split("/")
        return f"{y}-{m}-{d}"

    def sentences(self) -> list[str]:
        """The article's own sentences (long enough to be unambiguous when found)."""
        out = []
        for para in self.body:
            for s, e in sentences(para):
                sent = " ".join(para[s:e].split())
                if len(sent) >= 20:
                    out.append(sent)
        return out


def article(name: str) -> Article:
    """A bundled article: its title and own paragraphs (the scraped file minus its furniture,
    as ``clean_article`` keeps it: tests/ingest/test_clean.py checks that by hand)."""
    doc = clean_article((ARTICLES / name).read_text(encoding="utf-8"))
    lines = doc.text.split("\n\n")
    return Article(name, lines[0], lines[1:], doc.date or "20/12/2024")


def _heading(line: str) -> bool:
    return len(line) <= 150 and not line.endswith(tuple(".!?…:;\"”)'"))


def related(name: str) -> list[str]:
    """Headlines of the other bundled articles, as a site's related-news list shows them."""
    return [article(n).title for n in NAMES if n != name]


# --- HTML pages -------------------------------------------------------------------------------
def news_page(a: Article, *, author: str = AUTHOR) -> str:
    """A news site's page for ``a``: head metadata, scripts, menu, breadcrumb, share bar, the
    article with a photo, tags, related and most-read lists, comments and a footer."""
    e = html.escape
    nav = "".join(f'<li><a href="/{i}">{e(t)}</a></li>' for i, t in enumerate(NAV))
    crumbs = " › ".join(f'<a href="/c{i}">{e(t)}</a>' for i, t in enumerate(BREADCRUMB))
    share = "".join(f'<a class="share" href="#s{i}">{e(t)}</a>' for i, t in enumerate(SHARE))
    # Short unpunctuated lines of the body are its subheadings.
    paras = [f"<h2>{e(p)}</h2>" if _heading(p) else f"<p>{e(p)}</p>" for p in a.body]
    photo = (
        '<figure class="photo"><img src="/img/1.jpg" alt="Quang cảnh hội nghị">'
        f"<figcaption>{e(CAPTION)}</figcaption></figure>"
    )
    paras.insert(min(1, len(paras)), photo)
    # A "see also" box and an advert inside the article body, as news sites place them.
    box = "".join(f'<li><a href="/x{i}">{e(t)}</a></li>' for i, t in enumerate(SEE_ALSO))
    paras.insert(min(4, len(paras)), f'<div class="see-also"><p>Xem thêm:</p><ul>{box}</ul></div>')
    paras.insert(min(6, len(paras)), f'<div class="ads"><span>{e(AD)}</span></div>')
    rel = "".join(
        f'<li><a href="/r{i}"><img src="/t{i}.jpg" alt=""></a><h3><a href="/r{i}">{e(t)}</a></h3>'
        "</li>"
        for i, t in enumerate(related(a.name))
    )
    most = "".join(f'<li><a href="/m{i}">{e(t)}</a></li>' for i, t in enumerate(MOST_READ))
    comments = "".join(f"<p>{e(t)}</p>" for t in COMMENTS)
    footer = "".join(f"<p>{e(t)}</p>" for t in FOOTER)
    time_text = "/".join(str(int(x)) for x in a.date.split("/"))
    return f"""<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8">
<title>{e(a.title)} | {e(SITE)}</title>
<meta property="og:title" content="{e(a.title)}">
<meta property="og:site_name" content="{e(SITE)}">
<meta name="author" content="{e(author)}">
<meta property="article:published_time" content="{a.iso_date}T18:30:00+07:00">
<link rel="canonical" href="https://tinviet.example/thoi-su/{a.name[:3]}.html">
<style>body{{font-family:sans-serif}} .menu li{{display:inline}}</style>
<script>window.ads = {{slot: "top", sizes: [728, 90]}}; function track(){{return 1;}}</script>
</head><body>
<header><div class="logo"><a href="/">{e(SITE)}</a></div>
<nav class="menu"><ul>{nav}</ul></nav></header>
<div class="breadcrumb">{crumbs}</div>
<main><article class="detail">
<h1 class="title">{e(a.title)}</h1>
<div class="meta"><span class="author">{e(author)}</span> ·
<time datetime="{a.iso_date}T18:30:00+07:00">{time_text} 18:30</time></div>
<div class="share-bar">{share}</div>
<div class="content">{"".join(paras)}</div>
<div class="tags">{e(TAGS)}</div>
</article>
<section class="related"><h2>Tin liên quan</h2><ul>{rel}</ul></section>
<aside class="most-read"><h2>Đọc nhiều</h2><ol>{most}</ol></aside>
<section class="comments">{comments}</section>
</main>
<footer class="site-footer">{footer}</footer>
<script>track();</script>
</body></html>
"""


#: Furniture the measure checks, by kind: none of the nav and footer lines may leak.
def furniture(name: str) -> dict[str, list[str]]:
    return {
        "nav": list(dict.fromkeys([*NAV, *BREADCRUMB, *SHARE])),
        "related": [*related(name), *MOST_READ, *SEE_ALSO, "Tin liên quan", "Đọc nhiều"],
        "footer": [*FOOTER, *COMMENTS],
        "other": [TAGS, CAPTION, AD],  # reported, not held to zero
    }


_BLOCK = {
    "address", "article", "aside", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip -= 1
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def visible_text(page: str) -> str:
    """The page's text as a plain scraper saves it (one line per block, scripts dropped): what
    the project's cleaner was written for."""
    p = _VisibleText()
    p.feed(page)
    lines = (" ".join(ln.split()) for ln in "".join(p.out).split("\n"))
    return "\n".join(ln for ln in lines if ln)


# --- the measure ------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass
class Score:
    recovered: int
    sentences: int
    leaked: dict[str, list[str]] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.recovered / self.sentences if self.sentences else 1.0

    def leak_rate(self, kind: str) -> float:
        return len(self.leaked.get(kind, [])) / self.checked[kind] if self.checked[kind] else 0.0


def measure(extracted: str, a: Article) -> Score:
    """How much of ``a`` an extraction of its page recovered, and which furniture leaked in.

    A sentence is recovered if it appears in the extraction (whitespace aside). A furniture
    line leaked if a line of the extraction contains it (long lines) or is made of nothing but
    furniture items (short ones, like menu entries run together)."""
    flat = _norm(extracted)
    out_lines = [_norm(ln) for ln in extracted.splitlines() if ln.strip()]
    sents = a.sentences()
    score = Score(sum(s in flat for s in sents), len(sents))
    kinds = furniture(a.name)
    short = sorted({_norm(t) for ts in kinds.values() for t in ts if len(t) < 25}, key=len)[::-1]
    pure = set()
    for ln in out_lines:
        rest = ln
        for item in short:
            rest = rest.replace(item, " ")
        if not re.search(r"\w", rest):
            pure.add(ln)
    for kind, items in kinds.items():
        score.checked[kind] = len(items)
        for item in items:
            t = _norm(item)
            hit = (
                any(t in ln for ln in out_lines)
                if len(t) >= 25
                else any(t in ln for ln in pure) or t in out_lines
            )
            if hit:
                score.leaked.setdefault(kind, []).append(item)
    return score


# --- PDF, DOCX --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pdf:
    data: bytes
    #: the page (from 1) each paragraph starts on
    pages: dict[str, int]


def make_pdf(a: Article, *, break_before: str = "", author: str = AUTHOR) -> Pdf:
    """``a`` typeset as a PDF with a text layer (DejaVu Sans, so Vietnamese has its glyphs);
    ``break_before``: the paragraph holding this text starts a new page."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(a.title)
    pdf.set_author(author)
    pdf.add_font("DejaVu", fname=str(FONT))
    pdf.add_page()
    pdf.set_font("DejaVu", size=16)
    pdf.multi_cell(0, 8, a.title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("DejaVu", size=11)
    pages = {a.title: 1}
    for para in a.body:
        if break_before and break_before in para:
            pdf.add_page()
        pages[para] = pdf.page_no()
        pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    return Pdf(bytes(pdf.output()), pages)


def scanned_pdf(a: Article) -> bytes:
    """A PDF of one page that is only a picture of text (as a scanner makes it): no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(FONT), 28)
    y = 80
    for para in [a.title, *a.body[:3]]:
        for k in range(0, len(para), 70):
            draw.text((80, y), para[k : k + 70], fill=0, font=font)
            y += 40
        y += 20
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.image(io.BytesIO(buf.getvalue()), x=0, y=0, w=210)
    return bytes(pdf.output())


def encrypted_pdf(data: bytes, password: str = "mat-khau", algorithm: str = "RC4-128") -> bytes:
    """``data`` (a PDF) encrypted, as a "protect PDF" tool does: with a password to open it,
    or with ``password=""`` only against editing (it opens with no password)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password="chu-so-huu", algorithm=algorithm)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def pages_holding(pdf: bytes, snippet: str) -> list[int]:
    """The pages (from 1) whose text, as pypdf reads each page alone, holds ``snippet``
    (whitespace aside): a check of page numbers that does not use the service's offsets."""
    from pypdf import PdfReader

    want = _norm(snippet)
    pages = PdfReader(io.BytesIO(pdf)).pages
    return [i for i, p in enumerate(pages, 1) if want in _norm(p.extract_text() or "")]


def make_docx(a: Article, *, author: str = AUTHOR) -> bytes:
    """``a`` as a Word document: the title as a heading, one paragraph each, author set."""
    import docx

    d = docx.Document()
    d.core_properties.title = a.title
    d.core_properties.author = author
    d.add_heading(a.title, level=1)
    for para in a.body:
        d.add_paragraph(para)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def binary_blob(n: int = 4096) -> bytes:
    """Bytes that are no text at all (NULs included): an image or archive under a wrong name."""
    return bytes((i * 37 + 11) % 256 for i in range(n))


def bad_files(name: str) -> dict[str, tuple[str, bytes]]:
    """Broken files made from article ``name``, by kind: (file name, bytes)."""
    a = article(name)
    pdf = make_pdf(a).data
    docx = make_docx(a)
    return {
        "scanned": ("scan.pdf", scanned_pdf(a)),
        "encrypted": ("locked.pdf", encrypted_pdf(pdf)),
        "truncated-pdf": ("cut.pdf", pdf[: len(pdf) // 2]),
        "truncated-docx": ("cut.docx", docx[: len(docx) // 2]),
        "binary-html": ("blob.html", binary_blob()),
    }
