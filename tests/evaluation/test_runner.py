"""The runner and the report, end to end, on hand-made gold items with hand-computed figures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.main import create_app
from rag.evaluation.cli import register
from rag.evaluation.report import Report, load_report, write
from rag.evaluation.runner import (
    GoldItem,
    HttpBackend,
    InProcessBackend,
    ItemRecord,
    load_gold,
    run,
)
from rag.generation import FakeGenerator
from rag.service import RAG
from rag.settings import Settings
from rag.types import Answer, Citation, Timings

NOT_FOUND = "Không tìm thấy thông tin này trong các bài viết."
F000 = "000_0a6a60240146a7b2.txt"
F001 = "001_8edc742d7bef5736.txt"
F003 = "003_1f44b7b7ded05db5.txt"


def write_gold(path: Path, items: Sequence[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in items) + "\n", "utf-8")
    return path


def config(mode: str = "full") -> dict[str, Any]:
    return {"date": "2025-01-01T00:00:00+00:00", "mode": mode, "git": {"commit": "abc"}}


def md_row(md: str, first_cells: str, section: str = "## Summary") -> str:
    """The first Markdown table row after ``section`` that starts with ``| first_cells |``."""
    after = md.split(section + "\n", 1)[1]
    rows = [line for line in after.splitlines() if line.startswith(f"| {first_cells} |")]
    assert rows, f"no row {first_cells!r}"
    return rows[0]


# --- in-process, on the real articles with fake engines ------------------------------------------
# Four questions from the gold set; the fake answer model replies with the queued texts below.
# (A wrong citation cannot be staged here: the service moves a marker to the passage that holds
# the sentence. The scripted backend further down covers it.)
INPROCESS_GOLD: list[dict[str, Any]] = [
    {  # a right answer citing the right file
        "id": "r1", "type": "number", "answers": [["25"]], "sources": [F000],
        "question": "Trong chuyến thăm Mỹ năm 2022, Thủ tướng Phạm Minh Chính đã chứng kiến bao "
        "nhiêu thỏa thuận giữa doanh nghiệp hai nước được ký kết và trao đổi?",
    },
    {  # a wrong answer, true to its passage, citing the right file
        "id": "r2", "type": "entity", "answers": [["27"]], "sources": [F001],
        "question": "Theo Thứ trưởng Bùi Thanh Sơn tại HNNG 30, Việt Nam đã thiết lập quan hệ "
        "đối tác chiến lược và đối tác toàn diện với bao nhiêu nước?",
    },
    {  # a correct abstention
        "id": "r3", "type": "unanswerable", "answers": [], "sources": [],
        "question": "Tăng trưởng GDP của Việt Nam cả năm 2024 đạt bao nhiêu phần trăm?",
    },
    {  # an abstention on an answerable question
        "id": "r4", "type": "date", "answers": [["15/4/2010"]], "sources": [F000],
        "question": "Chỉ thị số 41-CT/TW của Ban Bí thư về công tác ngoại giao kinh tế được ban "
        "hành ngày nào?",
    },
]  # fmt: skip
REPLIES = [
    "Thủ tướng đã chứng kiến 25 thỏa thuận [1].",
    "Việt Nam đã tham gia tạo dựng các cơ chế hợp tác kinh tế, thương mại, tài chính [2].",
    NOT_FOUND,
    NOT_FOUND,
]


def check_fake_retrieval(rag: RAG) -> None:
    """What the hand-computed figures assume of the fake retrieval (checked, not trusted)."""
    top = {d["id"]: rag.search(d["question"], 5)[0] for d in INPROCESS_GOLD}
    assert [top[i].source for i in ("r1", "r2", "r4")] == [F000, F001, F000]
    assert "25 thỏa thuận" in top["r1"].text and "90 đoàn" in top["r2"].text


def check_inprocess_figures(rep: dict[str, Any]) -> None:
    s = rep["summary"]["overall"]
    assert s["questions"] == {"n": 4, "answerable": 3, "unanswerable": 1, "errors": 0}
    assert s["retrieval"]["file_hit@1"] == 1.0
    assert s["retrieval"]["mrr@10"] == 1.0
    a = s["answers"]
    assert a["accuracy"] == pytest.approx(1 / 3)  # r1 right; r2 wrong; r4 abstained
    assert a["correct"] == pytest.approx(2 / 4)  # ... and r3 rightly abstained
    assert a["abstained"] == pytest.approx(2 / 4)
    # r1: 1 of 8 syllables is "25": F1 = 2/9; r2 and r4: 0.
    assert a["token_f1"] == pytest.approx(2 / 27)
    c = s["citations"]
    assert c["precision"] == 1.0  # r1 and r2 cite a gold file; r4 cites nothing
    assert c["recall"] == pytest.approx(2 / 3)  # r4's abstention has recall 0
    assert c["support"] == 1.0  # the one right answer, r1, cites the passage with "25"
    # predicted [F, F, T, T], gold [F, F, T, F]: tp 1, fp 1, fn 0
    assert s["abstention"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3})
    by_type = rep["summary"]["by_type"]
    assert list(by_type) == ["number", "entity", "unanswerable", "date"]
    assert by_type["number"]["answers"]["accuracy"] == 1.0
    assert by_type["entity"]["answers"]["accuracy"] == 0.0
    assert by_type["unanswerable"]["answers"]["accuracy"] is None
    assert by_type["unanswerable"]["answers"]["correct"] == 1.0
    assert by_type["date"]["citations"]["precision"] is None
    recs = {r["id"]: r for r in rep["records"]}
    assert [recs[i]["correct"] for i in ("r1", "r2", "r3", "r4")] == [True, False, True, False]
    assert [c["source"] for c in recs["r2"]["cited"]] == [F001]
    assert recs["r1"]["generated_tokens"] == 9  # the fake model streams one word at a time
    assert all(r["search_ms"] is not None for r in rep["records"])


def test_in_process_run_writes_the_three_files_with_the_expected_figures(
    rag: RAG, fake_generator: FakeGenerator, tmp_path: Path
) -> None:
    check_fake_retrieval(rag)
    fake_generator.replies = list(REPLIES)
    items = load_gold(write_gold(tmp_path / "gold.jsonl", INPROCESS_GOLD))
    backend = InProcessBackend(rag)
    records = run(backend, items, progress=False)
    paths = write(Report.build({**config(), **backend.describe()}, records), tmp_path / "out")

    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.json", "report.md", "report.png",
    }  # fmt: skip
    rep = json.loads(paths["json"].read_text(encoding="utf-8"))
    check_inprocess_figures(rep)
    assert rep["config"]["settings"]["context_sentences"] == rag.settings.context_sentences
    assert rep["config"]["generator_model"] == "fake"

    md = paths["md"].read_text(encoding="utf-8")
    assert "![Per-type scores and latency distribution](report.png)" in md
    assert (
        md_row(md, "answers | accuracy (answerable)")
        == "| answers | accuracy (answerable) | 0.33 |"
    )
    assert md_row(md, "abstention | F1") == "| abstention | F1 | 0.67 |"
    # type, n, accuracy, correct, token F1, abstained, cit. precision, cit. recall, support
    answers = "### Answers and citations"
    assert (
        md_row(md, "entity", answers)
        == "| entity | 1 | 0.00 | 0.00 | 0.00 | 0.00 | 1.00 | 1.00 | — |"
    )
    assert md_row(md, "date", answers) == "| date | 1 | 0.00 | 0.00 | 0.00 | 1.00 | — | 0.00 | — |"
    assert (
        md_row(md, "unanswerable", answers)
        == "| unanswerable | 1 | — | 1.00 | — | 1.00 | — | — | — |"
    )
    failing = md.split("## Failing questions", 1)[1]
    assert "### Wrong answers (2)" in failing
    assert (
        "**r2** (entity)" in failing and "cơ chế hợp tác kinh tế" in failing and "`27`" in failing
    )
    assert "**r4** (date)" in failing and "got: *abstained*" in failing
    assert "**r1**" not in failing and "**r3**" not in failing
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieval_only_never_calls_the_answer_model(
    rag: RAG, fake_generator: FakeGenerator, tmp_path: Path
) -> None:
    items = load_gold(write_gold(tmp_path / "gold.jsonl", INPROCESS_GOLD))
    records = run(InProcessBackend(rag), items, retrieval_only=True, progress=False)
    assert fake_generator.calls == []
    assert all(r.answer is None and r.correct is None for r in records)
    paths = write(Report.build(config("retrieval-only"), records), tmp_path / "out")
    rep = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert set(rep["summary"]["overall"]) == {"questions", "retrieval", "speed"}
    md = paths["md"].read_text(encoding="utf-8")
    assert "accuracy" not in md.split("## Summary", 1)[1]
    assert "### Wrong answers" not in md and "### Retrieval misses (0)" in md


def test_http_backend_gives_the_same_figures(
    settings: Settings, rag: RAG, fake_generator: FakeGenerator, tmp_path: Path
) -> None:
    check_fake_retrieval(rag)
    fake_generator.replies = list(REPLIES)
    items = load_gold(write_gold(tmp_path / "gold.jsonl", INPROCESS_GOLD))
    with TestClient(create_app(settings, rag=rag)) as client:
        backend = HttpBackend("http://testserver", client=client)
        records = run(backend, items, progress=False)
        described = backend.describe()
    assert described["url"] == "http://testserver" and described["files"] == 5
    rep = Report.build({**config(), **described}, records).to_json()
    check_inprocess_figures(rep)


def test_http_errors_are_recorded_per_item(settings: Settings, rag: RAG, tmp_path: Path) -> None:
    gold: list[dict[str, Any]] = [{"id": "e1", "type": "number", "question": "   ", "answers": [["1"]], "sources": [F000]},
            INPROCESS_GOLD[2]]  # fmt: skip
    items = load_gold(write_gold(tmp_path / "gold.jsonl", gold))
    with TestClient(create_app(settings, rag=rag)) as client:
        records = run(HttpBackend("http://testserver", client=client), items, progress=False)
    e1, r3 = records
    assert e1.error is not None and "search: BackendError: HTTP 422" in e1.error
    assert "ask: BackendError: HTTP 422" in e1.error
    assert e1.correct is False and e1.file_hit["1"] is False
    assert r3.error is None


# --- scripted backend: every figure worked out by hand ------------------------------------------
def cite(n: int, source: str, text: str) -> Citation:
    return Citation(n=n, source=source, start=0, end=len(text), text=text, score=1.0 / n)


LIST = ["tiêu dùng", "đầu tư", "xuất khẩu"]
SCRIPTED_GOLD: list[dict[str, Any]] = [
    {"id": "g1", "type": "number", "question": "Q1", "answers": [["25"]], "sources": ["a.txt"]},
    {"id": "g2", "type": "list", "question": "Q2", "answers": [LIST], "sources": ["b.txt"]},
    {"id": "g3", "type": "entity", "question": "Q3", "answers": [["Phạm Minh Chính"]],
     "sources": ["a.txt"]},
    {"id": "g4", "type": "unanswerable", "question": "Q4", "answers": [], "sources": []},
    {"id": "g5", "type": "unanswerable", "question": "Q5", "answers": [], "sources": []},
]  # fmt: skip
A25 = cite(1, "a.txt", "chứng kiến 25 thỏa thuận")
B_PART = cite(2, "b.txt", "gồm tiêu dùng, đầu tư")
C = cite(1, "c.txt", "giá vàng tăng")
SEARCH: dict[str, tuple[list[Citation], float]] = {
    "Q1": ([A25, cite(2, "b.txt", "năm 2025")], 10.0),
    "Q2": ([cite(1, "a.txt", "năm 2025"), B_PART, cite(3, "b.txt", "và xuất khẩu")], 20.0),
    "Q3": ([cite(i, "c.txt", "khác") for i in range(1, 6)]
           + [cite(6, "a.txt", "Thủ tướng Phạm Minh Chính")], 30.0),
    "Q4": ([C], 40.0),
    "Q5": ([C], 50.0),
}  # fmt: skip


def reply(
    text: str,
    cited: Sequence[Citation] = (),
    *,
    abstained: bool = False,
    first: float | None = None,
    total: float = 0.0,
    tokens: int = 0,
) -> Answer:
    timings = Timings(retrieval=1.0, first_token=first, total=total, generated_tokens=tokens)
    return Answer(
        question="", answer=text, abstained=abstained, citations=list(cited), timings_ms=timings
    )


CURRENT = {
    "Q1": reply("Có 25 thỏa thuận [1]", [A25], first=100, total=1100, tokens=11),  # right
    "Q2": reply("Gồm tiêu dùng và đầu tư [1]", [B_PART], first=200, total=700, tokens=6),  # wrong
    "Q3": reply("Phạm Minh Chính [1]", [C], first=300, total=400, tokens=1),  # wrong citation
    "Q4": reply(NOT_FOUND, abstained=True, total=50),  # correct abstention
    "Q5": reply("Giá vàng là 80 triệu [1]", [C], first=150, total=900, tokens=4),  # should abstain
}
BASELINE = {
    **CURRENT,
    "Q1": reply("Có 2025 thỏa thuận [1]", [A25], first=100, total=2200, tokens=11),
    "Q3": reply("Phạm Minh Chính [1]", [C], first=300, total=800, tokens=1),
    "Q5": reply(NOT_FOUND, abstained=True, total=60),
}


class Scripted:
    label = "scripted"

    def __init__(self, answers: dict[str, Answer], fail_ask: str | None = None) -> None:
        self.answers = answers
        self.fail_ask = fail_ask

    def search(self, query: str, k: int) -> tuple[list[Citation], float]:
        hits, ms = SEARCH[query]
        return hits[:k], ms

    def ask(self, question: str) -> Answer:
        if question == self.fail_ask:
            raise RuntimeError("boom")
        return self.answers[question]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.label, "embedding_model": "e", "generator_model": "g"}


def scripted_records(tmp_path: Path, answers: dict[str, Answer], **kw: Any) -> list[ItemRecord]:
    items = load_gold(write_gold(tmp_path / "gold.jsonl", SCRIPTED_GOLD))
    return run(Scripted(answers, **kw), items, progress=False)


def test_every_figure_by_hand(tmp_path: Path) -> None:
    rep = Report.build(config(), scripted_records(tmp_path, CURRENT)).to_json()
    s = rep["summary"]["overall"]
    r = s["retrieval"]
    # g1 gold at rank 1; g2 at rank 2 (answer split over ranks 2-3); g3 only at rank 6.
    assert [r[f"file_hit@{k}"] for k in (1, 3, 5, 10)] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1])
    assert [r[f"passage_hit@{k}"] for k in (1, 3, 5, 10)] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1])
    assert r["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 6) / 3)
    a = s["answers"]
    assert a["accuracy"] == pytest.approx(2 / 3)  # g1, g3
    assert a["correct"] == pytest.approx(3 / 5)  # g1, g3, g4
    assert a["token_f1"] == pytest.approx((0.4 + 2 / 3 + 1.0) / 3)
    assert a["abstained"] == pytest.approx(1 / 5)
    c = s["citations"]
    assert (c["precision"], c["recall"]) == pytest.approx((2 / 3, 2 / 3))  # 1, 1, 0
    assert c["support"] == pytest.approx(0.5)  # right answers g1 (yes) and g3 (no)
    assert s["abstention"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    sp = s["speed"]
    assert sp["retrieval_ms"] == pytest.approx({"p50": 30.0, "p95": 48.0})
    assert sp["first_token_ms"] == pytest.approx({"p50": 175.0, "p95": 285.0})
    assert sp["total_ms"] == pytest.approx({"p50": 700.0, "p95": 1060.0})
    # (10 + 5 + 3) tokens after the first over (1.0 + 0.5 + 0.75) s; g3 had one token only.
    assert sp["tokens_per_s"] == pytest.approx(8.0)
    u = rep["summary"]["by_type"]["unanswerable"]
    assert u["answers"]["correct"] == 0.5 and u["retrieval"]["file_hit@1"] is None
    assert u["abstention"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})


def test_failing_questions_are_listed_with_what_came_back(tmp_path: Path) -> None:
    md = write(Report.build(config(), scripted_records(tmp_path, CURRENT)), tmp_path / "o")["md"]
    failing = md.read_text(encoding="utf-8").split("## Failing questions", 1)[1]
    wrong, rest = failing.split("### Retrieval misses", 1)
    assert "### Wrong answers (2)" in wrong
    assert "**g2** (list)" in wrong and "**g5** (unanswerable)" in wrong
    assert "`tiêu dùng` + `đầu tư` + `xuất khẩu`" in wrong
    assert "“Gồm tiêu dùng và đầu tư [1]”" in wrong
    assert "expected: abstain (not in the articles)" in wrong
    misses, rest = rest.split("### Answer missing", 1)
    assert misses.startswith(" (1)") and "**g3**" in misses
    assert rest.startswith(" from the top 5 passages (0)")


def test_an_exception_is_a_failed_item_not_a_crash(tmp_path: Path) -> None:
    records = scripted_records(tmp_path, CURRENT, fail_ask="Q1")
    g1 = records[0]
    assert g1.error == "ask: RuntimeError: boom"
    assert g1.correct is False and g1.answer == "" and g1.total_ms is None
    assert g1.file_hit["1"] is True  # the search went through
    rep = Report.build(config(), records).to_json()
    assert rep["summary"]["overall"]["questions"]["errors"] == 1
    assert rep["summary"]["overall"]["answers"]["accuracy"] == pytest.approx(1 / 3)


def test_baseline_changes_are_shown_everywhere(tmp_path: Path) -> None:
    write(Report.build(config(), scripted_records(tmp_path, BASELINE)), tmp_path / "base")
    base = load_report(tmp_path / "base")
    assert base.summary["overall"]["answers"]["accuracy"] == pytest.approx(1 / 3)
    current = Report.build(config(), scripted_records(tmp_path, CURRENT), base, "base")
    paths = write(current, tmp_path / "cur")

    rep = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert rep["baseline"]["path"] == "base"
    d = rep["delta"]["overall"]
    assert d["answers"]["accuracy"] == pytest.approx(1 / 3)  # 2/3 now, 1/3 before
    assert d["abstention"]["recall"] == pytest.approx(-0.5)
    assert d["speed"]["total_ms"]["p50"] == pytest.approx(0.0)  # 700 both times
    assert d["speed"]["total_ms"]["p95"] == pytest.approx(-860.0)  # 1060 now, 1920 before
    assert rep["delta"]["by_type"]["number"]["answers"]["accuracy"] == pytest.approx(1.0)

    md = paths["md"].read_text(encoding="utf-8")
    assert md_row(md, "answers | accuracy (answerable)").endswith("| 0.67 (+0.33) |")
    assert md_row(md, "answers | correct (all questions)").endswith("| 0.60 (+0.00) |")
    assert md_row(md, "abstention | recall").endswith("| 0.50 (-0.50) |")
    assert md_row(md, "speed | total p95 (ms)").endswith("| 1060 (-860) |")
    assert md_row(md, "number", "### Answers and citations").startswith(
        "| number | 1 | 1.00 (+1.00) |"
    )
    failing = md.split("## Failing questions", 1)[1]
    assert "**g2** (list) *(also failed in baseline)*" in failing
    assert "**g5** (unanswerable) **(new failure)**" in failing
    assert "**g1**" not in failing.split("### Retrieval misses", 1)[0]
    assert paths["png"].stat().st_size > 10_000


def test_a_shorter_run_is_compared_with_the_same_questions_of_the_baseline(
    tmp_path: Path,
) -> None:
    write(Report.build(config(), scripted_records(tmp_path, BASELINE)), tmp_path / "base")
    items = load_gold(tmp_path / "gold.jsonl", limit=2)
    current = Report.build(
        config(), run(Scripted(CURRENT), items, progress=False), load_report(tmp_path / "base")
    )
    rep = current.to_json()
    # Over g1 and g2 the baseline got 0 of 2 right, this run 1 of 2 (over all five: 1/3).
    assert rep["delta"]["overall"]["answers"]["accuracy"] == pytest.approx(0.5)
    assert rep["delta"]["overall"]["questions"]["n"] == 0
    assert "restricted to the 2 questions of this run (it has 5)" in rep["baseline"]["note"]
    assert "restricted to the 2 questions" in write(current, tmp_path / "cur")["md"].read_text(
        encoding="utf-8"
    )


def test_load_gold_limit_and_errors(tmp_path: Path) -> None:
    path = write_gold(tmp_path / "gold.jsonl", SCRIPTED_GOLD)
    assert [i.id for i in load_gold(path, limit=2)] == ["g1", "g2"]
    assert load_gold(path)[1] == GoldItem("g2", "Q2", [LIST], ["b.txt"], "list")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_gold(bad)


# --- the command ------------------------------------------------------------------------------
def test_eval_command_retrieval_only(
    rag: RAG, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "RAG_DATA_DIR": settings.data_dir, "RAG_INDEX_DIR": settings.index_dir,
        "RAG_MODELS_DIR": settings.models_dir, "RAG_EMBEDDER": "fake", "RAG_GENERATOR": "fake",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so that the command is called by its name
    register(app)
    gold = write_gold(tmp_path / "gold.jsonl", INPROCESS_GOLD)
    out = tmp_path / "rep"
    args = ["eval", "--gold", str(gold), "--retrieval-only", "--limit", "3", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["config"]["mode"] == "retrieval-only" and rep["config"]["limit"] == 3
    assert rep["summary"]["overall"]["questions"]["n"] == 3
    assert rep["summary"]["overall"]["retrieval"]["file_hit@1"] == 1.0
    assert (out / "report.md").exists() and (out / "report.png").exists()

    # The previous report as a baseline: nothing changed, so every change is zero.
    args += ["--baseline", str(out / "report.json"), "--out", str(tmp_path / "rep2")]
    assert CliRunner().invoke(app, args).exit_code == 0
    md = (tmp_path / "rep2" / "report.md").read_text(encoding="utf-8")
    assert md_row(md, "retrieval | file hit@1").endswith("| 1.00 (+0.00) |")
