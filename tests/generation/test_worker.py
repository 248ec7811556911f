"""The supervised worker process: answers like the engine it wraps, survives its crashes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from rag.generation import EngineUnavailable, FakeGenerator, Generator
from rag.generation.worker import WorkerGenerator

ROOT = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "user", "content": "[1]\nThủ tướng chứng kiến 25 thỏa thuận.\n\nCâu hỏi: Thủ tướng chứng kiến bao nhiêu thỏa thuận?"}]  # fmt: skip


def _wait(worker: WorkerGenerator, state: str, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while worker.state().state != state:
        assert time.monotonic() - t0 < timeout, f"still {worker.state()} after {timeout} s"
        time.sleep(0.05)


def _crash_on_load() -> Generator:
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def _fail_on_load() -> Generator:
    raise FileNotFoundError("no such model: /nowhere.gguf")


@pytest.fixture
def worker() -> WorkerGenerator:
    w = WorkerGenerator(partial(FakeGenerator, delay_s=0.05), name="fake", backoff_s=(0.2, 1.0))
    assert w.wait_ready(30).state == "ready"
    yield w
    w.close()


def test_the_worker_answers_like_the_engine_it_runs(worker: WorkerGenerator) -> None:
    direct = FakeGenerator()
    assert "".join(worker.stream_chat(PROMPT, max_tokens=50, temperature=0)) == "".join(
        direct.stream_chat(PROMPT, max_tokens=50, temperature=0)
    )
    got = worker.complete(PROMPT, max_tokens=50)
    assert got.text == direct.complete(PROMPT, max_tokens=50).text
    assert "25" in got.text and got.token_logprobs
    assert (
        worker.score(PROMPT, ["25 thỏa thuận", "99 tỷ USD"])[0][0]
        > worker.score(PROMPT, ["99 tỷ USD"])[0][0]
    )
    st = worker.state()
    assert st.state == "ready" and st.pid is not None and st.pid != os.getpid()


def test_a_killed_worker_fails_the_stream_in_flight_then_comes_back(
    worker: WorkerGenerator,
) -> None:
    first_pid = worker.pid
    stream = worker.stream_chat(PROMPT, max_tokens=50, temperature=0)
    assert next(stream)  # a generation is in flight
    worker.kill_child()
    with pytest.raises(EngineUnavailable, match="SIGKILL"):
        list(stream)
    # While it restarts, calls are refused at once with a reason and a retry time.
    st = worker.state()
    if st.state != "ready":
        assert st.state == "restarting" and "SIGKILL" in st.detail
        with pytest.raises(EngineUnavailable) as refused:
            worker.complete(PROMPT, max_tokens=5)
        assert refused.value.retry_after >= 1
    t0 = time.monotonic()
    while worker.state().restarts < 1 or worker.state().state != "ready":
        assert time.monotonic() - t0 < 30, worker.state()
        time.sleep(0.05)
    assert worker.pid != first_pid
    assert worker.state().restarts == 1
    assert "25" in worker.complete(PROMPT, max_tokens=50).text


def test_closing_a_stream_early_stops_the_generation(worker: WorkerGenerator) -> None:
    stream = worker.stream_chat(PROMPT, max_tokens=50, temperature=0)
    next(stream)
    stream.close()
    # The pipe is clean: the next request gets its own answer, not the rest of the last one.
    assert "25" in worker.complete(PROMPT, max_tokens=50).text


def test_a_crash_loop_backs_off_and_ends_failed_with_the_reason() -> None:
    w = WorkerGenerator(_crash_on_load, name="crashy", backoff_s=(0.05, 0.2), failed_after=3)
    try:
        _wait(w, "failed", timeout=60)
        st = w.state()
        assert "SIGSEGV" in st.detail and "rag doctor" in st.detail
        assert st.restarts >= 3
        with pytest.raises(EngineUnavailable, match="failed"):
            w.complete(PROMPT, max_tokens=5)
    finally:
        w.close()


def test_a_model_that_does_not_load_is_failed_with_its_error() -> None:
    w = WorkerGenerator(_fail_on_load, name="missing", backoff_s=(5.0, 5.0))
    try:
        assert w.wait_ready(30).state == "failed"
        assert "no such model" in w.state().detail
    finally:
        w.close()


def test_a_script_without_a_main_guard_can_use_the_worker(tmp_path: Path) -> None:
    """The model process does not re-run the caller's __main__ (as multiprocessing's spawn
    would), so a plain script embedding the Python API works."""
    shutil.copytree(ROOT / "data" / "articles", tmp_path / "articles")
    script = tmp_path / "tool.py"
    script.write_text(
        "from rag import RAG\n"
        "rag = RAG.from_settings()\n"
        "rag.ingest()\n"
        "a = rag.ask('Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?')\n"
        "print('ANSWER', a.answer, rag.engine_state()['state'])\n",
        encoding="utf-8",
    )
    env = {
        **os.environ, "RAG_EMBEDDER": "fake", "RAG_GENERATOR": "fake",
        "RAG_GENERATOR_PROCESS": "true", "RAG_DATA_DIR": str(tmp_path / "articles"),
        "RAG_INDEX_DIR": str(tmp_path / "index"), "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    [line] = [ln for ln in run.stdout.splitlines() if ln.startswith("ANSWER")]
    assert "170" in line and line.endswith("ready")


def test_passage_state_calls_reach_the_engine_in_the_worker(worker: WorkerGenerator) -> None:
    report = worker.prepare_prefixes([PROMPT, PROMPT[:1]], tails=["\n\n[2]\n"])
    assert report is not None and report.computed == 2  # the fake counts what it was given
    assert worker.remember_prefix(PROMPT, tails=[]) is False  # the fake keeps no state
