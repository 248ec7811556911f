"""Probe (issue 13): warm restart and resident memory of `rag serve` with the default models.

Starts `rag serve` on 127.0.0.1:8765 three times; for each: seconds to `/healthz` answering
with `answer_engine.state == "ready"`, seconds for one `/v1/ask`, then the RSS of the server
and its worker process summed (shared pages counted twice: an upper bound). Run from the repo
root with the index built: `.venv/bin/python bench/probes/restart_memory.py` (about 1 min).
"""
import subprocess, time, httpx, psutil, sys
def run():
    t0 = time.perf_counter()
    p = subprocess.Popen([".venv/bin/rag", "serve", "--port", "8765"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up = ready = None
    while time.perf_counter() - t0 < 120:
        try:
            r = httpx.get("http://127.0.0.1:8765/healthz", timeout=1)
            if up is None: up = time.perf_counter() - t0
            if r.json().get("answer_engine", {}).get("state") == "ready":
                ready = time.perf_counter() - t0; break
        except Exception: pass
        time.sleep(0.05)
    t = time.perf_counter()
    a = httpx.post("http://127.0.0.1:8765/v1/ask", json={"question": "Năm 2024 có bao nhiêu thỏa thuận hợp tác được ký kết?"}, timeout=120).json()
    ask = time.perf_counter() - t
    proc = psutil.Process(p.pid)
    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    p.terminate(); p.wait(20)
    return up, ready, ask, rss / 2**30, a["answer"][:60]
for i in range(3):
    print(run(), flush=True)
