"""Run the gold questions through a backend (in-process or HTTP) and record per-item results."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from tqdm import tqdm

from rag.evaluation import metrics as m
from rag.types import Answer, Citation

if TYPE_CHECKING:
    from rag.service import RAG

SEARCH_K = 10
HIT_KS = (1, 3, 5, 10)


# --- gold --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GoldItem:
    id: str
    question: str
    answers: list[list[str]]
    sources: list[str]
    type: str

    @property
    def answerable(self) -> bool:
        return bool(self.sources)


def load_gold(path: Path, limit: int | None = None) -> list[GoldItem]:
    """Read the gold JSONL (blank lines skipped); a malformed line is an error naming its line."""
    items: list[GoldItem] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            item = GoldItem(
                id=str(d["id"]),
                question=str(d["question"]),
                answers=[[str(s) for s in alt] for alt in d["answers"]],
                sources=[str(s) for s in d["sources"]],
                type=str(d.get("type", "untyped")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: not a gold item ({exc})") from exc
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items


def split_of(item_id: str) -> str:
    """``dev`` or ``test``, fixed by a hash of the id: tune on dev, judge on test."""
    return "dev" if int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % 2 == 0 else "test"


# --- backends ----------------------------------------------------------------------------------
class Backend(Protocol):
    """Where the questions go: the library in this process, or a running server."""

    label: str

    def search(self, query: str, k: int) -> tuple[list[Citation], float]:
        """Ranked passages and the retrieval time in milliseconds."""
        ...

    def ask(self, question: str) -> Answer: ...

    def describe(self) -> dict[str, Any]:
        """Models and settings in use, for the report's configuration section."""
        ...


_SETTINGS_THAT_MATTER = (
    "embedder", "embedding_model", "generator", "generator_model", "chunk_size",
    "chunk_overlap", "top_k", "context_sentences", "context_chars", "hybrid", "rrf_k",
    "min_score", "max_tokens", "temperature", "n_ctx", "n_threads", "embed_max_seq_length",
)  # fmt: skip


class InProcessBackend:
    """Calls a ``RAG`` object directly; the answer model is loaded on the first ``ask``."""

    label = "in-process"

    def __init__(self, rag: RAG) -> None:
        self.rag = rag

    def search(self, query: str, k: int) -> tuple[list[Citation], float]:
        t0 = time.perf_counter()
        hits = self.rag.search(query, k)
        return hits, (time.perf_counter() - t0) * 1000

    def ask(self, question: str) -> Answer:
        return self.rag.ask(question)

    def describe(self) -> dict[str, Any]:
        s = self.rag.settings
        health = self.rag.health()
        return {
            "backend": self.label,
            "embedding_model": health["embedding_model"],
            "generator_model": health["generator_model"],
            "files": health["files"],
            "chunks": health["chunks"],
            "settings": {name: _plain(getattr(s, name)) for name in _SETTINGS_THAT_MATTER},
        }


class HttpClient(Protocol):
    """What the HTTP backend needs of a client: ``httpx.Client`` or Starlette's TestClient."""

    def request(self, method: str, url: str, *, params: Any = None, json: Any = None) -> Any: ...

    def close(self) -> None: ...


class BackendError(RuntimeError):
    """The server answered with an error status."""


