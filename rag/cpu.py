"""What the CPU can do, as the kernel reports it."""

from __future__ import annotations

import re
from pathlib import Path


def cpu_flags() -> set[str]:
    """The CPU flags the kernel reports (``/proc/cpuinfo``), empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def has_int8_dot(flags: set[str] | None = None) -> bool:
    """Whether the CPU multiplies u8 x s8 without saturating (AVX-512 VNNI, AVX-VNNI or AMX);
    on plain AVX2 the 16-bit intermediate of ``vpmaddubsw`` saturates with signed weights."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
