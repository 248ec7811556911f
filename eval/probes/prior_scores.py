"""Probe (issue 12): how much the evidence raises the model's likelihood of its own draft.

For each record of ``candidate_scores.py`` the bare draft (markers dropped) is scored as a
complete reply after a prompt with the same instructions and question but **no passages**.
``pmi`` = mean log-probability with the evidence minus without: an answer the model would give
anyway (its prior, or an echo of the question) gains little from the evidence; one read from
it gains much. The question-only prompt is about 60-100 tokens, so the signal costs a fraction
of the prompt's reading.

Usage: ``.venv/bin/python eval/probes/prior_scores.py /tmp/cands_dev.jsonl`` (adds ``pmi`` and
``prior_lps`` to each record, rewriting the file).
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rag.generation.factory import local_engine
from rag.prompts import build_messages
from rag.service import RAG
from rag.settings import Settings

path = Path(sys.argv[1])
rows = [json.loads(line) for line in path.open()]
s = Settings()
rag = RAG.from_settings(s)
gen = local_engine(s.model_dump())
ms = []
for r in rows:
    if "pmi" in r or not r["bare_lps"]:
        continue
    # The question as the model read it (an unaccented one gets its diacritics back).
    q_read = r["question"] if r["english"] else rag.restorer().restore(r["question"])
    msgs = build_messages(q_read, [], english=r["english"], history=[])
    t0 = time.perf_counter()
    (prior,) = gen.score(msgs, [r["bare"]])
    ms.append((time.perf_counter() - t0) * 1000)
    r["prior_lps"] = prior
    r["pmi"] = sum(r["bare_lps"]) / len(r["bare_lps"]) - sum(prior) / len(prior)
path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
ms.sort()
print(f"{len(ms)} scored, p50 {ms[len(ms) // 2]:.0f} ms" if ms else "nothing to score")
