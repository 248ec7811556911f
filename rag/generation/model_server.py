"""llama-cpp-python's OpenAI-compatible server (``llama_cpp.server``), with this project's
guard against the AMX crash: ``python -m rag.generation.model_server --model X.gguf ...``.

Its arguments are ``python -m llama_cpp.server``'s. The one difference: llama.cpp's extra
buffer types are chosen as the in-process engine chooses them (``RAG_EXTRA_BUFFERS``, default
``auto``: off where the build uses AMX, whose Q4_K path segfaults in the first decode; see
``rag.generation.llama.use_extra_buffers``), since the stock server has no switch for it; and
``--interrupt_requests false`` unless given (the stock default cuts a streaming answer short
when another request arrives). It is the model server ``rag serve-model`` starts and the tests
run against.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _guard_extra_buffers() -> str:
    import llama_cpp
    import llama_cpp.llama as llama_module

    from rag.generation.llama import use_extra_buffers

    choice = os.environ.get("RAG_EXTRA_BUFFERS", "auto")
    if choice not in ("auto", "on", "off"):
        choice = "auto"
    use, reason = use_extra_buffers(choice)  # type: ignore[arg-type]
    defaults = llama_cpp.llama_model_default_params

    def model_params() -> Any:
        params = defaults()
        params.use_extra_bufts = use
        return params

    llama_module.llama_cpp.llama_model_default_params = model_params  # type: ignore[attr-defined]
    return reason


def main() -> None:
    # The stock server cuts a streaming answer short when another request arrives (it sends
    # [DONE] without a finish_reason); the service sends several at once, so queue them.
    if not any(a.startswith("--interrupt_requests") for a in sys.argv[1:]):
        sys.argv += ["--interrupt_requests", "false"]
    reason = _guard_extra_buffers()
    print(f"rag model server: {reason}", file=sys.stderr, flush=True)
    from llama_cpp.server.__main__ import main as serve

    serve()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
