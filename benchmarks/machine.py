"""What the benchmarks print about the machine they ran on (shared by the benchmark scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_summary() -> str:
    """Processor model, AVX2 / AVX-512 flags and usable cores, from ``/proc/cpuinfo``."""
    model, flags = platform.processor() or "unknown processor", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        return f"{model} (no /proc/cpuinfo: CPU flags unknown), {os.cpu_count()} cores"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    marks = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx2", "avx512f"))
    return f"{model}; {marks}; {cores} cores"
