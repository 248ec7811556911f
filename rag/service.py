"""The RAG service in plain Python: ingest, search, ask and stream. It knows nothing of HTTP."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np

from rag.context import (
    SentenceScorer,
    best_last,
    evidence_sentences,
    sentences,
    top_passage_evidence,
)
from rag.diacritics import GENERAL_WEIGHT, DiacriticRestorer, general_vietnamese
from rag.embedding import Embedder
from rag.embedding.factory import load_embedder
from rag.filters import FilterError, SearchFilter
from rag.generation import ChatMessage, Generator
from rag.generation.factory import load_generator
from rag.generation.states import StateReport
from rag.grounding import support, unknown_terms
from rag.index import CorpusIndex, FileRecord, IndexError_, IndexStore
from rag.ingest.chunking import chunk_article
from rag.ingest.formats import ArticleText, extract_article, page_of, text_source
from rag.ingest.loader import SUPPORTED_SUFFIXES, UnreadableFile, decode_article, discover
from rag.prompts import (
    NOT_FOUND_EN,
    NOT_FOUND_VI,
    build_messages,
    prefix_messages,
    translation_messages,
    without_evidence,
)
from rag.reader import Reader, describe
from rag.settings import Settings
from rag.text import has_vietnamese_marks, looks_english, nfc
from rag.trash import Trash, TrashEntry
from rag.types import Answer, Citation, Passage, Span, Timings
from rag.vectors import VectorStore, open_store

log = logging.getLogger("rag")

#: Sentence vectors kept in memory for choosing what the answer model reads.
SENTENCE_CACHE = 50_000
_SAFE_NAME = re.compile(r"^[\w][\w .()+,-]{0,200}$", re.UNICODE)


class QuestionError(ValueError):
    """The question cannot be answered as given (empty, too long)."""


class DocumentError(ValueError):
    """A document name or body is not acceptable."""


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    chunks: int = 0
    embedded: int = 0
    seconds: float = 0.0


@dataclass
class StreamEvent:
    """One step of an answer as it is produced: evidence first, then tokens, then the result."""

    kind: Literal["passages", "token", "done"]
    passages: list[Citation] = field(default_factory=list)
    token: str = ""
    answer: Answer | None = None


def check_document_name(name: str) -> str:
    """Accept a bare file name (no folders, no traversal) of an accepted format (.txt, .md,
    .html, .htm, .pdf, .docx)."""
    name = nfc(name.strip())
    if (
        not name
        or name != Path(name).name
        or name.startswith(".")
        or not _SAFE_NAME.match(name)
        or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES
    ):
        raise DocumentError(
            f"invalid document name {name!r}: use a plain file name ending in "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    return name


class RAG:
    """Retrieval-augmented answering over a folder of articles.

    Engines come in through the constructor, so tests pass fakes and tools pass whatever they
    need; ``RAG.from_settings()`` builds the configured ones.
    """

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        generator: Generator | None = None,
        *,
        store: IndexStore | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self._generator = generator
        self._generator_lock = threading.Lock()
        self.store = store or IndexStore(settings.index_dir)
        self._write_lock = threading.Lock()
        self._originals: dict[tuple[str, str], str] = {}
        self.trash = Trash(settings.trash_path)
        self.reader = Reader(threshold=settings.confidence_threshold, model=answer_model(settings))
        self._restorer: tuple[CorpusIndex, DiacriticRestorer] | None = None
        self._sentence_vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._sentence_lock = threading.Lock()
        self.index = CorpusIndex(embedder.identity, embedder.dim)
        if self.store.exists():
            self.index = self.store.load(expected_embedder=embedder.identity)
        # Dense search: the generation's FAISS (None here), or an external store, which gets
        # any live vectors it lacks from the generation's vectors.npy (none are re-embedded).
        self.vectors: VectorStore | None = open_store(settings, embedder.dim, embedder.identity)
        if self.vectors is not None and self.store.exists():
            try:
                self.vectors.attach(self.index)
            except BaseException:
                self.vectors.close()
                raise

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RAG:
        settings = settings or Settings()
        embedder = load_embedder(settings)
        return cls(settings, embedder, None, store=IndexStore(settings.index_dir))

    @property
    def generator(self) -> Generator:
        """The answer engine, loaded on first use (search alone never loads it)."""
        with self._generator_lock:
            if self._generator is None:
                self._generator = load_generator(self.settings)
            return self._generator

    def engine_state(self) -> dict[str, object]:
        """The answer engine's state for health checks (never loads it)."""
        gen = self._generator
        if gen is None:
            return {"state": "not-loaded", "detail": "loads on the first question"}
        st = gen.state()
        out: dict[str, object] = {"state": st.state, "detail": st.detail, "restarts": st.restarts}
        if st.pid is not None:
            out["pid"] = st.pid
        out.update({k: v for k, v in st.info.items() if k.startswith("extra_buffers")})
        return out

    def check_engine(self) -> None:
        """Raise ``EngineUnavailable`` now if the answer engine is down (loading, restarting,
        failed), so a client gets 503 before any stream starts."""
        gen = self._generator
        err = gen.unavailable() if gen is not None else None
        if err is not None:
            raise err

    def close(self) -> None:
        """Stop the answer engine's worker process, if any, and close the vector store."""
        gen = self._generator
        if gen is not None:
            gen.close()
        if self.vectors is not None:
            self.vectors.close()

    # --- documents ----------------------------------------------------------------------------
    def documents(self) -> list[FileRecord]:
        return sorted(self.index.files.values(), key=lambda r: r.name)

    def ingest(self, paths: list[Path] | None = None, *, rebuild: bool = False) -> IngestReport:
        """Bring the index in line with the corpus folder.

        Files given in ``paths`` that live elsewhere are first copied into the corpus folder
        (it is the one source of truth, and citations name its files). Unchanged files are
        skipped, changed ones re-chunked (vectors of unchanged chunks reused), deleted ones
        dropped. Unreadable files are reported in ``skipped`` and change nothing.
        """
        t0 = time.perf_counter()
        report = IngestReport()
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        extracted: dict[tuple[str, str], ArticleText] = {}
        with self._write_lock:
            for src in discover(list(paths or [])):
                if src.resolve().parent == data_dir.resolve():
                    continue
                try:
                    name = check_document_name(src.name)
                    data = src.read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                    extracted[name, sha] = extract_article(name, data)
                except (UnreadableFile, DocumentError) as exc:
                    report.skipped[src.name] = str(exc)
                    log.warning("skipped %s", exc)
                    continue
                target = data_dir / name
                if target.exists() and target.read_bytes() != data:
                    self.trash.move_aside(target, reason=f"replaced by ingesting {src}")
                shutil.copyfile(src, target)
            self._sync(report, rebuild=rebuild, extracted=extracted)
        report.seconds = time.perf_counter() - t0
        return report

    def add_document(self, name: str, data: bytes) -> IngestReport:
        """Store one uploaded document in the corpus folder and index it incrementally."""
        name = check_document_name(name)
        article = extract_article(name, data)  # refuse before anything is written
        target = self.settings.data_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        report = IngestReport()
        with self._write_lock:
            tmp = target.with_name(f".{name}.upload")
            tmp.write_bytes(data)
            if target.exists() and target.read_bytes() != data:
                # The version it replaces stays restorable.
                self.trash.move_aside(target, reason="replaced by an upload")
            tmp.replace(target)
            self._sync(report, extracted={(name, hashlib.sha256(data).hexdigest()): article})
        self._states_after_write(report)
        return report

    def delete_document(self, name: str) -> IngestReport:
        """Move an article to the trash (restorable until purged) and drop it from the index."""
        name = check_document_name(name)
        target = self.settings.data_dir / name
        report = IngestReport()
        with self._write_lock:
            if name not in self.index.files and not target.exists():
                raise KeyError(name)
            if target.exists():
                self.trash.move_aside(target, reason="deleted")
            self._sync(report)
        self._states_after_write(report)
        return report

    def trashed(self) -> list[TrashEntry]:
        """Deleted and replaced articles that can still be restored, newest first."""
        return self.trash.entries()

    def restore_document(self, key: str) -> IngestReport:
        """Bring back a trashed article (by trash id, or the newest one of that file name).

        If an article of that name is in the corpus now, it goes to the trash first, so a
        restore loses nothing either.
        """
        report = IngestReport()
        with self._write_lock:
            entry = self.trash.find(key)
            target = self.settings.data_dir / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                self.trash.move_aside(target, reason=f"replaced by restoring {entry.id}")
            self.trash.take_back(entry, target)
            self._sync(report)
        self._states_after_write(report)
        return report

    def _states_after_write(self, report: IngestReport) -> None:
        """Passage states follow the index: new chunks get theirs, gone ones lose theirs.
        A failure here loses nothing (the index is already written); it is logged and the
        next `rag ingest` retries."""
        if not self.settings.passage_states_mb or not (
            report.added or report.updated or report.removed
        ):
            return
        try:
            self.prepare_states()
        except Exception as exc:
            log.warning("passage states not updated (%s); `rag ingest` rebuilds them", exc)

    def purge_document(self, key: str) -> TrashEntry:
        """Delete a trashed article for good."""
        with self._write_lock:
            entry = self.trash.find(key)
            self.trash.purge(entry)
        return entry

    def _sync(
        self,
        report: IngestReport,
        *,
        rebuild: bool = False,
        extracted: dict[tuple[str, str], ArticleText] | None = None,
    ) -> None:
        """Index the corpus folder as it is now (``extracted``: texts already extracted for
        validation, by file name and SHA-256 of its bytes, so no file is converted twice)."""
        s = self.settings
        extracted = extracted or {}
        old = self.index if not rebuild else CorpusIndex(self.embedder.identity, self.embedder.dim)
        old_by_file: dict[str, list[int]] = {}
        for i, c in enumerate(old.chunks):
            old_by_file.setdefault(c.source, []).append(i)
        vec_by_hash = {c.hash: old.vectors[i] for i, c in enumerate(old.chunks)}

        files: dict[str, FileRecord] = {}
        texts: dict[str, str] = {}  # converted files' extracted text, kept with the generation
        keep_rows: list[int] = []
        new_chunks = []
        seen: set[str] = set()

        def keep(name: str, record: FileRecord) -> None:
            """Serve an article as the previous generation indexed it."""
            files[name] = record
            if name in old.texts:
                texts[name] = old.texts[name]
            keep_rows.extend(old_by_file.get(name, []))

        for path in discover([s.data_dir]):
            name = path.name
            if name in seen:
                report.skipped[str(path)] = f"{path}: another file is already named {name}"
                continue
            seen.add(name)
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            prev = old.files.get(name)
            if prev is not None and prev.sha256 == sha:
                keep(name, prev)
                report.unchanged.append(name)
                continue
            try:
                article = extracted.get((name, sha)) or extract_article(name, data)
            except UnreadableFile as exc:
                report.skipped[name] = str(exc)
                log.warning("skipped %s", exc)
                if prev is not None:  # keep serving the last good version
                    keep(name, prev)
                continue
            doc, chunks = chunk_article(
                name, article.text, chunk_size=s.chunk_size, chunk_overlap=s.chunk_overlap,
                title=article.title, date=article.date,
            )  # fmt: skip
            files[name] = FileRecord(
                name=name, sha256=sha, size=len(data), chunks=len(chunks),
                indexed_at=time.time(), title=article.title or doc.title,
                date=article.date or doc.date, format=article.format, author=article.author,
                pages=list(article.pages),
            )  # fmt: skip
            if article.converted:
                texts[name] = article.text
            (report.updated if prev is not None else report.added).append(name)
            new_chunks.extend(chunks)
        report.removed = sorted(set(old.files) - set(files))
        if not (report.added or report.updated or report.removed) and not rebuild:
            report.chunks = len(self.index.chunks)
            return

        todo = [c for c in new_chunks if c.hash not in vec_by_hash]
        if todo:
            fresh = self.embedder.embed_documents([embed_text(c) for c in todo])
            vec_by_hash.update({c.hash: fresh[i] for i, c in enumerate(todo)})
        report.embedded = len(todo)
        chunks = [old.chunks[i] for i in keep_rows] + new_chunks
        vectors = (
            np.stack([vec_by_hash[c.hash] for c in chunks]).astype(np.float32)
            if chunks
            else np.zeros((0, self.embedder.dim), dtype=np.float32)
        )
        index = CorpusIndex(
            self.embedder.identity, self.embedder.dim, chunks, vectors, files, texts=texts
        )
        index.build()
        if self.vectors is not None:  # new vectors go in before the new generation is live
            self.vectors.stage(self.index, index, rebuild=rebuild)
        previous = self.index
        self.store.save(index)
        self.index = index  # one reference swap: readers see the old or the new index, whole
        if self.vectors is not None:  # and those only the old one had come out after
            self.vectors.retire(previous, index)
        self._originals.clear()
        report.chunks = len(chunks)

    # --- retrieval ---------------------------------------------------------------------------
    def retrieve(
        self, query: str, k: int | None = None, filters: SearchFilter | None = None
    ) -> list[Passage]:
        """Hybrid search: dense (FAISS or the vector store) and BM25 rankings fused by
        reciprocal rank; with ``filters``, both rank the allowed chunks only."""
        k = k or self.settings.top_k
        index = self.index
        if not index.chunks:
            return []
        allowed = None
        if filters is not None:
            dates = {n: r.date for n, r in index.files.items()}
            allowed = filters.rows(dates, index.rows_by_source())
        query = nfc(query)
        depth = max(4 * k, 30)
        dense = index.dense(self.embedder.embed_query(query), depth, self.vectors, allowed)
        ranked: dict[int, dict[str, int]] = {}
        for r, (row, _) in enumerate(dense):
            ranked.setdefault(row, {})["dense"] = r + 1
        if self.settings.hybrid:
            for r, (row, _) in enumerate(index.lexical(query, depth, allowed)):
                ranked.setdefault(row, {})["bm25"] = r + 1
        c = self.settings.rrf_k
        fused = sorted(
            (
                (sum(1.0 / (c + rank) for rank in ranks.values()), row)
                for row, ranks in ranked.items()
            ),
            reverse=True,
        )
        dense_score = dict(dense)
        out = []
        for score, row in fused[:k]:
            chunk = index.chunks[row]
            ranks = ranked[row]
            p = Passage(chunk=chunk, score=score, original_text="", ranks=ranks)
            p.dense_score = dense_score.get(row, 0.0)  # type: ignore[attr-defined]
            out.append(p)
        self._attach_original(out)
        return out

    def restorer(self) -> DiacriticRestorer:
        """Diacritics restoration trained on the indexed text (rebuilt when the index changes)."""
        index = self.index
        cached = self._restorer
        if cached is None or cached[0] is not index:
            general = general_vietnamese() if self.settings.restore_general else None
            restorer = DiacriticRestorer(
                (c.text for c in index.chunks), prior=general, prior_weight=GENERAL_WEIGHT
            )
            cached = (index, restorer)
            self._restorer = cached
        return cached[1]

    def _embed_sentences(self, texts: list[str]) -> None:
        """Put the vectors of ``texts`` in the sentence cache (those not there yet)."""
        with self._sentence_lock:
            todo = [t for t in dict.fromkeys(texts) if t not in self._sentence_vecs]
        if todo:
            fresh = self.embedder.embed_documents(todo)
            with self._sentence_lock:
                for t, v in zip(todo, fresh, strict=True):
                    self._sentence_vecs[t] = v
                while len(self._sentence_vecs) > SENTENCE_CACHE:
                    self._sentence_vecs.popitem(last=False)

    def prepare_states(self) -> StateReport | None:
        """Precompute the answer model's state after the instructions and each indexed
        passage (Vietnamese and English instructions), keep those already stored, drop those
        of passages gone or changed. None when passage states are off
        (``passage_states_mb = 0``) or the engine keeps none (a remote model server)."""
        if not self.settings.passage_states_mb or not self.index.chunks:
            return None
        prefixes: list[list[ChatMessage]] = []
        tails: list[str] = []
        for english in (False, True):
            for c in self.index.chunks:
                messages, tails_ = prefix_messages(
                    c.text, english=english, worked=self.settings.prompt_examples
                )
                prefixes.append(messages)
                tails += [t for t in tails_ if t not in tails]
        report = self.generator.prepare_prefixes(prefixes, tails=tails)
        if report is not None:
            for message in report.messages:
                log.warning("%s", message)
        return report

    def embed_sentences(self) -> int:
        """Embed every sentence of the index now (the evidence step otherwise embeds each
        passage's sentences the first time a question retrieves it). Returns how many the
        cache holds."""
        texts = [c.text[s:e] for c in self.index.chunks for s, e in sentences(c.text)]
        for i in range(0, len(texts), 64):
            self._embed_sentences(texts[i : i + 64])
        with self._sentence_lock:
            return len(self._sentence_vecs)

    def _sentence_similarity(self, query: str) -> SentenceScorer:
        """Cosine of each sentence to ``query``; sentence vectors are cached by their text."""
        qv = self.embedder.embed_query(query)

        def similarity(texts: list[str]) -> list[float]:
            self._embed_sentences(texts)
            with self._sentence_lock:
                return [float(np.dot(self._sentence_vecs[t], qv)) for t in texts]

        return similarity

    def _original(self, source: str) -> str:
        """The article's text as indexed, read once per file version (not once per question);
        for a converted file, the text extracted from it."""
        index = self.index
        if source in index.texts:
            return index.texts[source]
        record = index.files.get(source)
        key = (source, record.sha256 if record else "")
        text = self._originals.get(key)
        if text is None:
            try:
                text = decode_article(source, (self.settings.data_dir / source).read_bytes())
            except (OSError, UnreadableFile):
                text = ""
            self._originals[key] = text
        return text

    def _attach_original(self, passages: list[Passage]) -> None:
        for p in passages:
            text = self._original(p.chunk.source)[p.chunk.start : p.chunk.end]
            p.original_text = text if text else p.chunk.text
            record = self.index.files.get(p.chunk.source)
            p.pages = record.pages if record is not None else []

    def document_text(self, name: str) -> str:
        """The text an article's citations point into: the file itself for .txt/.md, the
        extracted text for a converted file. KeyError if no such article is indexed."""
        name = check_document_name(name)
        if name not in self.index.files:
            raise KeyError(name)
        text = self._original(name)
        if not text:
            raise KeyError(name)  # listed a moment ago, gone from the folder since
        return text

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        sources: Iterable[str] | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> list[Citation]:
        """Ranked passages for ``query`` in the citation shape (``n`` is the rank), from the
        articles named in ``sources`` and dated within ``date_from``..``date_to`` if given."""
        q = self.check_question(query)
        filters = self.filters(sources, date_from, date_to)
        found = self.retrieve(self.query_read(q), k, filters)
        return [to_citation(i, p) for i, p in enumerate(found, 1)]

    def query_read(self, text: str) -> str:
        """What is searched and read for ``text``: an unaccented Vietnamese text with its
        diacritics back from the corpus (``rag/diacritics.py``), anything else as it is.
        Searching the restored text matters for the dense half (BM25 folds diacritics anyway):
        on the gold set's unaccented dev questions passage hit@5 went 18 → 21 of 21
        (``eval/probes/restored_search.py``)."""
        if looks_english(text) or has_vietnamese_marks(text):
            return text  # nothing to restore: the restorer is not even built
        return self.restorer().restore(text)

    def filters(
        self,
        sources: Iterable[str] | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> SearchFilter | None:
        """The search filter asked for (None: none), checked against the index: an unknown
        file name or an empty date range is a ``QuestionError`` saying so."""
        try:
            f = SearchFilter.of(sources, date_from, date_to)
            if f is not None:
                f.check(self.index.files)
        except FilterError as exc:
            raise QuestionError(str(exc)) from None
        return f

    # --- answering ---------------------------------------------------------------------------
    def check_question(self, question: str) -> str:
        q = nfc(question).strip()
        if not q:
            raise QuestionError("the question is empty")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError:
            raise QuestionError("the question is not valid Unicode text") from None
        if len(q) > self.settings.max_question_chars:
            raise QuestionError(
                f"the question has {len(q)} characters; the limit is "
                f"{self.settings.max_question_chars}"
            )
        return q

    def translate(self, question: str) -> str:
        """The English ``question`` in Vietnamese, by the answer model (greedy, one line);
        empty if the engine gives nothing usable, and the question is then read as it is."""
        done = self.generator.complete(
            translation_messages(question), max_tokens=96, temperature=0.0
        )
        lines = [ln.strip() for ln in done.text.strip().splitlines() if ln.strip()]
        return lines[0][: self.settings.max_question_chars] if lines else ""

    def search_query(self, question: str, history: list[ChatMessage]) -> str:
        """A follow-up ("Còn năm 2021 thì sao?") is searched together with the previous question."""
        prev = [m["content"] for m in history if m["role"] == "user"]
        if prev and len(question.split()) <= 12:
            return f"{prev[-1]} {question}"
        return question

    def ask(
        self,
        question: str,
        *,
        top_k: int | None = None,
        history: list[ChatMessage] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        sources: Iterable[str] | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Answer:
        """The whole answer (see ``stream``)."""
        answer = None
        for event in self.stream(
            question, top_k=top_k, history=history, max_tokens=max_tokens,
            temperature=temperature, sources=sources, date_from=date_from, date_to=date_to,
        ):  # fmt: skip
            if event.kind == "done":
                answer = event.answer
        assert answer is not None
        return answer

    def stream(
        self,
        question: str,
        *,
        top_k: int | None = None,
        history: list[ChatMessage] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        sources: Iterable[str] | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[StreamEvent]:
        """Answer ``question`` step by step; closing the iterator stops the generation.

        ``sources`` (file names) and ``date_from``/``date_to`` (article dates, inclusive)
        narrow the search before ranking; an unknown file name raises ``QuestionError``."""
        t0 = time.perf_counter()
        s = self.settings
        q = self.check_question(question)
        filters = self.filters(sources, date_from, date_to)  # refused before anything streams
        history = history or []
        english = looks_english(q)
        # An English question searched and read in the articles' language (english_translate).
        q_vi = self.translate(q) if english and s.english_translate else ""
        # What is searched and read: an unaccented question gets its diacritics back from
        # the corpus; an English one is read as it is or in its Vietnamese version.
        q_read = (q_vi or q) if english else self.query_read(q)
        t_search = time.perf_counter()
        search = self.search_query(q_read, history)
        passages = self.retrieve(search, top_k or s.top_k, filters)
        shown = [to_citation(i, p) for i, p in enumerate(passages, 1)]
        timings = Timings(
            retrieval=(time.perf_counter() - t_search) * 1000,
            translation=(t_search - t0) * 1000 if q_vi else 0.0,
        )
        yield StreamEvent("passages", passages=shown)

        # Evidence: the retrieved passages' sentences that best match the question.
        similarity = self._sentence_similarity(q_read)
        if s.evidence_layout == "top-passage":
            picked = top_passage_evidence(
                passages, q_read, budget=s.context_rest_chars,
                max_sentences=max(1, s.context_sentences - 2), similarity=similarity,
            )  # fmt: skip
        else:
            picked = evidence_sentences(
                passages, q_read, budget=s.context_chars, max_sentences=s.context_sentences,
                similarity=similarity, best_match_first=s.evidence_order == "best-match-first",
            )  # fmt: skip
        if s.evidence_order == "best-last" and s.evidence_layout == "sentences":
            picked = best_last(picked)
        context = [_narrow(p) for p in picked]
        not_found = NOT_FOUND_EN if english else NOT_FOUND_VI
        best = max((getattr(p, "dense_score", 0.0) for p in passages), default=0.0)
        if not context or (s.min_score > 0 and best < s.min_score):
            log.info("abstaining before generation: no passage close enough (best %.3f)", best)
            timings.total = (time.perf_counter() - t0) * 1000
            yield StreamEvent("token", token=not_found)
            yield StreamEvent("done", answer=Answer(
                question=q, answer=not_found, abstained=True, citations=[], passages=shown,
                timings_ms=timings, confidence=0.0,
            ))  # fmt: skip
            return

        unknown = unknown_terms(q, self.index.vocabulary, english=english)
        messages = build_messages(
            q if q_vi else q_read, context, english=english, history=history,
            worked=s.prompt_examples, vietnamese=q_vi,
        )  # fmt: skip
        reading = self.reader.read(
            self.generator, messages, context, question=q_read, not_found=not_found,
            max_tokens=max_tokens or s.max_tokens,
            temperature=s.temperature if temperature is None else temperature,
            dense_top=best, unknown_terms=len(unknown), english=english,
            item_similarity=similarity([p.chunk.text for p in context]),
            contrast=without_evidence(messages, english=english) if s.contrast_alpha else None,
            alpha=s.contrast_alpha,
        )  # fmt: skip
        if reading.completion is not None:
            timings.prompt_tokens = reading.completion.prompt_tokens
            timings.state_tokens = reading.completion.state_tokens
            done = reading.completion
            # Tokens of answer text (the end-of-turn token closes it but says nothing).
            timings.generated_tokens = len(done.token_logprobs) - (1 if done.finished else 0)
            timings.decode = reading.completion.decode_s * 1000
        # The reader decides before anything is shown, so what streams is the final answer.
        timings.first_token = (time.perf_counter() - t0) * 1000
        for piece in re.findall(r"\S+\s*", reading.text):
            yield StreamEvent("token", token=piece)
        citations = []
        for n in reading.cited:
            c = to_citation(n, context[n - 1])
            c.highlights = highlights(context[n - 1], reading.claims.get(n, []))
            citations.append(c)
        timings.total = (time.perf_counter() - t0) * 1000
        answer = Answer(
            question=q, answer=reading.text, abstained=reading.abstained, citations=citations,
            passages=shown, timings_ms=timings, confidence=round(reading.confidence, 4),
        )  # fmt: skip
        trace = describe(reading)
        trace["unknown_terms"] = unknown
        trace["question_read"] = q_read
        answer.reader = trace
        read = reading.completion
        if (
            s.passage_states_mb
            and s.evidence_layout == "top-passage"
            and not history
            and (read is not None and read.prompt_tokens and not read.state_tokens)
        ):
            # Its top passage had no stored state (the store was full): keep one now, the
            # least recently used making room (after the answer's last token, before "done").
            prefix, tails = prefix_messages(
                context[0].chunk.text, english=english, worked=s.prompt_examples
            )
            self.generator.remember_prefix(prefix, tails=tails)
        yield StreamEvent("done", answer=answer)

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "files": len(self.index.files),
            "chunks": len(self.index.chunks),
            "vector_store": self.vectors.describe() if self.vectors else {"engine": "faiss"},
            "embedding_model": self.embedder.identity,
            "generator_model": answer_model(self.settings),
            "answer_engine": self.engine_state(),
        }


def answer_model(s: Settings) -> str:
    """Which model answers: a remote server's model (its name, else its URL), "fake", or the
    local GGUF. The reader's calibration is looked up by this name."""
    if s.llm_url:
        return s.llm_model or s.llm_url
    return "fake" if s.generator == "fake" else s.generator_model


def embed_text(chunk: object) -> str:
    """What is embedded for a chunk: its article title gives every passage its topic."""
    title = getattr(chunk, "title", "")
    text: str = getattr(chunk, "text", "")
    return f"{title}\n{text}" if title and not text.startswith(title) else text


def _narrow(p: Passage) -> Passage:
    """Give a passage cut down for the prompt the exact file offsets of what is left."""
    idx = p.original_text.find(p.chunk.text)
    if p.chunk.text == p.original_text or idx < 0:
        return p
    start = p.chunk.start + idx
    chunk = replace(p.chunk, start=start, end=start + len(p.chunk.text))
    return replace(p, chunk=chunk, original_text=p.chunk.text)


def highlights(p: Passage, claims: list[str]) -> list[Span]:
    """File offsets of the passage sentence that best supports each claim citing it."""
    spans: list[Span] = []
    text = p.original_text
    sents = sentences(text)
    for claim in claims:
        if not sents:
            break
        s, e = max(sents, key=lambda se: support(claim, text[se[0] : se[1]]))
        span = Span(start=p.chunk.start + s, end=p.chunk.start + e)
        if span not in spans:
            spans.append(span)
    return sorted(spans, key=lambda sp: sp.start)


def to_citation(n: int, p: Passage) -> Citation:
    return Citation(
        n=n,
        source=p.chunk.source,
        start=p.chunk.start,
        end=p.chunk.end,
        text=p.original_text,
        score=round(p.score, 6),
        title=p.chunk.title,
        text_source=text_source(p.chunk.source),
        page=page_of(p.pages, p.chunk.start),
    )


__all__ = [
    "RAG", "DocumentError", "IndexError_", "IngestReport", "QuestionError", "SearchFilter",
    "StreamEvent",
]  # fmt: skip
