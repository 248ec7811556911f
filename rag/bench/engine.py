"""`rag bench-engine`: the answer engine's own speed, measured as ratios in one run.

1. llama.cpp's extra buffer types on and off (the AMX crash switch): prompt-reading and decoding
   speed of the configured model on a ~500-token answer prompt.
2. The supervised worker process against the same engine in-process: the caller's wait for the
   first token over a sequence of real answer prompts that share the fixed instructions (so
   llama.cpp's prefix cache is exercised), with the tokens it reused.

Each engine is loaded in a worker process where a crash is possible, so a CPU-specific crash
is reported instead of ending the run.
"""

from __future__ import annotations

import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from rag.doctor import check_cpu, speed_prompt
from rag.generation import ChatMessage, Generator
from rag.generation.factory import local_engine
from rag.generation.worker import WorkerGenerator
from rag.prompts import build_messages
from rag.settings import Settings
from rag.types import Chunk, Passage

ARTICLES = Path("data/articles")


def _answer_prompts(s: Settings, n: int) -> list[list[ChatMessage]]:
    """Real answer prompts: two 650-character passages of the articles and a question each."""
    texts = [p.read_text("utf-8") for p in sorted(s.data_dir.glob("*.txt"))] or ["Ngoại giao."]
    prompts = []
    for i in range(n):
        doc = texts[i % len(texts)]
        passages = []
        for j in range(2):
            start = (i * 1700 + j * 650) % max(1, len(doc) - 650)
            text = doc[start : start + 650]
            chunk = Chunk(id=f"{i}-{j}", source="x.txt", start=start, end=start + 650,
                          text=text, hash=str(i * 10 + j))  # fmt: skip
            passages.append(Passage(chunk=chunk, score=1.0, original_text=text))
        q = f"Đoạn trích thứ {i + 1} nói gì về ngoại giao kinh tế?"
        prompts.append(build_messages(q, passages, english=False, history=[]))
    return prompts


def _speed(gen: Generator, rounds: int) -> dict[str, Any]:
    prompt_tps, decode_tps = [], []
    for r in range(rounds):
        msgs = speed_prompt()
        msgs[0] = {"role": "system", "content": f"({r}) " + msgs[0]["content"]}  # no cache hit
        out = gen.complete(msgs, max_tokens=64)  # type: ignore[arg-type]
        prompt_tps.append(out.prompt_tokens / out.first_token_s)
        n = len(out.token_logprobs)
        if n > 1 and out.decode_s > 0:
            decode_tps.append((n - 1) / out.decode_s)
    return {
        "prompt_tokens_per_s": statistics.median(prompt_tps),
        "decode_tokens_per_s": statistics.median(decode_tps) if decode_tps else None,
        "rounds": rounds,
    }


def _first_tokens(
    gens: dict[str, Generator], prompts: list[list[ChatMessage]]
) -> dict[str, dict[str, Any]]:
    """The caller's wait for one token, the engines taking turns on each prompt (so a drift of
    the machine's speed hits both alike); each engine keeps its own prefix cache."""
    waits: dict[str, list[float]] = {k: [] for k in gens}
    cached: dict[str, list[int]] = {k: [] for k in gens}
    for msgs in prompts:
        for name, gen in gens.items():
            t0 = time.perf_counter()
            out = gen.complete(msgs, max_tokens=1)
            waits[name].append((time.perf_counter() - t0) * 1000)
            cached[name].append(out.cached_tokens)
    out_: dict[str, dict[str, Any]] = {}
    for name in gens:
        steady = waits[name][1:]  # the first prompt fills the cache of the fixed instructions
        out_[name] = {
            "first_token_ms_p50": statistics.median(steady),
            "first_token_ms_mean": statistics.fmean(steady),
            "cached_tokens_p50": statistics.median(cached[name][1:]),
            "prompts": len(prompts),
        }
    return out_


