"""The machine a figure came from: CPU, contention, memory, versions."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any


# --- machine, CPU contention, memory -------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx")
                return [f for f in line.split(":", 1)[1].split() if f.startswith(wanted)]
    return []


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    vals = [int(v) for v in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


class CpuWatch:
    """How much of the machine's CPU other processes used while the benchmark ran.

    Busy time of the whole machine (``/proc/stat``) minus this process's own CPU time (and its
    waited-for children, e.g. the servers it started), as a share of all CPU time.
    """

    def __init__(self) -> None:
        self.start = _cpu_jiffies()
        t = os.times()
        self.self_start = t.user + t.system + t.children_user + t.children_system
        self.wall_start = time.perf_counter()

    def result(self) -> dict[str, Any]:
        end = _cpu_jiffies()
        t = os.times()
        mine = t.user + t.system + t.children_user + t.children_system - self.self_start
        wall = time.perf_counter() - self.wall_start
        out: dict[str, Any] = {"wall_s": round(wall, 2), "own_cpu_s": round(mine, 2)}
        if self.start is not None and end is not None:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            busy = (end[0] - self.start[0]) / hz
            total = (end[1] - self.start[1]) / hz
            if total > 0:
                out["machine_busy_share"] = round(busy / total, 3)
                out["others_share"] = round(max(0.0, busy - mine) / total, 3)
        with contextlib.suppress(OSError):
            out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        return out


def rss_bytes(pid: int | None = None, key: str = "VmRSS") -> int | None:
    """Resident memory (``VmRSS``) or its peak (``VmHWM``) of a process, in bytes."""
    path = Path(f"/proc/{pid or 'self'}/status")
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    try:
        import psutil

        info = psutil.Process(pid or os.getpid()).memory_info()
        return int(info.rss)
    except Exception:
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (the server and its answer-model worker), from
    ``/proc/<pid>/task/<tid>/children``."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in children.read_text().split()]
    return out


def tree_rss_bytes(pid: int, key: str = "VmRSS") -> int | None:
    """Resident memory of ``pid`` and its descendants summed (pages they share counted once
    per process: an upper bound)."""
    sizes = [rss_bytes(p, key) for p in process_tree(pid)]
    return sum(x for x in sizes if x is not None) if any(x is not None for x in sizes) else None


def _rss_delta(before: int | None) -> int | None:
    now = rss_bytes()
    return None if before is None or now is None else now - before


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "sentence-transformers", "transformers", "llama_cpp_python",
                "faiss-cpu", "bm25s", "numpy", "onnxruntime", "optimum", "numba"):  # fmt: skip
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gb": None,
    }
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
    with contextlib.suppress(OSError):
        info["load_avg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info
