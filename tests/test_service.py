from __future__ import annotations

from pathlib import Path

import pytest

from rag.embedding import HashingEmbedder, Vectors
from rag.generation import FakeGenerator
from rag.index import IndexError_
from rag.prompts import NOT_FOUND_EN, NOT_FOUND_VI
from rag.service import RAG, DocumentError, QuestionError
from rag.settings import Settings

Q170 = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"


def test_ingest_indexes_every_article_with_exact_offsets(rag: RAG, corpus: Path) -> None:
    assert len(rag.index.files) == 5
    assert len(rag.index.chunks) > 20
    for chunk in rag.index.chunks:
        original = (corpus / chunk.source).read_text(encoding="utf-8")
        assert 0 <= chunk.start < chunk.end <= len(original)
        # The cleaned passage comes from this span of the original file.
        assert chunk.text.split()[0] in original[chunk.start : chunk.end]


def test_search_returns_citations_that_slice_the_file(rag: RAG, corpus: Path) -> None:
    hits = rag.search("thỏa thuận hợp tác đã được ký kết năm 2024", 5)
    assert [h.n for h in hits] == [1, 2, 3, 4, 5]
    for h in hits:
        original = (corpus / h.source).read_text(encoding="utf-8")
        assert original[h.start : h.end] == h.text
    assert hits[0].source == "003_1f44b7b7ded05db5.txt"


def test_search_without_diacritics_finds_the_directive(rag: RAG) -> None:
    hits = rag.search("chi thi 15 ban hanh ngay nao", 3)
    assert any("Chỉ thị số 15-CT/TW" in h.text for h in hits)


def test_reingest_skips_unchanged_replaces_changed_drops_deleted(rag: RAG, corpus: Path) -> None:
    report = rag.ingest()
    assert report.unchanged and not (report.added or report.updated or report.removed)
    assert report.embedded == 0

    changed = corpus / "001_8edc742d7bef5736.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nĐoạn mới về hợp tác.\n", "utf-8")
    (corpus / "004_f840cf0540fc0e3d.txt").unlink()
    report = rag.ingest()
    assert report.updated == ["001_8edc742d7bef5736.txt"]
    assert report.removed == ["004_f840cf0540fc0e3d.txt"]
    # Only the chunks whose content changed were embedded again.
    assert 0 < report.embedded < 4
    assert {c.source for c in rag.index.chunks} == {
        "000_0a6a60240146a7b2.txt", "001_8edc742d7bef5736.txt",
        "002_f0839f41b8944c8b.txt", "003_1f44b7b7ded05db5.txt",
    }  # fmt: skip


def test_the_index_survives_a_restart(rag: RAG, settings: Settings) -> None:
    again = RAG(settings, HashingEmbedder(), FakeGenerator())
    assert len(again.index.chunks) == len(rag.index.chunks)
    assert again.search(Q170, 1)[0].source == "003_1f44b7b7ded05db5.txt"


def test_bad_files_are_skipped_and_nothing_else_is_lost(rag: RAG, corpus: Path) -> None:
    before = len(rag.index.chunks)
    (corpus / "latin1.txt").write_bytes("Hà Nội".encode("cp1258", errors="replace") + b"\xff\xfe")
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02PNG")
    report = rag.ingest()
    assert set(report.skipped) == {"latin1.txt", "binary.txt"}
    assert "UTF-8" in report.skipped["latin1.txt"]
    assert "binary" in report.skipped["binary.txt"]
    assert len(rag.index.chunks) == before


def test_ask_cites_the_right_file(rag: RAG, corpus: Path) -> None:
    answer = rag.ask(Q170)
    assert not answer.abstained
    assert "170" in answer.answer
    assert answer.citations
    assert answer.citations[0].source == "003_1f44b7b7ded05db5.txt"
    for c in answer.citations:
        assert f"[{c.n}]" in answer.answer
        original = (corpus / c.source).read_text(encoding="utf-8")
        assert original[c.start : c.end] == c.text
        # The supporting sentence is pointed at exactly, inside the passage.
        assert c.highlights
        for h in c.highlights:
            assert c.start <= h.start < h.end <= c.end
        assert any("170" in original[h.start : h.end] for h in c.highlights)
    # The confidence read where in the evidence the answer comes from: the item holding "170".
    sig = answer.reader["signals"] if answer.reader else {}
    assert sig["ans_support"] > 0.5 and 0 <= sig["ans_rank"] < 6
    assert sig["sim_gap"] >= 0.0 and -1.0 <= sig["ans_sim"] <= 1.0


def test_ask_abstains_when_the_model_says_not_found(settings: Settings) -> None:
    gen = FakeGenerator(replies=[NOT_FOUND_VI])
    service = RAG(settings, HashingEmbedder(), gen)
    service.ingest()
    answer = service.ask("GDP của Việt Nam năm 2024 tăng bao nhiêu phần trăm?")
    assert answer.abstained
    assert answer.answer == NOT_FOUND_VI
    assert answer.citations == []
    assert answer.passages  # the nearest passages are still returned for a person to check


