"""``rag serve`` in a subprocess, and evidence over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.bench.options import ROOT
from rag.bench.stats import _ms, _round, dist, latency_block
from rag.evaluation.runner import GoldItem


# --- HTTP ----------------------------------------------------------------------------------------
def http_evidence(
    url: str, items: Sequence[GoldItem], repeat: int, *, full_answers: bool = False
) -> dict[str, Any]:
    """Over HTTP: POST /v1/ask with stream=true; time to the ``passages`` and first ``token``
    events. ``max_tokens`` 1 keeps each request short unless ``full_answers``."""
    import httpx

    ev_runs: list[list[float | None]] = []
    tok_runs: list[list[float | None]] = []
    totals: list[float | None] = []
    with httpx.Client(base_url=url, timeout=900.0) as client:
        for _ in range(repeat):
            ev_row: list[float | None] = []
            tok_row: list[float | None] = []
            for item in items:
                body: dict[str, Any] = {"question": item.question, "stream": True}
                if not full_answers:
                    body["max_tokens"] = 1
                ev = tok = None
                t0 = time.perf_counter()
                with client.stream("POST", "/v1/ask", json=body) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                            if kind == "passages" and ev is None:
                                ev = _ms(t0)
                            elif kind == "token" and tok is None:
                                tok = _ms(t0)
                totals.append(_ms(t0))
                ev_row.append(ev)
                tok_row.append(tok)
            ev_runs.append(ev_row)
            tok_runs.append(tok_row)
    return {
        "url": url,
        "questions": len(items),
        "evidence_ms": latency_block(ev_runs),
        "first_token_ms": latency_block(tok_runs),
        "total_ms": dist(totals),
        "max_tokens": None if full_answers else 1,
    }


_STARTUP_SCRIPT = """
import json, time
t0 = time.perf_counter()
out = {}
import api.main
out["import_api_and_service"] = time.perf_counter() - t0
from rag.service import RAG
from rag.settings import Settings
if Settings().embedder == "sentence-transformers":
    t = time.perf_counter()
    import torch, sentence_transformers
    out["import_torch_and_sentence_transformers"] = time.perf_counter() - t
t = time.perf_counter()
rag = RAG.from_settings(Settings())
out["load_embedder_and_index"] = time.perf_counter() - t
import sys
out["torch_imported"] = "torch" in sys.modules
t = time.perf_counter()
rag.generator
out["load_answer_model"] = time.perf_counter() - t
t = time.perf_counter()
rag.search("Thủ tướng thăm Mỹ")
out["first_search"] = time.perf_counter() - t
out["total"] = time.perf_counter() - t0
print("STARTUP " + json.dumps(out))
"""


def startup_parts(env: dict[str, str], *, timeout_s: float) -> dict[str, Any]:
    """Where a start's time goes: the steps of the server's lifespan, timed one by one in a
    fresh interpreter with the same settings (imports, embedder + index, answer model)."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", _STARTUP_SCRIPT], cwd=ROOT, env={**os.environ, **env},
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in r.stdout.splitlines():
        if line.startswith("STARTUP "):
            parts = json.loads(line[8:]).items()
            return {k: v if isinstance(v, bool) else _round(v) for k, v in parts}
    return {"error": (r.stderr or r.stdout)[-500:]}


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies, so no server is left behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    pid: int
    url: str
    ready_s: float | None
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def serve(env: dict[str, str], *, timeout_s: float, log_dir: Path) -> Iterator[Server]:
    """Start ``python -m rag.cli serve`` on a free port; stop it (SIGTERM, then SIGKILL)."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"server-{port}.log"
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        ready: float | None = None
        try:
            with httpx.Client(base_url=url, timeout=2.0) as client:
                while time.perf_counter() - t0 < timeout_s and proc.poll() is None:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get("/healthz").status_code == 200:
                            ready = time.perf_counter() - t0
                            break
                    time.sleep(0.05)
            yield Server(proc.pid, url, ready, log_path)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s, for a server the benchmark started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
