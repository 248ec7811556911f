"""Build the configured answer engine: in this process, or in a supervised worker process."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from rag.generation.base import Generator
from rag.generation.fake import FakeGenerator
from rag.settings import Settings


def local_engine(config: dict[str, Any]) -> Generator:
    """The engine itself (what runs inside the worker). ``config`` is ``Settings.model_dump()``
    (a plain dict pickles to a child process where a settings object may not)."""
    s = Settings.model_validate(config)
    if s.generator == "fake":
        return FakeGenerator()
    from rag.generation.llama import LlamaCppGenerator
    from rag.models import resolve

    path = resolve(s.generator_model, s.models_dir, "generator")
    return LlamaCppGenerator(
        Path(path), n_ctx=s.n_ctx, n_threads=s.n_threads, extra_buffers=s.extra_buffers,
        states_dir=s.states_path if s.passage_states_mb else None,
        states_max_bytes=s.passage_states_mb * 1_000_000,
    )  # fmt: skip


def remote_engine(s: Settings) -> Generator:
    """The OpenAI-compatible model server at ``llm_url`` (no native code in this process, so
    no worker process either)."""
    from rag.generation.remote import RemoteGenerator

    return RemoteGenerator(
        s.llm_url, model=s.llm_model, api_key=s.llm_api_key,
        connect_timeout_s=s.llm_connect_timeout_s, read_timeout_s=s.llm_read_timeout_s,
        retries=s.llm_retries,
    )  # fmt: skip


def load_generator(s: Settings) -> Generator:
    """The configured engine: a remote model server when ``llm_url`` is set, else the local
    model, in a child process with ``generator_process``."""
    if s.llm_url:
        return remote_engine(s)
    if not s.generator_process:
        return local_engine(s.model_dump())
    from rag.generation.worker import WorkerGenerator

    if s.generator != "fake":
        from rag.models import resolve

        resolve(s.generator_model, s.models_dir, "generator")  # a missing model: one clear error
    name = "fake" if s.generator == "fake" else Path(s.generator_model).stem
    worker = WorkerGenerator(partial(local_engine, s.model_dump()), name=name)
    worker.wait_ready(timeout=s.engine_load_timeout_s)
    return worker
