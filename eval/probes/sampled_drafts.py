"""Probe (issue 12): do sampled drafts from the same prompt hold right answers the greedy draft
misses, and can the reader's own confidence (or the drafts' agreement) pick them?

Runs the service itself (``RAG.ask``: its retrieval, evidence, prompt, reader and current
calibration) on one gold split. Around the reader's call it also samples ``K`` more drafts
from the same prompt (temperature ``T``, seeds 1..K; the prompt is already in the KV cache, so
each costs only its decode) and measures each with the reader's own signals and calibrated
confidence, exactly as the greedy draft is measured. Written per question: every draft, whether
it holds the gold strings, its confidence and signals, and the decode time of the samples.

Usage from the repo root: ``RAG_GENERATOR_PROCESS=0 .venv/bin/python
eval/probes/sampled_drafts.py dev [K] [T]`` (in-process engine: the probe calls it with a
seed); appends to ``eval/probes/sampled_<split>.jsonl`` and resumes.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, resumable, split_items  # eval/probes/ (the script's folder)

from rag.evaluation.metrics import answer_correct
from rag.grounding import is_abstention
from rag.reader import Reader, measure
from rag.service import RAG
from rag.settings import Settings

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
K = int(sys.argv[2]) if len(sys.argv) > 2 else 4
T = float(sys.argv[3]) if len(sys.argv) > 3 else 0.7
SAMPLE_TOKENS = 80  # a one-sentence answer is 20-40 tokens; the greedy draft keeps max_tokens
path = ROOT / f"eval/probes/sampled_{split}.jsonl"
done, out = resumable(path)
rag = RAG.from_settings(Settings())
assert not rag.settings.generator_process, "set RAG_GENERATOR_PROCESS=0"
reader: Reader = rag.reader
original = reader.read
extra: list[dict] = []


def read_and_sample(generator, messages, context, **kw):  # type: ignore[no-untyped-def]
    reading = original(generator, messages, context, **kw)
    extra.clear()
    t0 = time.perf_counter()
    [nf] = generator.score(messages, [kw["not_found"]])
    for seed in range(1, K + 1):
        c = generator.complete(messages, max_tokens=SAMPLE_TOKENS, temperature=T, seed=seed)
        draft = c.text.strip()
        if not draft or is_abstention(draft):
            extra.append({"draft": draft, "confidence": 0.0, "signals": {}, "finished": True})
            continue
        signals = measure(
            draft, c, nf, context, question=kw["question"], dense_top=kw["dense_top"],
            unknown_terms=kw["unknown_terms"], english=kw["english"],
            item_similarity=kw["item_similarity"],
        )  # fmt: skip
        conf = reader.calibration.probability(signals) if reader.calibration else 1.0
        extra.append(
            {"draft": draft, "confidence": conf, "signals": signals, "finished": c.finished}
        )
    extra.append({"sample_ms": (time.perf_counter() - t0) * 1000})
    return reading


reader.read = read_and_sample  # type: ignore[method-assign]
for g in split_items(split):
    if g.id in done:
        continue
    a = rag.ask(g.question)
    trace = a.reader or {}
    draft = str(trace.get("draft", ""))
    sample_ms = extra.pop()["sample_ms"] if extra else 0.0
    ok = lambda d: bool(g.answers) and answer_correct(d, g.answers)  # noqa: E731, B023
    row = {
        "id": g.id,
        "type": g.type,
        "answerable": g.answerable,
        "draft": draft,
        "draft_correct": ok(draft),
        "abstained": a.abstained,
        "confidence": a.confidence,
        "signals": trace.get("signals", {}),
        "samples": [{**e, "correct": ok(e["draft"])} for e in extra],
        "sample_ms": sample_ms,
        "prompt_tokens": a.timings_ms.prompt_tokens,
        "first_token_ms": a.timings_ms.first_token,
    }
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    right = sum(e["correct"] for e in row["samples"])
    print(g.id, row["draft_correct"], f"{right}/{K}", f"{sample_ms:.0f}ms", draft[:60], flush=True)
rag.close()