def run(s: Settings, *, rounds: int = 3, prompts: int = 9) -> dict[str, Any]:
    cfg = s.model_dump()
    report: dict[str, Any] = {"cpu": check_cpu().facts, "model": s.generator_model}
    for mode in ("on", "off"):
        worker = WorkerGenerator(partial(local_engine, {**cfg, "extra_buffers": mode}),
                                 failed_after=1, backoff_s=(600.0, 600.0))  # fmt: skip
        try:
            st = worker.wait_ready(s.engine_load_timeout_s)
            if st.state != "ready":
                report[f"extra_buffers_{mode}"] = {"error": st.detail}
                continue
            report.setdefault("system_info", st.info.get("system_info"))
            try:
                report[f"extra_buffers_{mode}"] = _speed(worker, rounds)
            except Exception as exc:  # a crash of this setting is the finding
                report[f"extra_buffers_{mode}"] = {"error": str(exc)}
        finally:
            worker.close()
    seq = _answer_prompts(s, prompts)
    inproc = local_engine(cfg)
    worker = WorkerGenerator(partial(local_engine, cfg))
    try:
        worker.wait_ready(s.engine_load_timeout_s)
        both = _first_tokens({"in_process": inproc, "worker": worker}, seq)
    finally:
        worker.close()
    report.update(both)
    report["in_process"]["extra_buffers"] = getattr(inproc, "extra_buffers", None)
    a, b = report["in_process"]["first_token_ms_p50"], report["worker"]["first_token_ms_p50"]
    report["worker_overhead"] = {"ms": b - a, "ratio": b / a}
    return report


def markdown(r: dict[str, Any]) -> str:
    def f(x: Any, d: int = 1) -> str:
        return "—" if x is None else f"{x:.{d}f}"

    on, off = r.get("extra_buffers_on", {}), r.get("extra_buffers_off", {})
    lines = [
        "# Answer engine speed (`rag bench-engine`)",
        "",
        f"CPU: {r['cpu'].get('model')} — flags {' '.join(r['cpu'].get('flags', []))}",
        "",
        f"llama.cpp: `{r.get('system_info')}`",
        "",
        f"Model: `{r['model']}`; medians of {on.get('rounds', '?')} runs; ~500-token prompt.",
        "",
        "| extra buffer types | prompt tokens/s | decode tokens/s |",
        "|---|---:|---:|",
        f"| on | {f(on.get('prompt_tokens_per_s'))} | {f(on.get('decode_tokens_per_s'))} |",
        f"| off | {f(off.get('prompt_tokens_per_s'))} | {f(off.get('decode_tokens_per_s'))} |",
    ]
    if on.get("prompt_tokens_per_s") and off.get("prompt_tokens_per_s"):
        lines.append(
            f"| off / on | {off['prompt_tokens_per_s'] / on['prompt_tokens_per_s']:.2f} × | "
            f"{(off['decode_tokens_per_s'] or 0) / (on['decode_tokens_per_s'] or 1):.2f} × |"
        )
    ip, wk, ov = r["in_process"], r["worker"], r["worker_overhead"]
    lines += [
        "",
        f"First token over {ip['prompts']} answer prompts sharing the instructions (the first "
        "fills the cache and is left out):",
        "",
        "| engine | first token p50 (ms) | mean (ms) | prompt tokens reused (p50) |",
        "|---|---:|---:|---:|",
        f"| in-process | {f(ip['first_token_ms_p50'])} | {f(ip['first_token_ms_mean'])} | "
        f"{ip['cached_tokens_p50']:.0f} |",
        f"| worker process | {f(wk['first_token_ms_p50'])} | {f(wk['first_token_ms_mean'])} | "
        f"{wk['cached_tokens_p50']:.0f} |",
        "",
        f"Worker overhead: {ov['ms']:+.1f} ms ({(ov['ratio'] - 1) * 100:+.1f} %).",
        "",
    ]
    return "\n".join(lines)


def write(r: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps(r, indent=1, ensure_ascii=False), "utf-8")
    (out / "engine.md").write_text(markdown(r), "utf-8")
