"""Section ``states`` (issue 13): first token with and without stored passage states, against
the naive reference, measured in one run on one engine.

Per question, in this order, each on the same in-process llama.cpp engine of the default model:

- ``naive``: the reference pipeline — hybrid top-3 passages whole, the same instructions, the
  question; time from the call to the first streamed token (no reader, no decision);
- ``sentences``: ``RAG.stream`` with today's evidence (best sentences of the top passages) to
  its first ``token`` event (the reader decides before it streams, so this includes the draft
  and its scoring);
- ``top_passage``: ``RAG.stream`` with ``evidence_layout=top-passage`` and no states;
- ``top_passage_states``: the same with the passage states computed here (``prepare_states``).

Before every measured call the engine's prompt cache is cut back to the instructions, as in a
service whose questions bring other passages each time (llama.cpp keeps the longest common
prefix of the last prompt; without the cut, the variant after another with the same top
passage would find it cached for free). States are computed into a folder of the run, for
every chunk and both instruction languages, and their time is reported as ingest time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rag.bench.stats import _ms, _round, dist
from rag.evaluation.metrics import percentile

if TYPE_CHECKING:
    from rag.bench.core import Bench

VARIANTS = ("naive", "sentences", "top_passage", "top_passage_states")


def _keep_instructions(engine: Any, system: str) -> None:
    """Cut the engine's prompt cache back to the tokens of the instructions."""
    llm = engine._llm
    head = engine._prompt_tokens([{"role": "system", "content": system}])
    n = 0
    for a, b in zip(llm.input_ids[: llm.n_tokens], head, strict=False):
        if a != b:
            break
        n += 1
    llm.n_tokens = min(llm.n_tokens, max(0, n - 1))


def _naive_first_token(rag: Any, engine: Any, question: str) -> float | None:
    from rag.prompts import build_messages
    from rag.text import looks_english

    t0 = time.perf_counter()
    passages = rag.retrieve(question, 3)
    messages = build_messages(question, passages, english=looks_english(question), history=[])
    stream = engine.stream_chat(messages, max_tokens=8, temperature=0.0)
    try:
        for _ in stream:
            return _ms(t0)
    finally:
        stream.close()
    return None


