"""The benchmark on fake engines: report structure, and figures computed from measurements."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rag import bench
from rag import index as index_module
from rag.bench import (
    BenchOptions,
    Engines,
    Variant,
    choose_variant,
    decode_rate,
    dist,
    latency_block,
    lexical_bincount,
    markdown,
    over_runs,
    run_bench,
    synthetic_vectors,
    write_report,
)
from rag.bench.cli import register
from rag.embedding import Embedder, HashingEmbedder
from rag.generation import FakeGenerator, Generator
from rag.generation.llama import LlamaCppGenerator
from rag.index import CorpusIndex, lexical_tokens
from rag.service import RAG
from rag.settings import Settings
from rag.types import Chunk

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "eval" / "gold.jsonl"

FIRST_S = 0.03  # fake prompt reading before the first token
STEP_S = 0.004  # fake time per token after it


class FakeLlama:
    """Just enough of llama_cpp.Llama: a stream with known timing, tokenize, reset, EOS."""

    def __init__(self, first_s: float = FIRST_S, step_s: float = STEP_S) -> None:
        self.first_s = first_s
        self.step_s = step_s
        self.calls: list[dict[str, Any]] = []
        self.resets = 0

    def token_eos(self) -> int:
        return 2

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        if text == b"<|im_end|>":
            return [7]
        return [100 + i for i in range(len(text.split()) * 3)]

    def reset(self) -> None:
        self.resets += 1

    def create_chat_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.calls.append(kwargs)
        banned = bool(kwargs.get("logit_bias"))
        # Without the EOS ban the fake "model" stops after 5 tokens.
        n = kwargs["max_tokens"] if banned else min(5, kwargs["max_tokens"])
        time.sleep(self.first_s)
        for i in range(n):
            if i:
                time.sleep(self.step_s)
            yield {"choices": [{"delta": {"content": f"t{i} "}}]}


def fake_llama_generator(llm: FakeLlama) -> LlamaCppGenerator:
    """The real LlamaCppGenerator code path, on the fake Llama."""
    gen = LlamaCppGenerator.__new__(LlamaCppGenerator)
    gen.name = "fake-llama"
    gen.model_path = Path("fake.gguf")
    gen._llm = llm  # type: ignore[assignment]
    gen.lock = threading.Lock()
    # The fake Llama has no logits: the reader's calls take the interface's stream-based
    # defaults (whole text, no token probabilities, no scores).
    gen.complete = types.MethodType(Generator.complete, gen)  # type: ignore[method-assign]
    gen.score = types.MethodType(Generator.score, gen)  # type: ignore[method-assign]
    return gen


@pytest.fixture
def engines(settings: Settings, rag: RAG) -> Engines:
    """Fake engines over an index of the real articles (built by the ``rag`` fixture)."""
    llms: list[FakeLlama] = []
    loads: list[str] = []

    def make_generator(model: str) -> Generator:
        llm = FakeLlama()
        llms.append(llm)
        return fake_llama_generator(llm)

    def make_variant(v: Variant) -> Embedder:
        loads.append(v.name)
        return HashingEmbedder(dim=64 if v.dtype == "float16" else 256)

    eng = Engines(
        settings=settings,
        make_embedder=HashingEmbedder,
        make_generator=make_generator,
        make_variant=make_variant,
        generator_models={"default": "fake-big", "small": "fake-small"},
        server_env=bench.settings_env(settings),
    )
    eng.llms = llms  # type: ignore[attr-defined]
    eng.loads = loads  # type: ignore[attr-defined]
    return eng


def options(**kw: Any) -> BenchOptions:
    base = BenchOptions.for_run(
        quick=True, gold=GOLD, questions=4, decode_tokens=12, synthetic_chunks=1500,
        synthetic_dim=32, synthetic_queries=40, synthetic_words=40,
    )  # fmt: skip
    return dataclasses.replace(base, ingest_passages=None, **kw)


# --- pure statistics -------------------------------------------------------------------------
def test_dist_and_runs_are_percentiles_of_the_values() -> None:
    d = dist([10.0, 20.0, 30.0, 40.0, None])
    assert d["n"] == 4
    assert d["p50"] == pytest.approx(25.0)
    assert d["p95"] == pytest.approx(38.5)  # linear interpolation, like numpy
    assert (d["min"], d["max"], d["mean"]) == (10.0, 40.0, 25.0)
    r = over_runs([3.0, 1.0, 2.0])
    assert (r["median"], r["min"], r["max"]) == (2.0, 1.0, 3.0)
    block = latency_block([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    assert block["p50"]["runs"] == [2.0, 20.0]
    assert block["p50"]["median"] == pytest.approx(11.0)
    assert block["pooled"]["n"] == 6
    assert block["samples"] == [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]


def test_decode_rate_counts_tokens_after_the_first() -> None:
    stamps = [1.0, 1.1, 1.2, 1.3, 1.4]  # first token at 1 s, then 10 tokens/s
    assert decode_rate(stamps) == pytest.approx(10.0)
    assert decode_rate(stamps, 3) == pytest.approx(10.0)
    assert decode_rate([1.0]) is None


def test_choose_variant_respects_the_quality_bar() -> None:
    def res(rate: float, hit5: float) -> dict[str, Any]:
        q = {"hybrid": {"file_hit@5": hit5, "file_hit@1": 0.5}}
        return {"measured": True, "passages_per_s": {"median": rate}, "quality": q}

    results = {"fp32": res(3.0, 0.90), "fast-bad": res(12.0, 0.85), "ok": res(9.0, 0.895)}
    best = choose_variant(results)
    assert best is not None
    assert best["variant"] == "ok"
    assert best["speedup"] == pytest.approx(3.0)


def test_the_service_embedder_is_compared_with_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.cpu
    from rag.bench.pieces import configured_speedup
    from rag.bench.variants import VARIANTS, configured_variant
    from rag.settings import Settings

    monkeypatch.setattr(rag.cpu, "cpu_flags", lambda: {"avx2", "amx_int8"})
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert configured_variant(s) == "onnx-int8-s8"
    monkeypatch.setattr(rag.cpu, "cpu_flags", lambda: {"avx2"})
    assert configured_variant(s) == "onnx-int8"
    assert configured_variant(s.model_copy(update={"embed_quantize": "none"})) == "onnx"
    assert configured_variant(s.model_copy(update={"embedder": "fake"})) == ""
    names = {v.name for v in VARIANTS}
    assert {"onnx", "onnx-int8", "onnx-int8-s8", "fp32"} <= names

    def res(rate: float) -> dict[str, Any]:
        q = {"hybrid": {"file_hit@5": 0.99, "file_hit@1": 0.9}}
        return {"measured": True, "passages_per_s": {"median": rate}, "quality": q}

    mine = configured_speedup({"fp32": res(4.0), "onnx-int8": res(10.0)}, "onnx-int8")
    assert mine is not None and mine["speedup"] == pytest.approx(2.5)
    assert configured_speedup({"fp32": res(4.0)}, "onnx-int8") is None


def test_bincount_bm25_matches_bm25s(rag: RAG) -> None:
    index = rag.index
    for q in ("Thủ tướng Phạm Minh Chính thăm Mỹ", "hạt điều xuất khẩu Italy"):
        want = index.lexical(q, 30)
        got = lexical_bincount(index._bm25, lexical_tokens(q), 30)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)


def test_synthetic_vectors_are_unit_and_clustered() -> None:
    vecs, centers = synthetic_vectors(1000, 16, np.random.default_rng(0))
    assert vecs.shape == (1000, 16)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    best = (vecs @ centers.T).max(axis=1)
    assert float(np.median(best)) > 0.5


# --- the sections on fake engines ------------------------------------------------------------
def test_quick_run_on_fakes_writes_a_complete_report(
    engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = Variant("small-dim", "64 buckets", dtype="float16")
    monkeypatch.setattr(bench.variants, "VARIANTS", (*bench.variants.VARIANTS, small))
    monkeypatch.setattr(index_module, "FLAT_LIMIT", 1000)  # HNSW above it, as at 100k chunks
    opt = options(sections=("evidence", "first_token", "decode", "ingest", "search"),
                  variants=("fp32", "fp32-bs4", "small-dim"))  # fmt: skip
    report = run_bench(engines, opt)
    assert report["errors"] == {}
    cfg = report["config"]
    assert cfg["machine"]["cores"] >= 1 and cfg["git"]["commit"]
    assert cfg["options"]["repeat"] == 1
    sec = report["sections"]

    ev = sec["evidence"]["in_process"]
    assert ev["cold_ms"]["pooled"]["n"] == 4
    # The reported p50 is the median of the recorded samples.
    samples = ev["cold_ms"]["samples"][0]
    assert ev["cold_ms"]["p50"]["median"] == pytest.approx(float(np.median(samples)), rel=1e-3)

    ft = sec["first_token"]["models"]
    assert set(ft) == {"default", "small"}
    for r in ft.values():
        # The fake model sleeps FIRST_S before its first token.
        assert r["ttft_ms"]["p50"]["median"] >= FIRST_S * 1000
        assert r["prefix_cache"]["measured"] is True
        assert r["prompt_tokens"]["n"] == 4
    busy = ft["default"]["evidence_while_generating_ms"]
    assert busy["threads_as_configured"]["n"] == 4 and busy["tokens_generated_meanwhile"] > 0
    llms = engines.llms  # type: ignore[attr-defined]
    assert sum(llm.resets for llm in llms) >= 2  # the prefix-cache-off runs reset the state

    dec = sec["decode"]
    for r in dec["models"].values():
        assert r["eos_tokens_banned"] == [2, 7]
        pair = r["pairs"][0]
        assert pair["tokens_direct"] == 12  # EOS ban: max_tokens
        # One token per STEP_S after the first. (The service path is not compared any more:
        # its reader decides before it streams, so its pieces arrive together.)
        assert 0.4 / STEP_S < r["direct_tok_s"]["median"] < 1.05 / STEP_S
    # The direct call used the service's sampling settings.
    direct_calls = [c for llm in llms for c in llm.calls if c.get("top_k") == 1]
    assert direct_calls and all(c["repeat_penalty"] == 1.05 for c in direct_calls)

    ing = sec["ingest"]
    assert ing["chunks"] > 10
    fp = ing["variants"]["fp32"]
    assert fp["passages"] == ing["chunks"]
    assert fp["quality"]["hybrid"]["file_hit@5"] is not None
    assert ing["best"] is not None
    # Variants that differ only in runtime knobs share one loaded model.
    assert engines.loads == ["torch-float32", "torch-float16"]  # type: ignore[attr-defined]
    assert ing["variants"]["fp32-bs4"]["measured"] is True

    se = sec["search"]
    assert se["index_type"] == "IndexHNSWFlat"
    assert se["recall_at_10"] >= 0.9
    assert se["memory_bytes_per_chunk"]["computed"]["vectors"] == pytest.approx(32 * 4)
    assert se["retrieve_ms"]["p50"]["median"] > 0

    names = [t["target"] for t in report["targets"]]
    assert any("first evidence" in n for n in names)
    assert all("met" in t for t in report["targets"])

    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["version"] == 1
    md = paths["md"].read_text()
    for heading in ("## Targets", "## First evidence", "## Time to first answer token",
                    "## Decoding speed", "## Ingest", "## Search over a synthetic corpus"):  # fmt: skip
        assert heading in md


def test_server_section_starts_and_restarts_a_real_server(
    engines: Engines, settings: Settings
) -> None:
    report = run_bench(engines, options(sections=("server",), server_restarts=1))
    assert report["errors"] == {}
    srv = report["sections"]["server"]
    assert srv["starts"] == 2
    assert all(x is not None and x > 0 for x in srv["ready_s"])
    assert srv["rss_after_questions_mb"]["median"] > 10
    assert srv["http"]["evidence_ms"]["pooled"]["n"] == 1
    assert srv["startup_parts_s"]["total"] > 0
    assert "## Server" in markdown(report)


def test_a_failing_section_is_reported_not_fatal(engines: Engines) -> None:
    def broken(model: str) -> Generator:
        raise RuntimeError("no model here")

    engines.make_generator = broken
    report = run_bench(engines, options(sections=("first_token", "search"),
                                        synthetic_chunks=300))  # fmt: skip
    assert "first_token" in report["errors"]
    assert "search" in report["sections"]
    assert report["sections"]["search"]["index_type"] == "IndexFlatIP"


def test_cli_runs_quick_on_fake_engines(
    settings: Settings, rag: RAG, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in bench.settings_env(settings).items():
        monkeypatch.setenv(key, value)
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None: ...

    out = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "bench", "--quick", "--out", str(out), "--only", "evidence,ingest", "--gold", str(GOLD),
        "--questions", "3", "--no-small",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["sections"]) == {"evidence", "ingest"}
    assert report["config"]["models"]["embedder"] == "fake (hashing)"
    assert (out / "report.md").is_file()


def test_fake_generator_engines_skip_the_decode_comparison(
    engines: Engines,
) -> None:
    engines.make_generator = lambda model: FakeGenerator()
    report = run_bench(engines, options(sections=("decode",)))
    models = report["sections"]["decode"]["models"]
    assert models["default"]["measured"] is False


def test_lookup_index_sizes(rag: RAG) -> None:
    chunks: list[Chunk] = rag.index.chunks[:5]
    assert bench.chunk_table_bytes(chunks) > sum(len(c.text) for c in chunks)
    assert bench.bm25_bytes(rag.index._bm25) > 0
    assert isinstance(rag.index, CorpusIndex)


def test_throughput_section_serves_answers_at_each_client_count(
    engines: Engines, settings: Settings
) -> None:
    """On the fake engine only the in-process server is measured (no model server to start);
    the real run (`rag bench --only throughput`) adds the model server beside it."""
    report = run_bench(engines, options(sections=("throughput",), throughput_clients=(1, 3),
                                        throughput_asks=3))  # fmt: skip
    assert report["errors"] == {}
    t = report["sections"]["throughput"]
    rows = t["in_process"]
    assert [r["clients"] for r in rows] == [1, 3]
    for r in rows:
        assert r["answered"] == r["asks"] == 3 and r["statuses"] == {"200": 3}
        assert r["generated"] == 3  # the fake model answered (not abstentions before it)
        assert r["answers_per_minute"] > 0
    assert "skipped" in t["remote"]
    assert "## Ask throughput" in markdown(report)


def test_vectors_section_reports_faiss_beside_milvus_lite(engines: Engines) -> None:
    report = run_bench(engines, options(sections=("vectors",), vector_chunks=600,
                                        synthetic_queries=10))  # fmt: skip
    assert report["errors"] == {}
    v = report["sections"]["vectors"]
    assert v["n"] == 600 and v["faiss"]["recall_at_k"] == 1.0  # flat below FLAT_LIMIT: exact
    assert v["milvus_lite"]["recall_at_k"] > 0.9
    assert "## Vector stores" in markdown(report)


def test_the_states_section_needs_a_real_llama_engine(engines: Engines, tmp_path: Path) -> None:
    report = run_bench(engines, options(sections=("states",)))
    assert report["errors"] == {}
    st = report["sections"]["states"]
    assert st["measured"] is False and "llama.cpp" in st["why"]
    md = write_report(report, tmp_path / "out")["md"].read_text()
    assert "## Passage states" in md and "Not measured" in md


def test_server_memory_counts_its_worker_processes() -> None:
    import subprocess
    import sys

    from rag.bench.machine import process_tree, rss_bytes, tree_rss_bytes

    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)'])\n"
            "print(c.pid, flush=True); time.sleep(20)")  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert set(process_tree(parent.pid)) == {parent.pid, child}
        own, child_rss, tree = rss_bytes(parent.pid), rss_bytes(child), tree_rss_bytes(parent.pid)
        assert own and child_rss and tree and abs(tree - (own + child_rss)) < 2**20
    finally:
        for pid in process_tree(parent.pid)[::-1]:
            subprocess.run(["kill", str(pid)], check=False)
        parent.wait(10)