def test_english_question_gets_english_instructions(
    rag: RAG, fake_generator: FakeGenerator
) -> None:
    fake_generator.replies.append("Not found in the articles.")
    answer = rag.ask("How many cooperation agreements were signed in 2024?")
    assert answer.abstained and answer.answer == NOT_FOUND_EN
    assert "English" in fake_generator.calls[-1][0]["content"]


def test_invalid_markers_are_dropped_and_missing_ones_added(
    rag: RAG, fake_generator: FakeGenerator
) -> None:
    fake_generator.replies.append("Hơn 170 thỏa thuận hợp tác đã được ký kết [9].")
    answer = rag.ask(Q170)
    assert "[9]" not in answer.answer
    assert len(answer.citations) == 1 and f"[{answer.citations[0].n}]" in answer.answer
    assert "170" in answer.citations[0].text


@pytest.mark.parametrize("question", ["", "   \n\t", "x" * 2001])
def test_bad_questions_are_refused(rag: RAG, question: str) -> None:
    with pytest.raises(QuestionError):
        rag.ask(question)


class QueryLog(HashingEmbedder):
    """The hashing fake, remembering the text of every query it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def _embed_query(self, text: str) -> Vectors:
        self.queries.append(text)
        return super()._embed_query(text)


def test_an_unaccented_query_is_searched_with_its_diacritics_restored(
    settings: Settings, fake_generator: FakeGenerator
) -> None:
    embedder = QueryLog()
    service = RAG(settings, embedder, fake_generator)
    service.ingest()
    service.search("chi thi 15 ban hanh ngay nao", 3)
    service.ask("Chi thi 15 ban hanh ngay nao?")
    service.ask("When was Directive 15 issued?")  # English: searched as it is
    assert embedder.queries == [
        "chỉ thị 15 ban hành ngày nào", "Chỉ thị 15 ban hành ngày nào?",
        "When was Directive 15 issued?",
    ]  # fmt: skip


def test_follow_up_uses_the_conversation(rag: RAG) -> None:
    history = [
        {"role": "user", "content": "Hội nghị trực tuyến năm 2021 có bao nhiêu Đại sứ tham gia?"},
        {"role": "assistant", "content": "96 Đại sứ [1]."},
    ]
    assert "Đại sứ" in rag.search_query("Ai chủ trì?", history)  # type: ignore[arg-type]


def test_an_index_from_another_embedding_model_is_refused(rag: RAG, settings: Settings) -> None:
    with pytest.raises(IndexError_, match=r"another|built with"):
        RAG(settings, HashingEmbedder(dim=64), FakeGenerator())


@pytest.mark.parametrize(
    "name", ["../x.txt", "/etc/passwd.txt", "a/b.txt", ".hidden.txt", "x.exe", "x.doc", ""]
)
def test_document_names_are_checked(rag: RAG, name: str) -> None:
    with pytest.raises(DocumentError):
        rag.add_document(name, b"noi dung")


def test_add_and_delete_document(rag: RAG, settings: Settings) -> None:
    body = "Bài mới\n\nThành phố Đà Lạt đón 9 triệu lượt khách năm 2030.\n".encode()
    report = rag.add_document("moi.txt", body)
    assert report.added == ["moi.txt"]
    assert (settings.data_dir / "moi.txt").read_bytes() == body
    assert rag.search("Đà Lạt đón bao nhiêu lượt khách", 1)[0].source == "moi.txt"
    report = rag.delete_document("moi.txt")
    assert report.removed == ["moi.txt"]
    assert all(c.source != "moi.txt" for c in rag.index.chunks)
    with pytest.raises(KeyError):
        rag.delete_document("moi.txt")


def test_an_invented_figure_about_something_never_mentioned_is_not_given(
    settings: Settings,
) -> None:
    gen = FakeGenerator(replies=["GDP tăng 6,8% [1]."])
    service = RAG(settings, HashingEmbedder(), gen)
    service.ingest()
    answer = service.ask("Tăng trưởng GDP của Việt Nam năm 2024 là bao nhiêu?")
    assert answer.abstained and answer.citations == []
    assert "6,8" not in answer.answer  # no passage holds the figure: it cannot be cited
    assert answer.reader is not None and answer.reader["unknown_terms"] == ["gdp"]
    assert answer.passages


def test_embed_sentences_fills_the_cache_the_evidence_step_reads(rag: RAG) -> None:
    n = rag.embed_sentences()
    assert n > 100
    before = dict(rag._sentence_vecs)
    rag.ask("Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?")
    assert rag._sentence_vecs.keys() == before.keys()  # nothing left to embed at question time


def test_passage_states_are_prepared_for_every_chunk_in_both_languages(
    settings: Settings, fake_generator: FakeGenerator
) -> None:
    from rag.prompts import SYSTEM_EN, SYSTEM_VI

    off = RAG(settings, HashingEmbedder(), fake_generator)
    off.ingest()
    assert off.prepare_states() is None and fake_generator.prefixes == []
    on = RAG(settings.model_copy(update={"passage_states_mb": 100}), HashingEmbedder(),
             fake_generator)  # fmt: skip
    report = on.prepare_states()
    n = len(on.index.chunks)
    assert report is not None and report.computed == 2 * n
    systems = [p[0]["content"] for p in fake_generator.prefixes]
    assert systems.count(SYSTEM_VI) == n and systems.count(SYSTEM_EN) == n
    bodies = {p[1]["content"].split("\n[1]\n", 1)[1] for p in fake_generator.prefixes}
    assert bodies == {c.text for c in on.index.chunks}


def test_the_top_passage_layout_puts_the_top_passage_first_and_whole(
    settings: Settings, fake_generator: FakeGenerator
) -> None:
    rag = RAG(settings.model_copy(update={"evidence_layout": "top-passage"}), HashingEmbedder(),
              fake_generator)  # fmt: skip
    rag.ingest()
    top = rag.retrieve(Q170, settings.top_k)[0]
    rag.ask(Q170)
    body = fake_generator.calls[-1][-1]["content"]
    assert body.startswith(f"Các đoạn trích:\n\n[1]\n{top.chunk.text}\n\n")


def test_a_top_passage_read_without_a_state_is_remembered(
    settings: Settings, fake_generator: FakeGenerator
) -> None:
    update = {"evidence_layout": "top-passage", "passage_states_mb": 100}
    rag = RAG(settings.model_copy(update=update), HashingEmbedder(), fake_generator)
    rag.ingest()
    top = rag.retrieve(Q170, settings.top_k)[0]
    rag.ask(Q170)
    [prefix] = fake_generator.remembered
    assert prefix[1]["content"].endswith(f"[1]\n{top.chunk.text}")
    # Another layout, or states off: nothing to remember.
    for other in ({"evidence_layout": "sentences"}, {"passage_states_mb": 0}):
        plain = RAG(settings.model_copy(update={**update, **other}), HashingEmbedder(),
                    fake_generator)  # fmt: skip
        plain.ask(Q170)
    assert len(fake_generator.remembered) == 1


def test_an_english_question_is_searched_and_read_in_vietnamese_when_asked(
    settings: Settings,
) -> None:
    vi = "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"
    gen = FakeGenerator(replies=[f"{vi}\n(translation)", "170 [1]"])
    service = RAG(settings.model_copy(update={"english_translate": True}), HashingEmbedder(), gen)
    service.ingest()
    answer = service.ask("How many cooperation agreements were signed in 2024?")
    assert gen.calls[0][-1]["content"].endswith(
        "How many cooperation agreements were signed in 2024?"
    )
    prompt = gen.calls[1][-1]["content"]
    assert prompt.endswith(
        f"How many cooperation agreements were signed in 2024?\n(In Vietnamese: {vi})"
    )
    assert answer.reader is not None and answer.reader["question_read"] == vi  # first line only
    assert answer.timings_ms.translation > 0
    # The Vietnamese version found the passage that holds the figure.
    assert any("170" in p.text for p in answer.passages)


def test_an_english_question_is_read_as_it_is_when_translation_is_off(
    settings: Settings,
) -> None:
    gen = FakeGenerator()
    service = RAG(settings.model_copy(update={"english_translate": False}), HashingEmbedder(), gen)
    service.ingest()
    service.ask("How many cooperation agreements were signed in 2024?")
    assert len(gen.calls) == 1  # no translation call
    assert "In Vietnamese" not in gen.calls[0][-1]["content"]


class ContrastLog(FakeGenerator):
    """The fake engine, noting the evidence-free request each answer is contrasted with."""

    def __init__(self) -> None:
        super().__init__()
        self.contrasts: list[tuple[list[dict[str, str]], float] | None] = []

    def complete(self, messages, *, max_tokens, temperature=0.0, contrast=None, alpha=0.0):  # type: ignore[no-untyped-def]
        self.contrasts.append((contrast, alpha) if contrast is not None else None)
        return super().complete(messages, max_tokens=max_tokens, temperature=temperature)


def test_with_contrast_decoding_the_answer_is_drafted_against_the_question_alone(
    settings: Settings, rag: RAG
) -> None:
    engine = ContrastLog()
    on = RAG(settings.model_copy(update={"contrast_alpha": 0.5}), rag.embedder, engine)
    on.ask(Q170)
    [(contrast, alpha)] = engine.contrasts  # type: ignore[misc]
    assert alpha == 0.5
    assert contrast[-1] == {"role": "user", "content": f"Câu hỏi: {Q170}"}
    assert contrast[0]["role"] == "system" and len(contrast) == 2
    off = RAG(settings, rag.embedder, engine)  # the default: plain decoding
    off.ask(Q170)
    assert engine.contrasts[-1] is None
