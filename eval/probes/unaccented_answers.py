"""Probe (issue 12): the service's whole answer to every unaccented gold question of a split.

The questions whose diacritics restoration (``rag/diacritics.py``) changes them, answerable or
not, asked through ``RAG.ask`` with the default models and the shipped calibration; one JSON
line each (answer, abstained, confidence, right by the evaluation's own ``item_correct``).
Run it before and after a change to how such questions are handled, into two files, and
compare the lines (the summary at the end counts them).

Usage from the repo root:
``.venv/bin/python eval/probes/unaccented_answers.py dev /tmp/unaccented_dev_before.jsonl``
(a rerun resumes the file).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import resumable, split_items  # eval/probes/ (the script's folder)

from rag.evaluation.metrics import item_correct
from rag.service import RAG
from rag.settings import Settings
from rag.text import looks_english

split, out_path = sys.argv[1], Path(sys.argv[2])
rag = RAG.from_settings(Settings())
done, out = resumable(out_path)
for g in split_items(split):
    if g.id in done or looks_english(g.question):
        continue
    if rag.restorer().restore(g.question) == g.question:
        continue
    a = rag.ask(g.question)
    row = {
        "id": g.id, "type": g.type, "answerable": g.answerable, "answer": a.answer,
        "abstained": a.abstained, "confidence": a.confidence,
        "correct": item_correct(a.answer, a.abstained, g.answers),
        "top_source": a.passages[0].source if a.passages else None,
        "first_token_ms": a.timings_ms.first_token,
    }  # fmt: skip
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()
    print(g.id, row["correct"], a.answer[:80], flush=True)
out.close()
rows = [json.loads(line) for line in out_path.open()]
ans = [r for r in rows if r["answerable"]]
una = [r for r in rows if not r["answerable"]]
print(
    f"{split}: {len(ans)} answerable right {sum(r['correct'] for r in ans)}, refused "
    f"{sum(r['abstained'] for r in ans)}; {len(una)} unanswerable refused "
    f"{sum(r['abstained'] for r in una)}"
)
