"""`rag doctor`: can this machine run the configured models, and if not, why.

Every model is loaded in a worker process (``rag.generation.worker``), so a CPU-specific crash
of llama.cpp (a segfault, an illegal instruction) is reported as a finding instead of ending
the check.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rag.cpu import cpu_flags
from rag.generation.factory import local_engine
from rag.generation.worker import WorkerGenerator
from rag.settings import Settings

#: CPU flags that decide which llama.cpp kernels can run.
RELEVANT_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
PROMPT = [
    {"role": "system", "content": "Trả lời ngắn gọn bằng tiếng Việt."},
    {"role": "user", "content": "Thủ đô của Việt Nam là thành phố nào?"},
]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    facts: dict[str, object] = field(default_factory=dict)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_cpu() -> Check:
    flags = cpu_flags()
    present = [f for f in RELEVANT_FLAGS if f in flags]
    return Check("cpu", True, f"{cpu_model()}: {' '.join(present) or 'no SIMD flags seen'}",
                 {"model": cpu_model(), "flags": present})  # fmt: skip


#: A realistic answer prompt (about 500 tokens of article text) for speed figures.
_PASSAGE = (
    "Năm 2022, công tác ngoại giao kinh tế tiếp tục được triển khai mạnh mẽ, toàn diện và thực "
    "chất, góp phần quan trọng vào phục hồi và phát triển kinh tế - xã hội của đất nước. "
) * 12


def speed_prompt() -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Trả lời ngắn gọn bằng tiếng Việt, chỉ dùng đoạn trích."},
        {"role": "user", "content": f"[1]\n{_PASSAGE}\n\nCâu hỏi: Năm 2022 ngoại giao kinh tế "
                                    "góp phần vào điều gì?"},
    ]  # fmt: skip


def check_generator(
    s: Settings,
    model: str,
    *,
    tokens: int = 16,
    extra_buffers: str | None = None,
    long_prompt: bool = False,
) -> Check:
    """Load ``model`` in a worker process and generate a few tokens; report speed or the crash."""
    update: dict[str, object] = {"generator_model": model}
    if extra_buffers is not None:
        update["extra_buffers"] = extra_buffers
    cfg = s.model_copy(update=update).model_dump()
    prompt = speed_prompt() if long_prompt else PROMPT
    worker = WorkerGenerator(partial(local_engine, cfg), name=model, failed_after=1,
                             backoff_s=(600.0, 600.0))  # fmt: skip
    t0 = time.perf_counter()
    try:
        st = worker.wait_ready(timeout=s.engine_load_timeout_s)
        if st.state != "ready":
            return Check(f"answer model {model}", False, st.detail or st.state)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            out = worker.complete(prompt, max_tokens=tokens)  # type: ignore[arg-type]
        except Exception as exc:  # a crash in the first decode is exactly what we look for
            return Check(f"answer model {model}", False, f"generation failed: {exc}",
                         dict(worker.state().info))  # fmt: skip
        total = time.perf_counter() - t1
        n = max(1, len(out.token_logprobs))
        decode = max(1e-6, total - out.first_token_s)
        info = dict(worker.state().info)
        facts: dict[str, object] = {
            "load_s": round(load_s, 2),
            "prompt_tokens": out.prompt_tokens,
            "prompt_tokens_per_s": round(out.prompt_tokens / max(out.first_token_s, 1e-6), 1),
            "decode_tokens_per_s": round((n - 1) / decode, 1) if n > 1 else None,
            "answer": out.text.strip()[:80],
            **info,
        }
        detail = (
            f"loads in {load_s:.1f} s; read {out.prompt_tokens} prompt tokens at "
            f"{facts['prompt_tokens_per_s']} tok/s, decoded at {facts['decode_tokens_per_s']} "
            f"tok/s; {info.get('extra_buffers_reason', '')}; said {facts['answer']!r}"
        )
        label = f"answer model {model}" + (
            f" (extra_buffers={extra_buffers})" if extra_buffers else ""
        )
        return Check(label, True, detail, facts)
    finally:
        worker.close()


def check_embedder(s: Settings) -> Check:
    from rag.service import RAG

    t0 = time.perf_counter()
    try:
        rag = RAG.from_settings(s)
        rag.embedder.embed_query("ngoại giao kinh tế")
    except Exception as exc:  # reported, not raised: the doctor lists every problem
        return Check("embedding model", False, f"{type(exc).__name__}: {exc}")
    ms = (time.perf_counter() - t0) * 1000
    return Check("embedding model", True,
                 f"{rag.embedder.identity}: loads and embeds in {ms:.0f} ms; index has "
                 f"{len(rag.index.files)} files, {len(rag.index.chunks)} chunks",
                 {"files": len(rag.index.files), "chunks": len(rag.index.chunks)})  # fmt: skip


def run_checks(s: Settings, models: list[str], *, compare_buffers: bool = False) -> list[Check]:
    checks = [check_cpu()]
    for model in models:
        if compare_buffers:  # the same long prompt with llama.cpp's extra buffers on, then off
            for mode in ("on", "off"):
                checks.append(
                    check_generator(s, model, tokens=64, extra_buffers=mode, long_prompt=True)
                )
        else:
            checks.append(check_generator(s, model))
    checks.append(check_embedder(s))
    return checks
