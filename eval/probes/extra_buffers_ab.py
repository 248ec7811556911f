"""Probe (issue 13): the service's first token with llama.cpp's extra buffer types on and off.

``rag bench-engine`` times the engine alone on one prompt; this asks the same dev questions
through ``RAG.ask`` (default models, worker process, the reader deciding before it streams) in
separate processes, ``RAG_EXTRA_BUFFERS=on`` and ``off`` alternating round by round so drift of
a noisy machine falls on both. One warm-up question per process is not counted.

Usage from the repo root: ``.venv/bin/python eval/probes/extra_buffers_ab.py 12 2``
(12 questions, 2 rounds of each setting); prints the per-setting p50 / mean and the answers
that differ.
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if len(sys.argv) > 1 and sys.argv[1] == "--child":
    sys.path.insert(0, str(HERE))
    from common import split_items  # eval/probes/ (the script's folder)

    from rag.service import RAG
    from rag.settings import Settings

    n = int(sys.argv[2])
    items = [g for g in split_items("dev") if g.answerable][: n + 1]
    rag = RAG.from_settings(Settings())
    for i, g in enumerate(items):
        a = rag.ask(g.question)
        if i:  # the first question warms the process up
            row = {"id": g.id, "ms": a.timings_ms.first_token, "answer": a.answer}
            print(json.dumps(row, ensure_ascii=False), flush=True)
    sys.exit(0)

n, rounds = int(sys.argv[1]), int(sys.argv[2])
times: dict[str, list[float]] = {"on": [], "off": []}
answers: dict[str, dict[str, str]] = {"on": {}, "off": {}}
for r in range(rounds):
    for setting in ("on", "off") if r % 2 == 0 else ("off", "on"):
        env = dict(os.environ, RAG_EXTRA_BUFFERS=setting)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        times[setting] += [row["ms"] for row in rows]
        answers[setting].update({row["id"]: row["answer"] for row in rows})
        ms = [row["ms"] for row in rows]
        print(f"round {r} {setting}: p50 {statistics.median(ms):.0f} ms", flush=True)
for setting, ms in times.items():
    print(
        f"{setting}: first token p50 {statistics.median(ms):.0f} ms, "
        f"mean {statistics.fmean(ms):.0f} ms over {len(ms)}"
    )
ratio = statistics.median(times["off"]) / statistics.median(times["on"])
print(f"off / on, p50: {ratio:.3f}")
differ = [k for k in answers["on"] if answers["on"][k] != answers["off"].get(k)]
print(f"answers that differ: {len(differ)} of {len(answers['on'])}", differ)
