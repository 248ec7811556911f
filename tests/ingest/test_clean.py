"""Tests for rag.ingest.clean: furniture removal on the real articles and exact offsets."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import pytest

from rag.ingest.clean import CleanDocument, clean_article

ARTICLES = Path(__file__).resolve().parents[2] / "data" / "articles"
NAMES = [
    "000_0a6a60240146a7b2.txt",
    "001_8edc742d7bef5736.txt",
    "002_f0839f41b8944c8b.txt",
    "003_1f44b7b7ded05db5.txt",
    "004_f840cf0540fc0e3d.txt",
]
SEP = "\n\n"


def _read(name: str) -> str:
    return (ARTICLES / name).read_text(encoding="utf-8")


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _segments(doc: CleanDocument) -> list[tuple[int, int]]:
    """[a, b) spans of the kept segments inside doc.text."""
    spans = []
    a = 0
    for part in doc.text.split(SEP):
        spans.append((a, a + len(part)))
        a += len(part) + len(SEP)
    return spans


def _check_offsets(original: str, doc: CleanDocument, seed: int) -> None:
    text = doc.text
    assert len(doc.starts) == len(text) == len(doc.ends)
    for ch, s, e in zip(text, doc.starts, doc.ends, strict=True):
        assert s < e if ch != "\n" else s == e
    assert doc.starts == sorted(doc.starts)
    assert doc.ends == sorted(doc.ends)
    segs = _segments(doc)
    for a, b in segs:
        s, e = doc.to_original(a, b)
        assert _nfc(original[s:e]) == text[a:b]
        # a kept segment is a whole stripped line of the original
        assert original[s:e] == original[s:e].strip()
        assert s == 0 or original[s - 1] in " \t\r\n\xa0\u200b\ufeff"
        assert e == len(original) or original[e] in " \t\r\n\xa0\u200b\ufeff"
    for _, b in segs[:-1]:  # separators point at the end of the segment before them
        assert text[b : b + len(SEP)] == SEP
        for i in range(b, b + len(SEP)):
            assert doc.starts[i] == doc.ends[i] == doc.ends[b - 1]
    rng = random.Random(seed)
    for _ in range(300):  # spans inside one segment
        a, b = rng.choice(segs)
        x = rng.randrange(a, b)
        y = rng.randrange(x + 1, b + 1)
        s, e = doc.to_original(x, y)
        assert _nfc(original[s:e]) == text[x:y]
    for _ in range(100):  # spans crossing segments: the original slice also holds the gap
        if len(segs) < 2:
            break
        i, j = sorted(rng.sample(range(len(segs)), 2))
        x = rng.randrange(*segs[i])
        y = rng.randrange(segs[j][0], segs[j][1]) + 1
        s, e = doc.to_original(x, y)
        got = _nfc(original[s:e])
        assert got.startswith(text[x : segs[i][1]])
        assert got.endswith(text[segs[j][0] : y])


@pytest.fixture(scope="module", params=NAMES)
def article(request: pytest.FixtureRequest) -> tuple[str, str, CleanDocument]:
    name: str = request.param
    original = _read(name)
    return name, original, clean_article(original)


def test_page_furniture_is_gone(article: tuple[str, str, CleanDocument]) -> None:
    _, _, doc = article
    for junk in (
        "Phiên bản di động",
        "Theo dõi",
        "quét mã QR",
        "quét QR",
        "(Ảnh:",
        "Ảnh: Chính phủ",
        "Nguồn: Thế giới và Việt Nam",
        "Cùng chuyên mục",
        "Có thể bạn quan tâm",
        "Bài viết cùng chủ đề",
        "Đọc thêm",
        "Xem thêm",
    ):
        assert junk not in doc.text
    paragraphs = doc.text.split(SEP)
    assert "X" not in paragraphs
    assert all(p and p == p.strip() for p in paragraphs)
    assert len(paragraphs) == len(set(paragraphs)), "a duplicated line survived"
    assert unicodedata.is_normalized("NFC", doc.text)


@pytest.mark.parametrize(
    ("name", "title", "date"),
    [
        ("000_0a6a60240146a7b2.txt", "Ngoại giao kinh tế - Sứ mệnh “bứt tốc”", "27/07/2025"),
        (
            "001_8edc742d7bef5736.txt",
            "HNNG 30: Đẩy mạnh Ngoại giao phục vụ Phát triển trong Hội nhập quốc tế",
            "",
        ),
        (
            "002_f0839f41b8944c8b.txt",
            "Đưa đối ngoại và ngoại giao thực sự trở thành một động lực phát triển mạnh mẽ",
            "",
        ),
        (
            "003_1f44b7b7ded05db5.txt",
            "Ngoại giao kinh tế tạo đà bứt phá cho tăng trưởng năm 2025",
            "",
        ),
        (
            "004_f840cf0540fc0e3d.txt",
            "Hội nghị trực tuyến đẩy mạnh công tác ngoại giao kinh tế"
            " phục vụ thực hiện mục tiêu kép",
            "",
        ),
    ],
)
def test_title_and_date(name: str, title: str, date: str) -> None:
    doc = clean_article(_read(name))
    assert doc.title == title
    assert doc.date == date
    # the headline opens the text once; its repeats (image alt text, related list) are gone
    assert doc.text.startswith(title + SEP)
    assert doc.text.count(title) == 1


def test_related_headlines_are_cut() -> None:
    doc000 = clean_article(_read("000_0a6a60240146a7b2.txt"))
    assert "Thông qua Nghị quyết sửa đổi, bổ sung Hiến pháp 2013" not in doc000.text
    assert "Phát biểu của Tổng Bí thư Tô Lâm" not in doc000.text
    assert "Giám đốc Công an tỉnh Quảng Ninh" not in doc000.text
    assert "Pháp luật và Xã hội" not in doc000.text  # the site's name, as in "Theo dõi … trên"
    assert doc000.text.endswith("Thứ trưởng Thường trực Bộ Ngoại giao Nguyễn Minh Vũ")

    doc002 = clean_article(_read("002_f0839f41b8944c8b.txt"))
    assert "HỒNG NHUNG" not in doc002.text
    assert doc002.text.endswith("phát triển nguồn nhân lực, hoàn thiện thể chế./.")

    doc004 = clean_article(_read("004_f840cf0540fc0e3d.txt"))
    for gone in (
        "Phạm Văn Đồng - Tầm vóc một nhà ngoại giao lớn",
        "Tiếp tục tăng cường cơ chế hợp tác giữa Bộ Ngoại giao",
        "Ngoại giao vaccine\n",
        "Iran ra điều kiện về tiền tệ",
        "Trung Hiếu",
        "Bộ trưởng Ngoại giao Bùi Thanh Sơn chủ trì Hội nghị trực tuyến Ngoại giao kinh tế",
    ):
        assert gone not in doc004.text
    assert doc004.text.endswith("đồng hành cùng cả nước trong thực hiện các mục tiêu đã đề ra.")


def test_body_is_kept() -> None:
    doc000 = clean_article(_read("000_0a6a60240146a7b2.txt"))
    paragraphs = doc000.text.split(SEP)
    assert "Những dấu ấn đậm nét" in paragraphs  # section headings are content
    assert "Tăng tốc để bứt phá" in paragraphs
    assert "100 container hạt điều xuất khẩu sang Italy" in doc000.text

    doc001 = clean_article(_read("001_8edc742d7bef5736.txt"))
    assert len(doc001.text.split(SEP)) == 10  # 12 lines minus 2 photo captions
    assert "đối tác chiến lược và đối tác toàn diện với 27 nước" in doc001.text

    doc002 = clean_article(_read("002_f0839f41b8944c8b.txt"))
    assert "Tích cực truyền tải thông điệp, hình ảnh Việt Nam" in doc002.text.split(SEP)
    assert "chiều tối 19/9, tại trụ sở Chính phủ." in doc002.text

    original003 = _read("003_1f44b7b7ded05db5.txt")
    doc003 = clean_article(original003)
    assert "Hơn 170 thỏa thuận hợp tác đã được ký kết" in doc003.text
    assert doc003.text.split(SEP) == original003.strip().split("\n")  # nothing to remove

    doc004 = clean_article(_read("004_f840cf0540fc0e3d.txt"))
    assert "96 Đại sứ" in doc004.text
    assert "Năm là, trên cơ sở tình hình cụ thể của từng địa bàn" in doc004.text


@pytest.mark.parametrize("name", NAMES)
def test_offsets_point_into_the_original(name: str) -> None:
    original = _read(name)
    _check_offsets(original, clean_article(original), seed=sum(map(ord, name)))


@pytest.mark.parametrize("name", NAMES)
def test_decomposed_input_gives_same_text_and_nfd_offsets(name: str) -> None:
    nfc = _read(name)
    nfd = unicodedata.normalize("NFD", nfc)
    assert len(nfd) > len(nfc)
    doc, doc_nfd = clean_article(nfc), clean_article(nfd)
    assert doc_nfd.text == doc.text
    assert (doc_nfd.title, doc_nfd.date) == (doc.title, doc.date)
    assert doc_nfd.ends[-1] > doc.ends[-1]  # offsets really are NFD offsets
    _check_offsets(nfd, doc_nfd, seed=7)
    # every character maps to a whole "base + marks" run of the NFD string
    for i, ch in enumerate(doc_nfd.text):
        s, e = doc_nfd.starts[i], doc_nfd.ends[i]
        if s != e:
            assert unicodedata.normalize("NFC", nfd[s:e]) == ch


def test_mixed_normalisation_maps_each_character() -> None:
    original = "Tiêu đề " + unicodedata.normalize("NFD", "Việt Nam") + "\n\nNội dung đủ dài."
    doc = clean_article(original)
    assert doc.text == "Tiêu đề Việt Nam\n\nNội dung đủ dài."
    assert doc.title == "Tiêu đề Việt Nam"
    _check_offsets(original, doc, seed=1)
    a = doc.text.index("Việt")
    s, e = doc.to_original(a, a + 4)
    assert original[s:e] == unicodedata.normalize("NFD", "Việt")


@pytest.mark.parametrize("original", ["", "   \n\n\t \xa0\n\r\n \u200b \n"])
def test_empty_input(original: str) -> None:
    doc = clean_article(original)
    assert doc == CleanDocument("", [], [], "", "")


def test_to_original_rejects_bad_spans() -> None:
    doc = clean_article("Tiêu đề\n\nMột đoạn.")
    for a, b in ((0, 0), (3, 2), (-1, 2), (0, len(doc.text) + 1)):
        with pytest.raises(ValueError):
            doc.to_original(a, b)


BODY = (
    "Sáng 5/3, tại Hà Nội, Bộ Công Thương tổ chức hội nghị tổng kết công tác xuất khẩu năm "
    "2024 với sự tham dự của đại diện nhiều hiệp hội ngành hàng và doanh nghiệp lớn."
)
BODY2 = (
    "Theo báo cáo, kim ngạch xuất khẩu cả năm đạt hơn 400 tỷ USD, tăng 14% so với năm trước; "
    "thặng dư thương mại đạt mức kỷ lục, đóng góp quan trọng vào tăng trưởng kinh tế."
)
BODY3 = (
    "Bộ trưởng đề nghị các doanh nghiệp tận dụng tốt các hiệp định thương mại tự do, đa dạng "
    "hóa thị trường và nâng cao chất lượng sản phẩm để giữ vững đà tăng trưởng."
)
SYNTHETIC = f"""Thứ Hai, 03/03/2025 08:15 (GMT+7)

