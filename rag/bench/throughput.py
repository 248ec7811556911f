"""Ask throughput: answers per minute with 1, 4, 8 clients at once, for the local answer model
and for a model server (llama-cpp-python's, ``rag.generation.model_server``) in another process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rag.bench.options import ROOT
from rag.bench.server import _die_with_parent, _free_port, stop
from rag.bench.stats import _round, dist


@contextlib.contextmanager
def model_server(
    model: Path, *, n_ctx: int, n_threads: int, timeout_s: float, log_dir: Path
) -> Iterator[str]:
    """``python -m rag.generation.model_server`` serving ``model`` on a free loopback port;
    yields its base URL (``…/v1``) once ``/v1/models`` answers; stopped afterwards."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log_path = log_dir / f"model-server-{port}.log"
    cmd = [
        sys.executable, "-m", "rag.generation.model_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        try:
            t0 = time.perf_counter()
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the model server exited ({proc.returncode}): "
                        + log_path.read_text(errors="replace")[-500:]
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                if time.perf_counter() - t0 > timeout_s:
                    raise TimeoutError(f"the model server did not start in {timeout_s:g} s")
                time.sleep(0.2)
            yield url
        finally:
            stop(proc)


def ask_throughput(
    url: str, questions: Sequence[str], *, clients: int, asks: int, timeout_s: float = 900.0
) -> dict[str, Any]:
    """``asks`` non-streamed ``POST /v1/ask`` (questions in turn) from ``clients`` threads at
    once; answers per minute = successful answers / wall time."""
    import httpx

    def one(i: int) -> tuple[int, float, dict[str, Any]]:
        t0 = time.perf_counter()
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            r = client.post("/v1/ask", json={"question": questions[i % len(questions)]})
        body = r.json() if r.status_code == 200 else {}
        return r.status_code, (time.perf_counter() - t0) * 1000, body

    with httpx.Client(base_url=url, timeout=30) as client:
        chunks = client.get("/healthz").json().get("chunks", 0)
    if not chunks:
        raise RuntimeError(f"the server at {url} has an empty index: nothing to measure")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, range(asks)))
    wall = time.perf_counter() - t0
    ok = [ms for status, ms, _ in results if status == 200]
    bodies = [b for status, _, b in results if status == 200]
    return {
        "clients": clients,
        "asks": asks,
        "answered": len(ok),
        # Answers the model generated (an abstention before generation costs nothing).
        "generated": sum(bool((b.get("timings_ms") or {}).get("generated_tokens")) for b in bodies),
        "abstained": sum(bool(b.get("abstained")) for b in bodies),
        "statuses": dict(Counter(str(s) for s, _, _ in results)),
        "wall_s": _round(wall),
        "answers_per_minute": _round(60 * len(ok) / wall) if wall > 0 else None,
        "latency_ms": dist(ok),
    }


def levels(
    url: str, questions: Sequence[str], clients: Sequence[int], asks: int
) -> list[dict[str, Any]]:
    """One ``ask_throughput`` per client count; each level asks ``max(asks, clients)``. Every
    question is asked once first, unmeasured, so the first level does not pay for the caches
    (query and sentence vectors, the model's pages) that the later ones find warm."""
    ask_throughput(url, questions, clients=1, asks=len(questions))
    out = []
    for n in clients:
        block = ask_throughput(url, questions, clients=n, asks=max(asks, n))
        block["latency_ms"].pop("samples", None)
        out.append(block)
    return out


def server_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """The benchmark's ``RAG_*`` environment for ``rag serve``, with ``extra`` over it."""
    env = {k: v for k, v in base.items() if not k.startswith("RAG_LLM_")}
    env.update(extra)
    env.setdefault("RAG_MAX_WAITING", "16")  # eight clients must queue, not be turned away
    return env
