"""Targets and the report files (JSON and Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rag.bench.options import TARGETS
from rag.bench.stats import _round, dig


# --- targets and report files --------------------------------------------------------------------
def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, path, op, bound, unit in TARGETS:
        if path[0] not in report.get("sections", {}):
            continue
        value = dig(report["sections"], path)
        met = None
        if isinstance(value, int | float):
            met = value <= bound if op == "<=" else value >= bound
        out.append({"target": label, "value": _round(value) if isinstance(value, float) else value,
                    "bound": f"{op} {bound:g}", "unit": unit, "met": met,
                    "path": "sections." + ".".join(path)})  # fmt: skip
    return out


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(
        json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    paths["md"].write_text(markdown(report), encoding="utf-8")
    return paths


def _f(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if unit == "rate":
            return f"{value:.3f}"
        if unit in ("x",):
            return f"{value:.2f}"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _fig(fig: Any, unit: str = "") -> str:
    """``median (min–max, n runs)`` of an ``over_runs`` figure."""
    if not isinstance(fig, dict) or fig.get("median") is None:
        return "—"
    runs = fig.get("runs") or []
    if len(runs) <= 1:
        return _f(fig["median"], unit)
    return f"{_f(fig['median'], unit)} ({_f(fig['min'], unit)}–{_f(fig['max'], unit)})"


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    m = cfg.get("machine", {})
    git = cfg.get("git") or {}
    cpu = cfg.get("cpu_during_run") or {}
    opts = cfg.get("options", {})
    lines = [
        "# Speed benchmark",
        "",
        f"{cfg.get('date', '')} · commit `{(git.get('commit') or 'unknown')[:10]}`"
        f"{' (with uncommitted changes)' if git.get('dirty') else ''} · "
        f"{'quick' if opts.get('quick') else 'full'} run, {opts.get('repeat')} repeat(s) · "
        f"{cfg.get('seconds', 0):.0f} s",
        "",
        f"Machine: {m.get('cores_available')} of {m.get('cores')} cores, {m.get('cpu')} "
        f"({', '.join(m.get('cpu_flags', []))}), {m.get('memory_gb')} GB; load average at start "
        f"{m.get('load_avg_start')}, at end {cpu.get('load_avg_end')}; other processes used "
        f"{_pct(cpu.get('others_share'))} of the machine's CPU during the run.",
        "",
        f"Models: embedder `{cfg.get('models', {}).get('embedder')}`, answer models "
        f"{cfg.get('models', {}).get('generators')}. Settings: n_threads "
        f"{cfg.get('settings', {}).get('n_threads')}, top_k {cfg.get('settings', {}).get('top_k')}"
        f", context_sentences {cfg.get('settings', {}).get('context_sentences')}, max_tokens "
        f"{cfg.get('settings', {}).get('max_tokens')}, embed_max_seq_length "
        f"{cfg.get('settings', {}).get('embed_max_seq_length')}.",
        "",
        "Each figure is the median over the runs, with the min–max over runs in brackets.",
        "",
        "## Targets",
        "",
        "| target | measured | bound | met |",
        "|---|---|---|---|",
    ]
    for t in report.get("targets", []):
        lines.append(f"| {t['target']} | {_f(t['value'], t['unit'])} {t['unit']} | "
                     f"{t['bound']} {t['unit']} | {_f(t['met'])} |")  # fmt: skip
    for name, err in report.get("errors", {}).items():
        lines.append(f"\n**Section `{name}` failed:** {err}")
    sec = report.get("sections", {})
    if "evidence" in sec:
        lines += _md_evidence(sec["evidence"])
    if "first_token" in sec:
        lines += _md_first_token(sec["first_token"])
        lines += _md_busy(sec["first_token"])
    if "states" in sec:
        from rag.bench.states import markdown as md_states

        lines += md_states(sec["states"])
    if "decode" in sec:
        lines += _md_decode(sec["decode"])
    if "ingest" in sec:
        lines += _md_ingest(sec["ingest"])
    if "search" in sec:
        lines += _md_search(sec["search"])
    if "server" in sec:
        lines += _md_server(sec["server"])
    if "vectors" in sec:
        lines += _md_vectors(sec["vectors"])
    if "throughput" in sec:
        lines += _md_throughput(sec["throughput"])
    notes = cfg.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _pct(x: Any) -> str:
    return f"{100 * x:.0f} %" if isinstance(x, int | float) else "—"


def _lat_row(label: str, block: Any) -> str:
    return f"| {label} | {_fig(dig(block, ('p50',)))} | {_fig(dig(block, ('p95',)))} |"


def _md_evidence(e: dict[str, Any]) -> list[str]:
    ip = e["in_process"]
    lines = ["", "## First evidence", "",
             f"{e['questions']} gold questions, {e['chunks']} chunks. {e['definition']}", "",
             "| in-process (ms) | p50 | p95 |", "|---|---|---|",
             _lat_row("request → passages, query embedding cold", ip["cold_ms"]),
             _lat_row("request → passages, query embedding cached", ip["warm_ms"])]  # fmt: skip
    for k, v in ip["parts_ms"].items():
        lines.append(_lat_row(f"part: {k.replace('_', ' ')}", v))
    if e.get("http"):
        h = e["http"]
        lines += ["", f"Over HTTP ({h['url']}, POST /v1/ask stream, max_tokens 1):", "",
                  "| HTTP (ms) | p50 | p95 |", "|---|---|---|",
                  _lat_row("request → passages event", h["evidence_ms"]),
                  _lat_row("request → first token event", h["first_token_ms"])]  # fmt: skip
    return lines


def _md_first_token(ft: dict[str, Any]) -> list[str]:
    lines = ["", "## Time to first answer token", "", ft["definition"], "",
             "| model | load (s) | first after load (ms) | p50 (ms) | p95 (ms) | prompt tokens p50 "
             "(system) | prompt tok/s after the system prompt | prefix cache off → on, p50 "
             "(ms) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for role, r in ft["models"].items():
        pc = r.get("prefix_cache") or {}
        pc_txt = "—"
        if pc.get("measured"):
            pc_txt = (
                f"{_f(dig(pc, ('reset_ttft_ms', 'p50')))} → "
                f"{_f(dig(pc, ('normal_ttft_ms', 'p50')))}"
            )
        lines.append(
            f"| {role}: `{r['model']}` | {_f(r['load_s'])} | "
            f"{_f(r['first_request_after_load_ms'])} | {_fig(r['ttft_ms']['p50'])} | "
            f"{_fig(r['ttft_ms']['p95'])} | {_f(dig(r, ('prompt_tokens', 'p50')))} "
            f"({_f(r.get('system_prompt_tokens'))}) | "
            f"{_f(dig(r, ('prompt_tok_s_after_prefix', 'p50')))} | {pc_txt} |"
        )
    return lines


def _md_busy(ft: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for r in ft["models"].values():
        busy = r.get("evidence_while_generating_ms")
        if not busy:
            continue
        cells = [
            f"{label.replace('_', ' ')}: p50 {_f(dig(busy, (label, 'p50')))} ms, p95 "
            f"{_f(dig(busy, (label, 'p95')))} ms"
            for label in ("threads_as_configured", "embedder_on_1_thread")
            if label in busy
        ]
        lines += ["", f"First evidence while `{r['model']}` generates in another thread "
                  f"({busy['questions']} questions, query embedding cold): " + "; ".join(cells)
                  + "."]  # fmt: skip
    return lines


def _md_decode(d: dict[str, Any]) -> list[str]:
    lines = ["", "## Decoding speed: service vs llama-cpp-python directly", "",
             f"max_tokens {d['max_tokens']}, ignore EOS {d['ignore_eos']}, questions "
             f"{', '.join(d['questions'])}. {d['definition']}", "",
             "| model | direct tok/s | service tok/s | service / direct |",
             "|---|---|---|---|"]  # fmt: skip
    for role, r in d["models"].items():
        if not r.get("model"):
            lines.append(f"| {role} | — | — | {r.get('why', '')} |")
            continue
        lines.append(f"| {role}: `{r['model']}` | {_fig(r['direct_tok_s'])} | "
                     f"{_fig(r['service_tok_s'])} | {_fig(r['ratio'], 'x')} |")  # fmt: skip
    return lines


def _md_ingest(g: dict[str, Any]) -> list[str]:
    lines = ["", "## Ingest: embedding speed and retrieval quality per variant", "",
             f"{g['chunks']} chunks of the corpus (~{_f(g['chars_per_passage'])} characters). "
             f"{g['definition']}", "",
             "| variant | passages/s | × fp32 | query (ms) | cos to fp32 (min) | hit@1 | hit@5 "
             "| dense-only hit@1 / hit@5 | load (s) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = dig(g, ("variants", "fp32", "passages_per_s", "median"))
    for name, r in g["variants"].items():
        if not r.get("measured"):
            lines.append(f"| {name} | not measured: {r.get('why', '')} | | | | | | | |")
            continue
        rate = dig(r, ("passages_per_s", "median"))
        speed = rate / base if rate and base else None
        hy = dig(r, ("quality", "hybrid")) or {}
        de = dig(r, ("quality", "dense_only")) or {}
        lines.append(
            f"| {name} | {_fig(r['passages_per_s'])} | {_f(speed, 'x')} | "
            f"{_f(dig(r, ('query_ms', 'p50')))} | {_f(dig(r, ('cosine_to_fp32', 'min')), 'rate')} "
            f"| {_f(hy.get('file_hit@1'), 'rate')} | {_f(hy.get('file_hit@5'), 'rate')} | "
            f"{_f(de.get('file_hit@1'), 'rate')} / {_f(de.get('file_hit@5'), 'rate')} | "
            f"{_f(r.get('load_s'))} |"
        )
    for key, label in (
        ("best", "Fastest within the quality bar"),
        ("configured", "The service's embedder (these settings)"),
    ):
        c = g.get(key)
        if c:
            lines += ["", f"{label}: **{c['variant']}**, {_f(c['speedup'], 'x')}× fp32 (hit@5 "
                      f"{_f(c['file_hit@5'], 'rate')} vs {_f(c['fp32_file_hit@5'], 'rate')}, "
                      f"hit@1 {_f(c['file_hit@1'], 'rate')} vs "
                      f"{_f(c['fp32_file_hit@1'], 'rate')})."]  # fmt: skip
    return lines


def _md_search(s: dict[str, Any]) -> list[str]:
    mem = s["memory_bytes_per_chunk"]
    lines = ["", "## Search over a synthetic corpus", "",
             f"{s['chunks']} chunks, dim {s['dim']}, {s['clusters']} clusters, index "
             f"{s['index_type']} {s.get('hnsw') or ''} (built in {_f(s['faiss_build_s'])} s; "
             f"BM25 in {_f(s['bm25_build_s'])} s). {s['definition']}", "",
             "| retrieval (ms) | p50 | p95 |", "|---|---|---|",
             _lat_row("whole retrieval (no query embedding)", s["retrieve_ms"])]  # fmt: skip
    for k, v in s["parts_ms"].items():
        lines.append(_lat_row(f"part: {k.replace('_', ' ')}", v))
    sweep = s.get("hnsw_ef_search_sweep") or []
    tok = s.get("bm25_tokenize_ms_per_chunk") or {}
    lines += [
        "",
        f"HNSW recall@10 against exact search: {_f(s['recall_at_10'], 'rate')} "
        f"({s['recall_queries']} queries). bm25 bincount gives the same ranking for "
        f"{s['bm25_bincount_same_ranking']} queries.",
        "",
    ]
    if sweep:
        lines += [
            "| efSearch | " + " | ".join(str(x["ef_search"]) for x in sweep) + " |",
            "|---" * (len(sweep) + 1) + "|",
            "| recall@10 | " + " | ".join(_f(x["recall_at_10"], "rate") for x in sweep) + " |",
            "| dense p50 (ms) | " + " | ".join(_f(x["p50_ms"]) for x in sweep) + " |",
            "",
        ]
    if tok:
        lines += [
            f"BM25 tokenisation per chunk: {_f(tok.get('lexical_tokens'))} ms as it is, "
            f"{_f(tok.get('memoised_fold'))} ms with fold() memoised per word (same "
            f"tokens: {_f(tok.get('same_tokens'))}).",
            "",
        ]
    lines += [
        "| memory per chunk (bytes) | vectors | FAISS | BM25 | chunk table | total |",
        "|---|---|---|---|---|---|",
    ]
    parts = ("vectors", "faiss", "bm25", "chunk_table")
    for kind in ("computed", "rss_delta"):
        r = mem[kind]
        cells = [r.get(part, r.get(f"{part}_rss")) for part in parts] + [r.get("total")]
        lines.append(f"| {kind.replace('_', ' ')} | " + " | ".join(_f(c) for c in cells) + " |")
    return lines


def _md_server(s: dict[str, Any]) -> list[str]:
    lines = ["", "## Server", "", s["definition"], "",
             f"- ready after start: first {_f(s['first_ready_s'])} s; warm restarts "
             f"{_fig(s['warm_ready_s'])} s (all: {s['ready_s']})",
             f"- resident memory: at ready {_fig(s['rss_at_ready_mb'])} MB, after "
             f"{s['questions']} questions {_fig(s['rss_after_questions_mb'])} MB, peak "
             f"{_fig(s['rss_peak_mb'])} MB; with the answer model's worker process "
             f"{_fig(s.get('rss_with_workers_mb'))} MB"]  # fmt: skip
    parts = s.get("startup_parts_s") or {}
    if parts and "error" not in parts:
        lines.append(
            "- where a start goes (s, timed step by step in a fresh interpreter): "
            + ", ".join(f"{k.replace('_', ' ')} {_f(v)}" for k, v in parts.items())
        )
    h = s.get("http")
    if h:
        lines.append(
            f"- over HTTP: passages event p50 {_fig(dig(h, ('evidence_ms', 'p50')))} ms, first "
            f"token p50 {_fig(dig(h, ('first_token_ms', 'p50')))} ms, whole answer p50 "
            f"{_f(dig(h, ('total_ms', 'p50')))} ms"
        )
    return lines


def _md_vectors(v: dict[str, Any]) -> list[str]:
    lines = ["", f"## Vector stores at {v['n']:,} vectors (dim {v['dim']}, k {v['k']})", "",
             v.get("definition", ""), "",
             "| store | index | build / insert (s) | search p50 (ms) | p95 (ms) | recall@k |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    f = v.get("faiss") or {}
    lines.append(f"| FAISS | {f.get('index')} {f.get('params') or ''} | {_f(f.get('build_s'))} | "
                 f"{_f(f.get('search_ms_p50'))} | {_f(f.get('search_ms_p95'))} | "
                 f"{_f(f.get('recall_at_k'))} |")  # fmt: skip
    m = v.get("milvus_lite") or {}
    if "error" in m or "skipped" in m:
        lines.append(f"| Milvus Lite | {m.get('error') or m.get('skipped')} | | | | |")
        return lines
    build = (f"{_f(m.get('insert_s'))} + flush {_f(m.get('flush_s'))} + index "
             f"{_f(m.get('index_build_s'))}")  # fmt: skip
    lines.append(f"| Milvus Lite | {m.get('index')} | {build} | {_f(m.get('search_ms_p50'))} | "
                 f"{_f(m.get('search_ms_p95'))} | {_f(m.get('recall_at_k'))} |")  # fmt: skip
    e = m.get("ef_128")
    if e:
        lines.append(f"| Milvus Lite, ef 128 | same | | {_f(e.get('search_ms_p50'))} | "
                     f"{_f(e.get('search_ms_p95'))} | {_f(e.get('recall_at_k'))} |")  # fmt: skip
    return lines


def _md_throughput(t: dict[str, Any]) -> list[str]:
    lines = ["", "## Ask throughput", "", t.get("definition", ""), "",
             "| answer engine | clients | answered | generated / abstained | answers/min "
             "| latency p50 (ms) | p95 (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for key, label in (("in_process", "in-process (worker)"), ("remote", "model server")):
        rows = t.get(key)
        if isinstance(rows, dict):
            lines.append(f"| {label} | {rows.get('skipped', '')} | | | | | |")
            continue
        for r in rows or []:
            lat = r.get("latency_ms") or {}
            lines.append(f"| {label} | {r['clients']} | {r['answered']}/{r['asks']} | "
                         f"{r.get('generated')} / {r.get('abstained')} | "
                         f"{_f(r.get('answers_per_minute'))} | {_f(lat.get('p50'))} | "
                         f"{_f(lat.get('p95'))} |")  # fmt: skip
    if t.get("remote_server"):
        lines.append(f"\nModel server: {t['remote_server']}.")
    return lines
