"""The benchmark itself: one method per section."""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rag.bench import variants as variants_module
from rag.bench.helpers import (
    RecordingGenerator,
    _count_tokens,
    _llm,
    _rag,
    _retrieval_quality,
    corpus_chunks,
)
from rag.bench.machine import (
    CpuWatch,
    _rss_delta,
    _versions,
    machine_info,
    rss_bytes,
    tree_rss_bytes,
)
from rag.bench.options import (
    REPORT_VERSION,
    SECTIONS,
    WARMUP_QUESTION,
    BenchOptions,
    Engines,
)
from rag.bench.pieces import (
    ban_eos,
    bm25_bytes,
    choose_variant,
    chunk_table_bytes,
    configured_speedup,
    direct_stream,
    ef_sweep,
    lexical_bincount,
    recall_at,
    service_stream,
    syllable_vocab,
    synthetic_chunks,
    synthetic_queries,
    synthetic_vectors,
    tokenize_timing,
)
from rag.bench.report import targets
from rag.bench.server import http_evidence, serve, startup_parts
from rag.bench.stats import _clean, _ms, _round, decode_rate, dist, latency_block, over_runs
from rag.bench.variants import base_variant, configured_variant, knobs, weights_key
from rag.embedding import Embedder, SentenceTransformerEmbedder, Vectors
from rag.embedding.lookup import LookupEmbedder
from rag.evaluation.metrics import percentile
from rag.evaluation.report import _git
from rag.evaluation.runner import GoldItem, load_gold
from rag.generation import ChatMessage, FakeGenerator, Generator
from rag.settings import Settings


