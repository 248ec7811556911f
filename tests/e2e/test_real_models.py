"""End to end with the real small models on the real articles (run in CI by `make test`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.models import ModelError
from rag.service import RAG
from rag.settings import SMALL_GENERATOR, Settings

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_rag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RAG]:
    tmp = tmp_path_factory.mktemp("e2e")
    shutil.copytree(ROOT / "data" / "articles", tmp / "articles")
    settings = Settings(
        data_dir=tmp / "articles",
        index_dir=tmp / "index",
        models_dir=ROOT / "models",
        generator_model=SMALL_GENERATOR,
        _env_file=None,  # type: ignore[call-arg]
    )
    try:
        service = RAG.from_settings(settings)
        service.generator  # noqa: B018 - load now so a missing model fails here, clearly
    except ModelError as exc:
        pytest.fail(f"real models are needed for the e2e tests: {exc}")
    report = service.ingest()
    assert report.chunks > 20 and not report.skipped
    yield service


@pytest.mark.parametrize(
    ("question", "expected", "source"),
    [
        ("Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?", "170", "003_1f44b7b7ded05db5.txt"),
        ("Chỉ thị số 15-CT/TW được Ban Bí thư ban hành ngày nào?", "10/8/2022", "002_f0839f41b8944c8b.txt"),
        ("Có bao nhiêu Đại sứ, Trưởng Cơ quan đại diện tham gia hội nghị trực tuyến ngày 29/7?", "96", "004_f840cf0540fc0e3d.txt"),
    ],
)  # fmt: skip
def test_real_answer_cites_the_right_file(
    real_rag: RAG, question: str, expected: str, source: str
) -> None:
    answer = real_rag.ask(question)
    assert not answer.abstained, answer.answer
    assert expected in answer.answer
    assert source in {c.source for c in answer.citations}
    for c in answer.citations:
        original = (real_rag.settings.data_dir / c.source).read_text(encoding="utf-8")
        assert original[c.start : c.end] == c.text
    assert answer.timings_ms.first_token is not None
    assert answer.timings_ms.retrieval < answer.timings_ms.first_token <= answer.timings_ms.total


def test_real_retrieval_finds_the_directive_without_diacritics(real_rag: RAG) -> None:
    hits = real_rag.search("chi thi 15 ban hanh ngay nao", 3)
    assert "002_f0839f41b8944c8b.txt" in {h.source for h in hits}
