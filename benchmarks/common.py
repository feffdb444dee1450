"""What the benchmark scripts share: the machine they ran on and where the DSB images are."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from nucleuseg.data import load_dsb, resolve_dsb_path
from nucleuseg.data.dsb import DSBDataset
from nucleuseg.errors import NucleusegError

#: The DSB folder beside the project checkout, used when neither a path nor NUCLEUSEG_DSB is given.
BESIDE_CHECKOUT = "../shared/data/dsb2018/stage1_train"


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
    if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" or os.environ.get("ONEDNN_MAX_CPU_ISA"):
        marks += " (AVX-512 off: libraries kept to AVX2 by avx2_only.py's variables)"
    return f"{model}; {marks}; {cores} cores"


def open_dsb(path: str | None, masks: bool = False) -> DSBDataset | None:
    """The DSB images (with their masks when ``masks``; no cache) at ``path``; by default
    ``stage1_train`` under ``$NUCLEUSEG_DSB`` when that is set, else :data:`BESIDE_CHECKOUT`.
    ``None``, with the reason on stderr, when there are none."""
    path = path or ("stage1_train" if os.environ.get("NUCLEUSEG_DSB") else BESIDE_CHECKOUT)
    try:
        return load_dsb(resolve_dsb_path(path), masks=masks, cache=False, progress=False)
    except NucleusegError as err:
        print(f"no data: {err} (pass a DSB folder or set NUCLEUSEG_DSB)", file=sys.stderr)
        return None