Xuất khẩu năm 2024 vượt mốc 400 tỷ USD
Minh Anh
Theo dõi Báo Kinh tế & Đô thị trên
{BODY}
Hội nghị tổng kết xuất khẩu năm 2024
Toàn cảnh hội nghị. (Ảnh: Minh Anh)
   \t
Xuất khẩu năm 2024 vượt mốc 400 tỷ USD

{BODY2}
Thứ trưởng phát biểu tại hội nghị. Ảnh: Bộ Công Thương
Xem thêm: Giá lúa gạo tăng mạnh đầu năm
Điểm sáng của năm
{BODY3}
Biểu đồ kim ngạch xuất khẩu. Nguồn: Tổng cục Thống kê |
Ảnh minh họa
X
MINH ANH
Báo Kinh tế và Đô thị
Mời bạn quét mã QR để theo dõi Báo Kinh tế và Đô thị trên nền tảng Zalo
Tin liên quan
Giá lúa gạo tăng mạnh đầu năm
Giá vàng hôm nay lập đỉnh mới
Phiên bản di động
"""


def test_synthetic_article_exercises_every_rule() -> None:
    doc = clean_article(SYNTHETIC)
    assert doc.title == "Xuất khẩu năm 2024 vượt mốc 400 tỷ USD"
    assert doc.date == "03/03/2025"
    assert doc.text.split(SEP) == [
        "Xuất khẩu năm 2024 vượt mốc 400 tỷ USD",
        BODY,
        BODY2,
        "Điểm sáng của năm",  # a body heading stays
        BODY3,
    ]
    _check_offsets(SYNTHETIC, doc, seed=3)


def test_headline_pairs_cut_the_tail() -> None:
    related = "".join(
        f"Tiêu đề tin liên quan số {i}\n\nTiêu đề tin liên quan số {i}\n\nTóm tắt tin {i}.\n"
        for i in range(3)
    )
    doc = clean_article(f"Tiêu đề bài\n\n{BODY}\n\n{BODY2}\n\n{related}")
    assert doc.text.split(SEP) == ["Tiêu đề bài", BODY, BODY2]


def test_a_duplicated_heading_in_the_body_does_not_cut_it() -> None:
    original = f"Tiêu đề bài\n\n{BODY}\n\nĐiểm sáng\n\nĐiểm sáng\n\n{BODY2}\n\n{BODY3}\n"
    doc = clean_article(original)
    assert doc.text.split(SEP) == ["Tiêu đề bài", BODY, "Điểm sáng", BODY2, BODY3]


def test_markers_only_cut_after_a_substantial_body() -> None:
    # too early to be the page's related-news block: only the marker line goes
    doc = clean_article(f"Tiêu đề bài\nTin liên quan\n{BODY}\n{BODY2}\n")
    assert doc.text.split(SEP) == ["Tiêu đề bài", BODY, BODY2]
    doc = clean_article(f"Tiêu đề bài\n{BODY}\n{BODY2}\nCùng chuyên mục\nMột tin khác hẳn\n")
    assert doc.text.split(SEP) == ["Tiêu đề bài", BODY, BODY2]


def test_windows_line_endings() -> None:
    original = f"Tiêu đề bài\r\n\r\n{BODY}\r\nPhiên bản di động\r\n"
    doc = clean_article(original)
    assert doc.text.split(SEP) == ["Tiêu đề bài", BODY]
    _check_offsets(original, doc, seed=5)