# --- the benchmark -------------------------------------------------------------------------------
class Bench:
    def __init__(self, engines: Engines, options: BenchOptions) -> None:
        self.engines = engines
        self.opt = options
        self.settings = engines.settings
        self._items: list[GoldItem] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="rag-bench-"))
        self._index_dir: Path | None = None
        self._index: Any = None  # the loaded CorpusIndex, shared by the services made here
        self.notes: list[str] = []

    # --- shared pieces ---------------------------------------------------------------------------
    @property
    def items(self) -> list[GoldItem]:
        if self._items is None:
            self._items = load_gold(self.opt.gold)
        return self._items

    def questions(self, limit: int | None = None) -> list[GoldItem]:
        n = limit if limit is not None else self.opt.questions
        return self.items[:n] if n is not None else list(self.items)

    def index_dir(self) -> Path:
        """The configured index when it matches the embedder, else one built here."""
        if self._index_dir is None:
            from rag.index import IndexError_, IndexStore

            emb = self.engines.embedder()
            store = IndexStore(self.settings.index_dir)
            try:
                if store.exists():
                    self._index = store.load(expected_embedder=emb.identity)
            except IndexError_:
                self._index = None
            if self._index is not None and self._index.chunks:
                self._index_dir = self.settings.index_dir
            else:
                self._index_dir = self._tmp / "index"
                self.notes.append(
                    f"no usable index in {self.settings.index_dir}: built one for the benchmark"
                )
                service = _rag(self.settings, emb, None, self._index_dir)
                service.ingest()
                self._index = service.index
        return self._index_dir

    def service(self, settings: Settings, generator: Generator | None) -> Any:
        """A ``RAG`` on the configured embedder and the benchmark's index (loaded once)."""
        self.index_dir()
        rag = _rag(settings, self.engines.embedder(), generator, self._tmp / "no-index")
        rag.index = self._index
        return rag

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    # --- run -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        watch = CpuWatch()
        t0 = time.perf_counter()
        report: dict[str, Any] = {
            "version": REPORT_VERSION,
            "config": self.config(),
            "targets": [],
            "sections": {},
            "errors": {},
        }
        for name in SECTIONS:
            if name not in self.opt.sections:
                continue
            self.opt.log(f"section {name}")
            s0 = time.perf_counter()
            try:
                result = getattr(self, f"bench_{name}")()
            except Exception as exc:  # one broken section must not lose the others' figures
                report["errors"][name] = f"{type(exc).__name__}: {exc}"
                self.opt.log(f"section {name} failed: {exc}")
                continue
            finally:
                gc.collect()
            result["seconds"] = round(time.perf_counter() - s0, 2)
            report["sections"][name] = result
        report["config"]["seconds"] = round(time.perf_counter() - t0, 2)
        report["config"]["cpu_during_run"] = watch.result()
        report["config"]["embedder_load_s"] = _round(self.engines.embedder_load_s)
        report["config"]["notes"] = self.notes
        report["targets"] = targets(report)
        return report

    def config(self) -> dict[str, Any]:
        s = self.settings
        models: dict[str, Any] = {
            "embedder": s.embedding_model if s.embedder != "fake" else "fake (hashing)",
            "generators": dict(self.engines.generator_models)
            if s.generator != "fake"
            else {"default": "fake"},
        }
        for role, name in self.engines.generator_models.items():
            path = s.models_dir / f"{name}.gguf"
            if path.is_file():
                models[f"{role}_gguf_bytes"] = path.stat().st_size
        status = _git("status", "--porcelain")
        opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.opt).items()
                if k != "progress"}  # fmt: skip
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": {"commit": _git("rev-parse", "HEAD"),
                    "dirty": bool(status) if status is not None else None},
            "machine": machine_info(),
            "versions": _versions(),
            "models": models,
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in s.model_dump().items() if k not in ("api_keys",)},
            "options": opts,
        }  # fmt: skip

    # --- first evidence --------------------------------------------------------------------------
    def bench_evidence(self) -> dict[str, Any]:
        """Request to ``passages`` event, in-process; cold (query embedding computed) and warm
        (embedding from the query cache), with the parts of the cold time."""
        from rag.service import RAG
        from rag.text import nfc

        emb = self.engines.embedder()
        rag: RAG = self.service(self.settings, None)
        items = self.questions()
        depth = max(4 * self.settings.top_k, 30)
        self._first_evidence(rag, items[0].question)  # warm-up: imports, first file reads
        names = ("cold", "warm", "embed", "embed_1t", "dense", "lexical", "rest")
        torch = sys.modules.get("torch") if isinstance(emb, SentenceTransformerEmbedder) else None
        runs: dict[str, list[list[float | None]]] = {k: [] for k in names}
        for _ in range(self.opt.repeat):
            row: dict[str, list[float | None]] = {k: [] for k in names}
            for item in items:
                q = item.question
                key = nfc(nfc(q).strip())  # what RAG.stream hands to Embedder.embed_query
                t0 = time.perf_counter()
                vec = emb._embed_query(key)  # bypasses the query cache
                row["embed"].append(_ms(t0))
                if torch is not None and self.settings.n_threads > 1:
                    torch.set_num_threads(1)  # does the second thread pay for one query?
                    t0 = time.perf_counter()
                    emb._embed_query(key)
                    row["embed_1t"].append(_ms(t0))
                    torch.set_num_threads(self.settings.n_threads)
                emb.__dict__.get("_qcache", {}).pop(key, None)
                cold = self._first_evidence(rag, q)
                warm = self._first_evidence(rag, q)
                t0 = time.perf_counter()
                rag.index.dense(vec, depth)
                dense = _ms(t0)
                t0 = time.perf_counter()
                if self.settings.hybrid:
                    rag.index.lexical(key, depth)
                lexical = _ms(t0)
                row["cold"].append(cold)
                row["warm"].append(warm)
                row["dense"].append(dense)
                row["lexical"].append(lexical)
                row["rest"].append(max(0.0, warm - dense - lexical))
            for k in names:
                runs[k].append(row[k])
        out: dict[str, Any] = {
            "questions": len(items),
            "chunks": len(rag.index.chunks),
            "in_process": {
                "cold_ms": latency_block(runs["cold"]),
                "warm_ms": latency_block(runs["warm"]),
                "parts_ms": {
                    "query_embedding": latency_block(runs["embed"]),
                    "query_embedding_on_1_thread": latency_block(runs["embed_1t"]),
                    "dense_search": latency_block(runs["dense"]),
                    "bm25": latency_block(runs["lexical"]),
                    "fusion_and_passages": latency_block(runs["rest"]),
                },
            },
            "definition": "perf_counter from calling RAG.stream(question) to receiving its "
            "'passages' event; cold = query embedding not in the cache, warm = cached; parts "
            "are timed separately on the same question (query embedding alone, "
            "CorpusIndex.dense, CorpusIndex.lexical; the rest = warm - dense - bm25).",
        }
        parts = out["in_process"]["parts_ms"]
        for name in list(parts):
            parts[name].pop("samples", None)
            if not parts[name]["pooled"]["n"]:
                del parts[name]
        if self.opt.url:
            out["http"] = http_evidence(self.opt.url, items, self.opt.repeat)
        return out

    @staticmethod
    def _first_evidence(rag: Any, question: str) -> float:
        t0 = time.perf_counter()
        it = rag.stream(question)
        try:
            ev = next(it)
            assert ev.kind == "passages"
            return _ms(t0)
        finally:
            it.close()

    # --- first token -----------------------------------------------------------------------------
    def _models(self) -> list[tuple[str, str]]:
        models = [(r, m) for r, m in self.engines.generator_models.items() if r == "default"]
        if self.opt.small_too:
            models += [(r, m) for r, m in self.engines.generator_models.items() if r == "small"]
        return models or [("default", self.settings.generator_model)]

    def _load_generator(self, model: str) -> tuple[RecordingGenerator, float]:
        gc.collect()
        t0 = time.perf_counter()
        gen = self.engines.make_generator(model)
        return RecordingGenerator(gen), time.perf_counter() - t0

    def bench_first_token(self) -> dict[str, Any]:
        from rag.service import RAG

        self.index_dir()  # embedder and index first, so the model load time stays apart
        items = self.questions()
        prefix_items = items[: self.opt.prefix_questions]
        out: dict[str, Any] = {"questions": len(items), "models": {}}
        for role, model in self._models():
            self.opt.log(f"first token: {model}")
            gen, load_s = self._load_generator(model)
            settings = self.settings.model_copy(update={"generator_model": model})
            rag: RAG = self.service(settings, gen)
            llm = _llm(gen)
            # Not a gold question: a measured question must never follow itself, or llama.cpp
            # would find its whole prompt cached.
            first_after_load, _ = self._first_token(rag, WARMUP_QUESTION)
            last = WARMUP_QUESTION
            system_tokens = _count_tokens(gen, [gen.calls[-1][0]]) if gen.calls else None
            ttft: list[list[float | None]] = []
            evid: list[list[float | None]] = []
            prompt_tokens: list[int] = []
            prompt_rate: list[float | None] = []
            no_model = 0
            by_q: dict[str, list[float]] = {}
            for _ in range(self.opt.repeat):
                t_row: list[float | None] = []
                e_row: list[float | None] = []
                for item in items:
                    if item.question == last:
                        self._first_token(rag, WARMUP_QUESTION)
                    last = item.question
                    calls = len(gen.calls)
                    tok, ev = self._first_token(rag, item.question)
                    e_row.append(ev)
                    if len(gen.calls) == calls:  # answered "not found" without the model
                        no_model += 1
                        continue
                    t_row.append(tok)
                    if tok is not None:
                        by_q.setdefault(item.id, []).append(tok)
                    n = _count_tokens(gen, gen.calls[-1])
                    if n is not None and len(prompt_tokens) < len(items):
                        prompt_tokens.append(n)
                    if n is not None and tok is not None and ev is not None and tok > ev:
                        # Tokens after the reused system prompt, per second of waiting.
                        prompt_rate.append((n - (system_tokens or 0)) / ((tok - ev) / 1000))
                ttft.append(t_row)
                evid.append(e_row)
            prefix = self._prefix_effect(rag, llm, prefix_items, by_q)
            busy = (
                self._evidence_while_generating(rag, llm, items[:10]) if role == "default" else None
            )
            out["models"][role] = {
                "model": model,
                "load_s": _round(load_s),
                "first_request_after_load_ms": _round(first_after_load),
                "ttft_ms": latency_block(ttft),
                "evidence_ms": latency_block(evid),
                "answered_without_model": no_model,
                "prompt_tokens": dist(prompt_tokens),
                "system_prompt_tokens": system_tokens,
                "prompt_tok_s_after_prefix": dist(prompt_rate),
                "prefix_cache": prefix,
                "evidence_while_generating_ms": busy,
            }
            out["models"][role]["evidence_ms"].pop("samples", None)
            del rag, gen, llm
            gc.collect()
        out["definition"] = (
            "perf_counter from calling RAG.stream(question) to its first 'token' event (the "
            "stream is then closed); questions the service answers 'not found' without calling "
            "the model are left out and counted. prefix_cache: the same questions with "
            "Llama.reset() before each (no prompt reuse) against the normal runs."
        )
        return out

    def bench_states(self) -> dict[str, Any]:
        from rag.bench.states import bench_states

        return bench_states(self)

    def _evidence_while_generating(
        self, rag: Any, llm: Any, items: Sequence[GoldItem]
    ) -> dict[str, Any] | None:
        """First evidence (query embedding cold) while the answer model generates in another
        thread, as when a question reaches the server during someone else's answer; with the
        embedder's threads as configured and on one thread."""
        if llm is None:
            return None
        import threading

        from rag.text import nfc

        emb = self.engines.embedder()
        torch = sys.modules.get("torch") if isinstance(emb, SentenceTransformerEmbedder) else None
        stop = threading.Event()
        tokens = [0]
        messages: list[ChatMessage] = [{"role": "user", "content": WARMUP_QUESTION}]

        def generate() -> None:
            with ban_eos(llm, enabled=True):
                while not stop.is_set():
                    stream = llm.create_chat_completion(
                        messages=messages, max_tokens=64, temperature=0.0, top_k=1,
                        repeat_penalty=1.05, stream=True,
                    )  # fmt: skip
                    for _ in stream:
                        tokens[0] += 1
                        if stop.is_set():
                            break
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()

        out: dict[str, Any] = {"questions": len(items)}
        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            deadline = time.perf_counter() + 120
            while tokens[0] < 2 and worker.is_alive() and time.perf_counter() < deadline:
                time.sleep(0.05)  # the prompt is read; decoding has begun
            for label, threads in (("threads_as_configured", None), ("embedder_on_1_thread", 1)):
                if threads is not None and torch is None:
                    continue
                ms: list[float | None] = []
                for item in items:
                    emb.__dict__.get("_qcache", {}).pop(nfc(nfc(item.question).strip()), None)
                    if threads is not None and torch is not None:
                        torch.set_num_threads(threads)
                    try:
                        ms.append(self._first_evidence(rag, item.question))
                    finally:
                        if torch is not None:
                            torch.set_num_threads(self.settings.n_threads)
                out[label] = dist(ms)
        finally:
            stop.set()
            worker.join(timeout=300)
        out["tokens_generated_meanwhile"] = tokens[0]
        return out

    @staticmethod
    def _first_token(rag: Any, question: str) -> tuple[float | None, float | None]:
        t0 = time.perf_counter()
        tok = ev = None
        it = rag.stream(question)
        try:
            for event in it:
                if event.kind == "passages":
                    ev = _ms(t0)
                elif event.kind == "token":
                    tok = _ms(t0)
                    break
        finally:
            it.close()
        return tok, ev

    def _prefix_effect(
        self, rag: Any, llm: Any, items: Sequence[GoldItem], normal: dict[str, list[float]]
    ) -> dict[str, Any]:
        if llm is None or not hasattr(llm, "reset"):
            return {"measured": False, "why": "the answer engine has no llama.cpp state"}
        cold: list[float | None] = []
        warm: list[float | None] = []
        for item in items:
            llm.reset()
            tok, _ = self._first_token(rag, item.question)
            cold.append(tok)
            warm.append(percentile(normal.get(item.id, []), 50))
        c, w = percentile(_clean(cold), 50), percentile(_clean(warm), 50)
        return {
            "measured": True,
            "questions": len(items),
            "reset_ttft_ms": dist(cold),
            "normal_ttft_ms": dist(warm),
            "saving_ms_p50": _round(c - w) if c is not None and w is not None else None,
        }

    # --- decoding through the service vs direct ------------------------------------------------
    def bench_decode(self) -> dict[str, Any]:
        from rag.service import RAG

        self.index_dir()
        items = [i for i in self.questions() if i.answerable][: self.opt.decode_questions]
        n_tok = self.opt.decode_tokens
        out: dict[str, Any] = {"max_tokens": n_tok, "ignore_eos": self.opt.ignore_eos,
                               "questions": [i.id for i in items], "models": {}}  # fmt: skip
        for role, model in self._models():
            self.opt.log(f"decode: {model}")
            gen, _ = self._load_generator(model)
            llm = _llm(gen)
            if llm is None:
                out["models"][role] = {"measured": False, "why": "no llama.cpp engine to compare"}
                continue
            settings = self.settings.model_copy(update={"generator_model": model})
            rag: RAG = self.service(settings, gen)
            pairs: list[dict[str, Any]] = []
            with ban_eos(llm, enabled=self.opt.ignore_eos) as banned:
                prompts: dict[str, list[ChatMessage]] = {}
                for item in items:  # the exact prompt the service builds
                    self._first_token(rag, item.question)
                    if gen.calls:
                        prompts[item.id] = gen.calls[-1]
                rag._generator = gen.inner  # time the service exactly as it runs
                for r in range(self.opt.repeat):
                    for j, item in enumerate(items):
                        if item.id not in prompts:
                            continue
                        order = ("direct", "service") if (r + j) % 2 == 0 else ("service", "direct")
                        got: dict[str, tuple[list[float], str]] = {}
                        for path in order:
                            if path == "direct":
                                got[path] = direct_stream(llm, prompts[item.id], n_tok,
                                                          self.settings.temperature)  # fmt: skip
                            else:
                                got[path] = service_stream(rag, item.question, n_tok,
                                                           self.settings.temperature)  # fmt: skip
                        (ds, dt), (ss, st) = got["direct"], got["service"]
                        n = min(len(ds), len(ss))
                        d_rate, s_rate = decode_rate(ds, n), decode_rate(ss, n)
                        pairs.append({
                            "run": r, "question": item.id, "order": list(order),
                            "tokens_direct": len(ds), "tokens_service": len(ss),
                            "tokens_compared": n,
                            "direct_tok_s": _round(d_rate), "service_tok_s": _round(s_rate),
                            "ratio": _round(s_rate / d_rate) if d_rate and s_rate else None,
                            "same_text": dt == st,
                        })  # fmt: skip
            runs = sorted({p["run"] for p in pairs})
            ratio_runs = [
                percentile(_clean([p["ratio"] for p in pairs if p["run"] == r]), 50) for r in runs
            ]
            out["models"][role] = {
                "model": model,
                "eos_tokens_banned": banned,
                "direct_tok_s": over_runs([p["direct_tok_s"] for p in pairs]),
                "service_tok_s": over_runs([p["service_tok_s"] for p in pairs]),
                "ratio": over_runs(ratio_runs),
                "pairs": pairs,
            }
            del rag, gen, llm
            gc.collect()
        out["definition"] = (
            "For each question the service's own prompt (recorded from RAG.stream) is sent to "
            "Llama.create_chat_completion(stream=True) directly, with the settings "
            "LlamaCppGenerator uses (temperature, top_k=1 at temperature 0, repeat_penalty "
            "1.05), and the question is asked through RAG.stream with the same max_tokens; the "
            "two alternate in order. Rate = (n-1)/(time of token n - time of token 1) over the n "
            "tokens both produced; ratio = service / direct per pair, median per run. With "
            "ignore_eos the end-of-generation tokens get a -1e9 logit bias in both paths."
        )
        return out

    # --- ingest speed and quality per embedder variant ------------------------------------------
    def bench_ingest(self) -> dict[str, Any]:
        """Variants that share weights (fp32 with another sequence length, batch or thread
        count) share one loaded model; every round times each variant once, in turn, so a
        change in the machine's load hits all of them alike."""
        from rag.index import CorpusIndex
        from rag.service import embed_text

        chunks = corpus_chunks(self.settings)
        texts = [embed_text(c) for c in chunks]
        names = self.opt.variants or tuple(v.name for v in variants_module.VARIANTS)
        known = {v.name: v for v in variants_module.VARIANTS}
        mine = configured_variant(self.settings)
        if mine in known and mine not in names:  # the service's own embedder is always timed
            names = (*names, mine)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {sorted(known)}")
        capped = self.opt.ingest_passages is not None and self.opt.ingest_passages < len(texts)
        items = self.questions()
        results: dict[str, Any] = {}
        loaded: dict[tuple[str, str | None, str], Embedder] = {}
        try:
            for name in names:  # load each set of weights once
                v = known[name]
                key = weights_key(v)
                results[name] = {"description": v.description, "measured": False}
                if key in loaded or any(
                    weights_key(known[n]) == key and "why" in results[n] for n in results
                ):
                    continue
                self.opt.log(f"ingest: loading {name}")
                gc.collect()
                rss0 = rss_bytes()
                t0 = time.perf_counter()
                try:
                    loaded[key] = self.engines.make_variant(base_variant(v))
                except Exception as exc:
                    results[name]["why"] = f"{type(exc).__name__}: {exc}"
                    continue
                rss = _rss_delta(rss0)
                results[name]["load_s"] = _round(time.perf_counter() - t0)
                results[name]["model_rss_mb"] = _round(rss / 2**20) if rss is not None else None
            todo = [n for n in names if weights_key(known[n]) in loaded]
            for n in names:
                if n not in todo and "why" not in results[n]:
                    results[n]["why"] = "its weights did not load"
            rates: dict[str, list[float | None]] = {n: [] for n in todo}
            vecs: dict[str, Vectors] = {}
            for r in range(self.opt.repeat):
                for name in todo:
                    v = known[name]
                    emb = loaded[weights_key(v)]
                    size = self.opt.ingest_passages or len(texts)
                    if v.speed_only:
                        size = min(size, self.opt.speed_only_passages)
                    batch = texts[:size]
                    self.opt.log(f"ingest: run {r + 1}, {name}")
                    with knobs(emb, v, self.settings):
                        if r == 0:
                            emb.embed_documents(batch[:2])  # warm-up (first call allocates)
                        t0 = time.perf_counter()
                        out = emb.embed_documents(batch)
                        dt = time.perf_counter() - t0
                    rates[name].append(len(batch) / dt if dt > 0 else None)
                    vecs.setdefault(name, out)
            for name in todo:
                v = known[name]
                emb = loaded[weights_key(v)]
                res = results[name]
                res.update(measured=True, passages=len(vecs[name]),
                           passages_per_s=over_runs(rates[name]))  # fmt: skip
                with knobs(emb, v, self.settings):
                    q_ms: list[float | None] = []
                    for item in items[:10]:
                        t0 = time.perf_counter()
                        emb._embed_query(item.question)
                        q_ms.append(_ms(t0))
                    res["query_ms"] = dist(q_ms)
                    base = vecs.get("fp32")
                    if name != "fp32" and base is not None and base.shape[1] == vecs[name].shape[1]:
                        m = min(len(base), len(vecs[name]))
                        cos = np.sum(base[:m] * vecs[name][:m], axis=1)
                        res["cosine_to_fp32"] = {"mean": _round(float(cos.mean())),
                                                 "min": _round(float(cos.min()))}  # fmt: skip
                    if capped or v.speed_only:
                        res["quality"] = None
                        res["quality_note"] = "not measured: only part of the corpus was embedded"
                        continue
                    self.opt.log(f"ingest: retrieval quality of {name}")
                    emb.__dict__.pop("_qcache", None)  # queries embedded with these knobs
                    rag = _rag(self.settings, emb, FakeGenerator(), self._tmp / f"v-{name}")
                    rag.index = CorpusIndex(emb.identity, emb.dim, chunks, vecs[name], {})
                    rag.index.build()
                    hybrid = _retrieval_quality(rag, items)
                    rag.settings = self.settings.model_copy(update={"hybrid": False})
                    dense = _retrieval_quality(rag, items)
                    res["quality"] = {"hybrid": hybrid, "dense_only": dense}
                    emb.__dict__.pop("_qcache", None)
        finally:
            loaded.clear()
            gc.collect()
        return {
            "chunks": len(texts),
            "chars_per_passage": _round(sum(map(len, texts)) / max(1, len(texts))),
            "variants": results,
            "best": choose_variant(results),
            "configured": configured_speedup(results, configured_variant(self.settings)),
            "definition": "passages/s = passages / seconds of Embedder.embed_documents over "
            "the corpus chunks (title + text, as rag ingest embeds them), after a warm-up call, "
            "variants timed in turn in each run; quality = gold-set retrieval (k=10) on an "
            "index of those vectors, hybrid as configured and dense only; the bar: hybrid file "
            "hit@5 at most 0.01 below fp32.",
        }

    # --- synthetic search at scale ---------------------------------------------------------------
    def bench_search(self) -> dict[str, Any]:
        import faiss

        from rag.index import CorpusIndex, build_faiss, lexical_tokens
        from rag.text import nfc

        n, dim = self.opt.synthetic_chunks, self.opt.synthetic_dim
        rng = np.random.default_rng(6)
        mem: dict[str, Any] = {}
        gc.collect()
        rss0 = rss_bytes()
        vectors, centers = synthetic_vectors(n, dim, rng)
        mem["vectors_rss"] = _rss_delta(rss0)
        vocab, weights = syllable_vocab(self.settings.data_dir)
        gc.collect()
        rss0 = rss_bytes()
        chunks = synthetic_chunks(n, vocab, weights, rng, self.opt.synthetic_words)
        mem["chunk_table_rss"] = _rss_delta(rss0)
        self.opt.log(f"search: {n} synthetic chunks, building FAISS")
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        fidx = build_faiss(vectors)
        faiss_build_s = time.perf_counter() - t0
        mem["faiss_rss"] = _rss_delta(rss0)
        index = CorpusIndex("synthetic", dim, chunks, vectors, {})
        self.opt.log("search: building BM25")
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        index.build(fidx)
        bm25_build_s = time.perf_counter() - t0
        mem["bm25_rss"] = _rss_delta(rss0)
        computed = {
            "vectors": int(vectors.nbytes),
            "faiss": len(faiss.serialize_index(fidx)),
            "bm25": bm25_bytes(index._bm25),
            "chunk_table": chunk_table_bytes(chunks),
        }
        # Queries: the gold questions' text for BM25, synthetic vectors near the data for FAISS.
        texts = [nfc(i.question) for i in self.questions()]
        qn = max(self.opt.synthetic_queries, len(texts))
        qvecs = synthetic_queries(vectors, qn, rng)
        table = {t: qvecs[i] for i, t in enumerate(texts)}
        sub = self._tmp / "synthetic"
        (sub / "data").mkdir(parents=True, exist_ok=True)
        settings = self.settings.model_copy(update={"data_dir": sub / "data"})
        rag = _rag(settings, LookupEmbedder(table, dim), FakeGenerator(), sub / "index")
        rag.index = index
        depth = max(4 * settings.top_k, 30)
        exact = faiss.IndexFlatIP(dim)
        exact.add(vectors)
        names = ("retrieve", "dense", "bm25", "bm25_bincount", "exact_dense")
        runs: dict[str, list[list[float | None]]] = {k: [] for k in names}
        same_top = 0
        for r in range(self.opt.repeat):
            row: dict[str, list[float | None]] = {k: [] for k in names}
            for t in texts:
                t0 = time.perf_counter()
                rag.retrieve(t)
                row["retrieve"].append(_ms(t0))
                t0 = time.perf_counter()
                index.dense(table[t], depth)
                row["dense"].append(_ms(t0))
                t0 = time.perf_counter()
                slow = index.lexical(t, depth)
                row["bm25"].append(_ms(t0))
                t0 = time.perf_counter()
                fast = lexical_bincount(index._bm25, lexical_tokens(t), depth)
                row["bm25_bincount"].append(_ms(t0))
                t0 = time.perf_counter()
                exact.search(table[t].reshape(1, -1), depth)
                row["exact_dense"].append(_ms(t0))
                if r == 0:
                    same_top += [i for i, _ in slow] == [i for i, _ in fast]
            for k in names:
                runs[k].append(row[k])
        _, got = fidx.search(qvecs, 10)
        _, want = exact.search(qvecs, 10)
        recall = recall_at(got, want)
        sweep = ef_sweep(fidx, qvecs, want) if hasattr(fidx, "hnsw") else None
        tokenize = tokenize_timing(chunks[:2000])
        per_chunk = {key: _round(val / n) for key, val in computed.items()}
        rss = {key: _round(val / n) if val is not None else None for key, val in mem.items()}
        index_kind = type(fidx).__name__
        result: dict[str, Any] = {
            "chunks": n,
            "dim": dim,
            "syllables_per_chunk": self.opt.synthetic_words,
            "clusters": int(centers.shape[0]),
            "index_type": index_kind,
            "hnsw": {"M": int(fidx.hnsw.nb_neighbors(1)),
                     "efConstruction": int(fidx.hnsw.efConstruction),
                     "efSearch": int(fidx.hnsw.efSearch)} if hasattr(fidx, "hnsw") else None,
            "faiss_build_s": _round(faiss_build_s),
            "bm25_build_s": _round(bm25_build_s),
            "queries": len(texts),
            "recall_queries": qn,
            "retrieve_ms": latency_block(runs["retrieve"]),
            "parts_ms": {
                "dense_search": latency_block(runs["dense"]),
                "bm25_get_scores": latency_block(runs["bm25"]),
                "bm25_bincount": latency_block(runs["bm25_bincount"]),
                "exact_flat_search": latency_block(runs["exact_dense"]),
            },
            "bm25_bincount_same_ranking": f"{same_top}/{len(texts)}",
            "hnsw_ef_search_sweep": sweep,
            "bm25_tokenize_ms_per_chunk": tokenize,
            "recall_at_10": _round(recall),
            "memory_bytes_per_chunk": {
                "computed": per_chunk | {"total": _round(sum(computed.values()) / n)},
                "rss_delta": rss | {
                    "total": _round(sum(v for v in mem.values() if v is not None) / n)
                },
            },
            "definition": "retrieve = RAG.retrieve(question) on the synthetic index with the "
            "query vector looked up (no embedding): FAISS + BM25 + rank fusion + passages. "
            "Queries: the gold questions' text for BM25 with synthetic vectors near data points. "
            "Vectors: unit vectors around random cluster centres; text: syllables drawn with "
            "their frequencies in the articles. recall@10: HNSW ids vs IndexFlatIP ids.",
        }  # fmt: skip
        for block in result["parts_ms"].values():
            block.pop("samples", None)
        result["retrieve_ms"].pop("samples", None)
        del rag, index, fidx, exact, vectors, chunks
        gc.collect()
        return result

    # --- the server ------------------------------------------------------------------------------
    def bench_server(self) -> dict[str, Any]:
        items = [i for i in self.questions() if i.answerable][: self.opt.server_questions]
        starts = 1 + (self.opt.server_restarts if self.opt.server_restarts is not None
                      else self.opt.repeat)  # fmt: skip
        env = dict(self.engines.server_env)
        if self._index_dir is not None and self._index_dir != self.settings.index_dir:
            env["RAG_INDEX_DIR"] = str(self._index_dir)
        ready: list[float | None] = []
        rss_after: list[float | None] = []
        rss_peak: list[float | None] = []
        rss_tree: list[float | None] = []
        rss_ready: list[float | None] = []
        http: dict[str, Any] | None = None
        logs: list[str] = []
        for start in range(starts):
            self.opt.log(f"server: start {start + 1}/{starts}")
            with serve(env, timeout_s=self.opt.server_timeout_s, log_dir=self._tmp) as srv:
                ready.append(srv.ready_s)
                logs.append(srv.log_tail())
                if srv.ready_s is None:
                    continue
                rss_ready.append(_mb(rss_bytes(srv.pid)))
                if start == 0 or not self.opt.quick:
                    h = http_evidence(srv.url, items, 1, full_answers=True)
                    http = http if http is not None else h
                    rss_after.append(_mb(rss_bytes(srv.pid)))
                    rss_peak.append(_mb(rss_bytes(srv.pid, "VmHWM")))
                    rss_tree.append(_mb(tree_rss_bytes(srv.pid)))
        parts = startup_parts(env, timeout_s=self.opt.server_timeout_s)
        out: dict[str, Any] = {
            "starts": starts,
            "startup_parts_s": parts,
            "ready_s": [_round(x) for x in ready],
            "first_ready_s": _round(ready[0]) if ready else None,
            "warm_ready_s": over_runs(ready[1:]),
            "rss_at_ready_mb": over_runs(rss_ready),
            "rss_after_questions_mb": over_runs(rss_after),
            "rss_peak_mb": over_runs(rss_peak),
            "rss_with_workers_mb": over_runs(rss_tree),
            "questions": len(items),
            "http": http,
            "definition": "python -m rag.cli serve on a free local port with the benchmark's "
            "settings; ready = perf_counter from Popen to the first 200 from GET /healthz "
            "(the lifespan loads the embedder, the index and the answer model). Memory = VmRSS "
            "(and peak VmHWM) of the server after the questions were answered in full; with "
            "workers: the server and its child processes (the answer model's worker) summed.",
        }
        if any(x is None for x in ready):
            out["log_tail"] = logs
        return out

    # --- scale-out ---------------------------------------------------------------------------
    def bench_vectors(self) -> dict[str, Any]:
        """Dense search at ``vector_chunks`` synthetic vectors: FAISS HNSW beside Milvus Lite."""
        from rag.bench.vectors import bench_vectors

        return bench_vectors(
            n=self.opt.vector_chunks, dim=self.opt.synthetic_dim,
            queries=self.opt.synthetic_queries, workdir=self._tmp, log=self.opt.log,
        )  # fmt: skip

    def bench_throughput(self) -> dict[str, Any]:
        """Answers per minute at 1, 4, 8 clients: ``rag serve`` with the answer model in its
        worker process, then with ``RAG_LLM_URL`` pointing at a model server process serving
        the same GGUF (llama-cpp-python's), one after the other on the same machine."""
        from rag.bench.throughput import levels, model_server, server_env

        items = [i for i in self.questions() if i.answerable]
        questions = [i.question for i in items][: max(self.opt.throughput_asks, 8)]
        base = dict(self.engines.server_env)
        if self._index_dir is not None and self._index_dir != self.settings.index_dir:
            base["RAG_INDEX_DIR"] = str(self._index_dir)
        clients = self.opt.throughput_clients
        out: dict[str, Any] = {
            "clients": list(clients),
            "asks_per_level": self.opt.throughput_asks,
            "definition": "answers/min = successful non-streamed POST /v1/ask answers (questions "
            "from the gold set in turn) / wall time, from that many client threads at once; "
            "each server first answers every question once, unmeasured (warm caches). The "
            "servers are child processes: their CPU counts as 'other processes' above",
        }
        self.opt.log("throughput: in-process answer model")
        with serve(server_env(base), timeout_s=self.opt.server_timeout_s,
                   log_dir=self._tmp) as srv:  # fmt: skip
            if srv.ready_s is None:
                raise RuntimeError(f"rag serve did not start: {srv.log_tail()}")
            out["in_process"] = levels(srv.url, questions, clients, self.opt.throughput_asks)
        if self.settings.generator == "fake":
            out["remote"] = {"skipped": "the fake answer engine has no model server"}
            return out
        from rag.models import resolve

        model = Path(resolve(self.settings.generator_model, self.settings.models_dir,
                             "generator"))  # fmt: skip
        self.opt.log("throughput: model server")
        with model_server(
            model, n_ctx=self.settings.n_ctx, n_threads=self.settings.n_threads,
            timeout_s=self.opt.server_timeout_s, log_dir=self._tmp,
        ) as url:  # fmt: skip
            env = server_env(base, RAG_LLM_URL=url, RAG_LLM_CONCURRENCY=str(max(clients)))
            with serve(env, timeout_s=self.opt.server_timeout_s, log_dir=self._tmp) as srv:
                if srv.ready_s is None:
                    raise RuntimeError(f"rag serve did not start: {srv.log_tail()}")
                out["remote"] = levels(srv.url, questions, clients, self.opt.throughput_asks)
        out["remote_server"] = "llama-cpp-python " + _llama_version() + " server, same GGUF"
        return out


def _llama_version() -> str:
    try:
        import llama_cpp

        return str(llama_cpp.__version__)
    except ImportError:
        return "?"


def _mb(b: int | None) -> float | None:
    return b / 2**20 if b is not None else None


def run_bench(engines: Engines, options: BenchOptions) -> dict[str, Any]:
    bench = Bench(engines, options)
    try:
        return bench.run()
    finally:
        bench.close()