def bench_states(bench: Bench) -> dict[str, Any]:
    from rag.generation.llama import LlamaCppGenerator
    from rag.generation.states import StateStore
    from rag.prompts import SYSTEM_EN, SYSTEM_VI
    from rag.text import looks_english

    bench.index_dir()
    model = bench.engines.generator_models.get("default", bench.settings.generator_model)
    engine = bench.engines.make_generator(model)
    import llama_cpp

    if not isinstance(engine, LlamaCppGenerator) or not isinstance(
        getattr(engine, "_llm", None), llama_cpp.Llama
    ):
        return {"measured": False, "why": "the answer engine is not llama.cpp (no model state)"}
    store_dir = bench._tmp / "states"
    engine.states = StateStore(store_dir, max_bytes=10**12)
    plain = bench.settings.model_copy(update={"generator_model": model})
    sentences = plain.model_copy(update={"evidence_layout": "sentences"})
    top = plain.model_copy(update={"evidence_layout": "top-passage", "passage_states_mb": 10**6})
    layouts = {
        "sentences": bench.service(sentences, engine),
        "top_passage": bench.service(top, engine),
    }
    rag = layouts["top_passage"]

    # Ingest: embedding every chunk (the configured embedder), then the states.
    texts = [c.text for c in rag.index.chunks]
    t0 = time.perf_counter()
    bench.engines.embedder().embed_documents(texts)
    embed_s = time.perf_counter() - t0
    report = rag.prepare_states()
    assert report is not None
    n_states = report.computed + report.kept
    per_state = report.bytes / n_states if n_states else None

    items = bench.questions(bench.opt.state_questions)
    ttft: dict[str, list[float | None]] = {v: [] for v in VARIANTS}
    state_tokens: list[int] = []
    store = engine.states
    bench._first_token(layouts["sentences"], "Các bài viết nói về những chủ đề gì?")  # warm-up
    for item in items:
        q = item.question
        system = SYSTEM_EN if looks_english(q) else SYSTEM_VI
        _keep_instructions(engine, system)
        engine.states = None
        ttft["naive"].append(_naive_first_token(rag, engine, q))
        for variant, service, states in (
            ("sentences", layouts["sentences"], None),
            ("top_passage", layouts["top_passage"], None),
            ("top_passage_states", layouts["top_passage"], store),
        ):
            _keep_instructions(engine, system)
            engine.states = states
            before = (engine.state_loads, engine.state_tokens_loaded)
            tok, _ = bench._first_token(service, q)
            ttft[variant].append(tok)
            if states is not None:
                state_tokens.append(engine.state_tokens_loaded - before[1])
    engine.states = store
    p50 = {v: percentile([x for x in ttft[v] if x is not None], 50) for v in VARIANTS}
    naive = p50["naive"]

    def ratio(v: str) -> float | None:
        x = p50[v]
        return _round(x / naive) if x is not None and naive else None

    return {
        "measured": True,
        "model": model,
        "questions": len(items),
        "ttft_ms": {v: dist(ttft[v]) for v in VARIANTS},
        "ratio_to_naive": {v: ratio(v) for v in VARIANTS},
        "ratio_states_to_naive": ratio("top_passage_states"),
        "questions_with_a_state": sum(1 for n in state_tokens if n > 0),
        "state_tokens": dist([float(n) for n in state_tokens]),
        "store": {
            "chunks": len(texts),
            "states": n_states,
            "bytes": report.bytes,
            "mb_per_state": _round(per_state / 1e6) if per_state else None,
            "gb_per_1000_chunks_both_languages": (
                _round(2 * per_state * 1000 / 1e9) if per_state else None
            ),
            "compute_s": _round(report.seconds),
            "s_per_state": _round(report.seconds / n_states) if n_states else None,
        },
        "ingest_s": {
            "embedding": _round(embed_s),
            "states": _round(report.seconds),
            "total": _round(embed_s + report.seconds),
        },
        "definition": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
    }


def markdown(st: dict[str, Any]) -> list[str]:
    lines = ["", "## Passage states (first token against the naive reference)", ""]
    if not st.get("measured"):
        return [*lines, f"Not measured: {st.get('why')}"]
    from rag.bench.report import _f

    lines += [
        st.get("definition", ""),
        "",
        f"{st['questions']} gold questions, model `{st['model']}`.",
        "",
        "| variant | first token p50 (ms) | p95 (ms) | × naive (p50) |",
        "|---|---:|---:|---:|",
    ]
    for v in VARIANTS:
        d = st["ttft_ms"][v]
        lines.append(
            f"| {v} | {_f(d.get('p50'))} | {_f(d.get('p95'))} | {_f(st['ratio_to_naive'][v])} |"
        )
    s, g = st["store"], st["ingest_s"]
    lines += [
        "",
        f"Questions whose prompt started with a stored state: {st['questions_with_a_state']} of "
        f"{st['questions']} (state tokens p50 {_f(st['state_tokens'].get('p50'))}).",
        f"Store: {s['states']} states for {s['chunks']} chunks (both instruction languages), "
        f"{_f(s['bytes'] / 1e6)} MB, {_f(s['mb_per_state'])} MB per state, "
        f"{_f(s['gb_per_1000_chunks_both_languages'])} GB per 1,000 chunks; computed in "
        f"{_f(s['compute_s'])} s ({_f(s['s_per_state'])} s each).",
        f"Ingest of the corpus: embedding {_f(g['embedding'])} s + states {_f(g['states'])} s = "
        f"{_f(g['total'])} s.",
    ]
    return lines
