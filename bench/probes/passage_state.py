"""Probe (issue 13): prompt reading with a precomputed passage state vs the whole prompt.

For the first 20 gold questions: the prompt is the system instructions, the top passage whole
as item [1], two 150-character snippets of the next passages and the question. The KV state of
the prefix (instructions + [1]) is saved per sequence (``llama_state_seq_get_data``: the KV
cells only, not the context's logits buffers that ``Llama.save_state`` also copies), written
to disk, read back into a context that held something else, and only the rest is read.
Prints per question and the medians; ``same`` = the next token equals the cold read's.
Run from the repo root: ``.venv/bin/python bench/probes/passage_state.py`` (about 3 min).
Not part of the service: the layout is the probe's, not the reader's evidence sentences.
"""
import json, sys, time, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rag.settings import Settings
from rag.generation.factory import local_engine
from rag.service import RAG
from rag.prompts import SYSTEM_VI

s = Settings()
rag = RAG.from_settings(s)
gen = local_engine(s.model_dump())
llm = gen._llm
chunks = rag.index.chunks
qs = [json.loads(l)["question"] for l in open(Path(__file__).resolve().parents[2] / "eval/gold.jsonl")][:20]
import tempfile
tmp = Path(tempfile.mkdtemp(prefix="passage-states-")); tmp.mkdir(exist_ok=True)
rows = []
for i, q in enumerate(qs):
    top = rag.retrieve(q, 5)
    chunk = top[0].chunk.text
    others = "\n\n".join(f"[{n}]\n{p.chunk.text[:150]}" for n, p in enumerate(top[1:3], 2))
    prefix_msgs = [{"role": "system", "content": SYSTEM_VI},
                   {"role": "user", "content": f"Các đoạn trích:\n\n[1]\n{chunk}"}]
    full_user = f"Các đoạn trích:\n\n[1]\n{chunk}\n\n{others}\n\nCâu hỏi: {q}"
    full = gen._prompt_tokens([prefix_msgs[0], {"role": "user", "content": full_user}])
    pre = gen._prompt_tokens(prefix_msgs)
    # the prefix's tokens up to where the two differ (the chat template closes the user turn)
    n = 0
    while n < min(len(pre), len(full)) and pre[n] == full[n]:
        n += 1
    # (a) whole prompt, nothing cached
    llm.n_tokens = 0
    t = time.perf_counter(); llm.eval(full); cold = time.perf_counter() - t
    import numpy as np
    cold_tok = int(np.argmax(gen._logits_row(-1)))
    # (b) state after the prefix: computed, written to disk, then read back and used
    llm.n_tokens = 0
    t = time.perf_counter(); llm.eval(full[:n]); build = time.perf_counter() - t
    import ctypes, llama_cpp
    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
    path = tmp / f"s{i}.bin"
    path.write_bytes(bytes(buf))
    size = path.stat().st_size
    llm.n_tokens = 0
    llm.eval(gen._prompt_tokens([{"role": "user", "content": "xin chào"}]))  # something else in the cache
    t = time.perf_counter()
    data = path.read_bytes()
    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, -1, -1)
    src = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    got = llama_cpp.llama_state_seq_set_data(ctx, src, len(data), 0)
    assert got == len(data), got
    llm.input_ids[:n] = full[:n]
    llm.n_tokens = n
    t_load = time.perf_counter() - t
    llm.eval(full[n:])
    # check: the logits after the question match the cold read (same next token)
    import numpy as np
    warm_tok = int(np.argmax(gen._logits_row(-1)))
    warm = time.perf_counter() - t
    rows.append(dict(full=len(full), prefix=n, rest=len(full) - n, cold=cold, warm=warm,
                     load=t_load, build=build, size=size, same=int(cold_tok == warm_tok)))
    print(rows[-1], flush=True)
med = lambda k: statistics.median(r[k] for r in rows)
print({k: round(med(k), 3) for k in rows[0]})
