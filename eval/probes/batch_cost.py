"""Probe (issues 12 and 13): what a decode step of ``n`` tokens costs the answer model on this
CPU, against one token. Sampled drafts decoded side by side, and prompt lookup (speculative)
decoding, both rest on a step of several tokens costing little more than a step of one, as it
does where decoding is bound by memory bandwidth.

Usage from the repo root: ``.venv/bin/python eval/probes/batch_cost.py`` (the default 1.5B
model, 2 threads; a 600-token prompt in the cache first; each size timed 3 times, best kept).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT

from rag.generation.llama import LlamaCppGenerator, system_info
from rag.settings import DEFAULT_GENERATOR

engine = LlamaCppGenerator(ROOT / "models" / f"{DEFAULT_GENERATOR}.gguf", n_ctx=4096, n_threads=2)
llm = engine._llm
text = "Thủ tướng chứng kiến 25 thỏa thuận được ký kết giữa doanh nghiệp hai nước. " * 40
prompt = engine._prompt_tokens([{"role": "user", "content": text + "\nCâu hỏi: bao nhiêu?"}])
llm.eval(prompt)
n0 = llm.n_tokens
print(system_info())
print(f"prompt {n0} tokens")
one = 0.0
for size in (1, 2, 4, 8, 16, 32):
    best = float("inf")
    for _ in range(3):
        llm.n_tokens = n0  # the next eval drops the cells after the prompt
        t = time.perf_counter()
        llm.eval(prompt[100 : 100 + size])
        best = min(best, time.perf_counter() - t)
    one = one or best
    print(
        f"step of {size:2d} tokens: {best * 1000:6.0f} ms  ({best / one:5.2f}x one token, "
        f"{best * 1000 / size:5.1f} ms a token)"
    )
engine.close()