class HttpBackend:
    """Talks to a running server (``rag serve``) through its public HTTP API.

    ``client`` may be any ``httpx.Client`` (FastAPI's TestClient is one), which is how the tests
    run it without a network.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        client: HttpClient | None = None,
        timeout: float = 900.0,
        retries: int = 3,
    ) -> None:
        self.label = url
        self.client: HttpClient = client or httpx.Client(base_url=url, timeout=timeout)
        self.retries = retries

    def _send(self, method: str, path: str, *, params: Any = None, json: Any = None) -> Any:
        for attempt in range(self.retries + 1):
            r = self.client.request(method, path, params=params, json=json)
            # 503 means other clients hold the answer model; waiting is the documented remedy.
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(float(r.headers.get("retry-after", "5")))
                continue
            if r.status_code >= 400:
                raise BackendError(f"HTTP {r.status_code} from {path}: {r.text[:300]}")
            return r.json()
        raise AssertionError("unreachable")

    def search(self, query: str, k: int) -> tuple[list[Citation], float]:
        t0 = time.perf_counter()
        body = self._send("GET", "/v1/search", params={"q": query, "k": k})
        wall = (time.perf_counter() - t0) * 1000
        # The server's own timing leaves the network and JSON out, like the in-process figure.
        ms = float(body.get("timings_ms", {}).get("total", wall))
        return [Citation.model_validate(p) for p in body["passages"]], ms

    def ask(self, question: str) -> Answer:
        return Answer.model_validate(self._send("POST", "/v1/ask", json={"question": question}))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": "http", "url": self.label}
        try:
            info.update(self._send("GET", "/healthz"))
        except Exception as exc:  # the report says why instead of failing the run
            info["healthz_error"] = str(exc)
        return info

    def close(self) -> None:
        self.client.close()


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


# --- per-item records --------------------------------------------------------------------------
@dataclass
class PassageRef:
    """A retrieved or cited passage, without its text (the report stays small)."""

    n: int
    source: str
    start: int
    end: int
    score: float
    answer_bearing: bool


@dataclass
class ItemRecord:
    id: str
    type: str
    question: str
    answers: list[list[str]]
    sources: list[str]
    retrieved: list[PassageRef] = field(default_factory=list)
    search_ms: float | None = None
    # Retrieval metrics exist for answerable items only; keys are k as strings ("1", "3", ...).
    file_hit: dict[str, bool] = field(default_factory=dict)
    passage_hit: dict[str, bool] = field(default_factory=dict)
    reciprocal_rank: float | None = None
    # Answer fields stay None in a retrieval-only run.
    answer: str | None = None
    abstained: bool | None = None
    cited: list[PassageRef] = field(default_factory=list)
    correct: bool | None = None
    token_f1: float | None = None
    citation_precision: float | None = None
    citation_recall: float | None = None
    supported: bool | None = None
    retrieval_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float | None = None
    generated_tokens: int | None = None
    prompt_tokens: int | None = None
    state_tokens: int | None = None
    decode_ms: float | None = None
    error: str | None = None
    # The reader's decision: its proposed answer, whether that was right, its confidence and
    # the signals behind it (in-process runs only), and the item's dev/test split.
    split: str = ""
    draft: str | None = None
    draft_correct: bool | None = None
    confidence: float | None = None
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def answerable(self) -> bool:
        return bool(self.sources)

    @property
    def asked(self) -> bool:
        return self.correct is not None

    @property
    def retrieval_ok(self) -> bool:
        """No passage of a gold file in the top 5 counts as a retrieval miss."""
        return not self.answerable or self.file_hit.get("5", False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemRecord:
        d = dict(d)
        d["retrieved"] = [PassageRef(**p) for p in d.get("retrieved", [])]
        d["cited"] = [PassageRef(**p) for p in d.get("cited", [])]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def _ref(c: Citation, item: GoldItem) -> PassageRef:
    bearing = m.answer_bearing(c.source, c.text, item.answers, item.sources)
    return PassageRef(c.n, c.source, c.start, c.end, c.score, bearing)


def score_retrieval(rec: ItemRecord, item: GoldItem, hits: Sequence[Citation]) -> None:
    rec.retrieved = [_ref(c, item) for c in hits]
    if not item.answerable:
        return
    ranked = [c.source for c in hits]
    pairs = [(c.source, c.text) for c in hits]
    for k in HIT_KS:
        rec.file_hit[str(k)] = m.file_hit_at_k(ranked, item.sources, k)
        rec.passage_hit[str(k)] = m.passage_hit_at_k(pairs, item.answers, item.sources, k)
    rec.reciprocal_rank = m.reciprocal_rank(ranked, item.sources, SEARCH_K)


def score_answer(rec: ItemRecord, item: GoldItem, answer: Answer | None) -> None:
    """Fill the answer metrics; ``answer`` None (the ask failed) scores as a wrong answer."""
    text = answer.answer if answer else ""
    abstained = answer.abstained if answer else False
    citations = answer.citations if answer else []
    rec.answer = text
    rec.abstained = abstained
    rec.cited = [_ref(c, item) for c in citations]
    rec.correct = m.item_correct(text, abstained, item.answers)
    if item.answerable:
        # An abstention answers nothing, so it scores 0 even if its wording shares syllables.
        rec.token_f1 = 0.0 if abstained else m.token_f1(text, item.answers)
        cited_sources = [c.source for c in citations]
        rec.citation_precision = m.citation_precision(cited_sources, item.sources)
        rec.citation_recall = m.citation_recall(cited_sources, item.sources)
        if not abstained:
            rec.supported = m.supported([c.text for c in citations], item.answers)
    if answer is not None and answer.reader:
        trace = answer.reader
        rec.draft = str(trace.get("draft", ""))
        rec.draft_correct = item.answerable and m.answer_correct(rec.draft, item.answers)
        rec.signals = {k: float(v) for k, v in trace.get("signals", {}).items()}
        rec.confidence = answer.confidence
        rec.signals["engine_first_token_ms"] = float(trace.get("engine_first_token_ms", 0.0))
    if answer is not None:
        t = answer.timings_ms
        rec.prompt_tokens = t.prompt_tokens
        rec.state_tokens = t.state_tokens
        rec.decode_ms = t.decode or None
        rec.retrieval_ms = t.retrieval
        rec.first_token_ms = t.first_token
        rec.total_ms = t.total
        rec.generated_tokens = t.generated_tokens


def evaluate_item(backend: Backend, item: GoldItem, *, retrieval_only: bool) -> ItemRecord:
    """One gold item through search and (unless retrieval-only) ask; failures are recorded."""
    rec = ItemRecord(item.id, item.type, item.question, item.answers, item.sources)
    rec.split = split_of(item.id)
    errors: list[str] = []
    try:
        hits, rec.search_ms = backend.search(item.question, SEARCH_K)
    except Exception as exc:  # any failure is the item's result, not the run's end
        errors.append(f"search: {type(exc).__name__}: {exc}")
        hits = []
    score_retrieval(rec, item, hits)
    if not retrieval_only:
        answer: Answer | None = None
        try:
            answer = backend.ask(item.question)
        except Exception as exc:  # as above
            errors.append(f"ask: {type(exc).__name__}: {exc}")
        score_answer(rec, item, answer)
    rec.error = "; ".join(errors) or None
    return rec


def run(
    backend: Backend,
    items: Sequence[GoldItem],
    *,
    retrieval_only: bool = False,
    progress: bool = True,
) -> list[ItemRecord]:
    """Evaluate every item in order, showing a progress bar with running figures."""
    records: list[ItemRecord] = []
    bar = tqdm(items, desc="eval", unit="q", disable=not progress, dynamic_ncols=True)
    for item in bar:
        records.append(evaluate_item(backend, item, retrieval_only=retrieval_only))
        answerable = [r for r in records if r.answerable]
        post = {"hit@5": m.rate([r.file_hit.get("5", False) for r in answerable])}
        if not retrieval_only:
            post["correct"] = m.rate([bool(r.correct) for r in records])
        shown = {k: "-" if v is None else f"{v:.2f}" for k, v in post.items()}
        bar.set_postfix(shown, refresh=False)  # redrawn at tqdm's own pace, not per item
    bar.close()
    return records
