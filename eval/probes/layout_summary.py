"""Summary of layout_drafts.py against the quote probe's v0 (the shipped evidence).
Usage: python eval/probes/layout_summary.py eval/probes/layout_dev_500.jsonl /path/out_dev.jsonl"""
import json
import statistics
import sys
from collections import Counter

lay = {json.loads(line)["id"]: json.loads(line) for line in open(sys.argv[1])}
base = {json.loads(line)["id"]: json.loads(line) for line in open(sys.argv[2])}
ids = [i for i in lay if i in base]
a = [i for i in ids if lay[i]["answerable"]]
print(f"questions {len(ids)}, answerable {len(a)}")
print("drafts right: shipped", sum(base[i]["v0_ok"] for i in a), "layout", sum(lay[i]["ok"] for i in a))
print("answer in what it reads: shipped", sum(base[i]["any_has"] for i in a), "layout", sum(lay[i]["any_has"] for i in a))
print("both", sum(base[i]["v0_ok"] and lay[i]["ok"] for i in a),
      "only shipped", sum(base[i]["v0_ok"] and not lay[i]["ok"] for i in a),
      "only layout", sum(lay[i]["ok"] and not base[i]["v0_ok"] for i in a))
nf = lambda t: "không tìm thấy" in t.lower() or "not found" in t.lower()
u = [i for i in ids if not lay[i]["answerable"]]
print("unanswerable drafted 'not found': shipped", sum(nf(base[i]["v0"]) for i in u), "layout", sum(nf(lay[i]["draft"]) for i in u), "of", len(u))
print("answerable drafted 'not found': shipped", sum(nf(base[i]["v0"]) for i in a), "layout", sum(nf(lay[i]["draft"]) for i in a))
for k in ("prompt_tokens", "prefix_tokens", "fresh_tokens", "chars", "ms"):
    print(k, "p50", round(statistics.median(lay[i][k] for i in ids)))
c = Counter()
for i in a:
    c[lay[i]["type"], "base"] += base[i]["v0_ok"]
    c[lay[i]["type"], "lay"] += lay[i]["ok"]
    c[lay[i]["type"], "n"] += 1
for t in sorted({lay[i]["type"] for i in a}):
    print(f"  {t:14} n {c[t, 'n']:3}  shipped {c[t, 'base']:3}  layout {c[t, 'lay']:3}")
