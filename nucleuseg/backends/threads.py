"""How many CPU threads the frameworks should use: the cores this process may actually run on.

A framework left to itself counts the machine's cores. In a container limited to two CPUs on a
64-core host, or in a job pinned to a few cores by a scheduler (``taskset``, SLURM, ``cpuset``),
that starts 64 threads that take turns on two cores, and every step waits for the slowest of
them. :func:`usable_cores` is the smaller of the cores in this process's affinity mask
(``os.sched_getaffinity``) and the CPU quota of its cgroup (``cpu.max`` in cgroup v2,
``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1), rounded up; a backend whose framework would start more
threads than that caps its pool there (never raises it: a number the user chose that is smaller
stays).

Examples
--------
>>> usable_cores() >= 1
True
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: str | os.PathLike = _CGROUP_ROOT) -> float | None:
    """CPUs allowed by this process's cgroup quota, or ``None`` when there is no quota.

    Reads ``cpu.max`` (cgroup v2: ``"QUOTA PERIOD"`` or ``"max PERIOD"``) and else
    ``cpu/cpu.cfs_quota_us`` with ``cpu/cpu.cfs_period_us`` (cgroup v1: quota ``-1`` for none)
    under ``root``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "cpu.max").write_text("150000 100000\\n")
    >>> cgroup_cpu_limit(root)
    1.5
    >>> _ = (root / "cpu.max").write_text("max 100000\\n")
    >>> cgroup_cpu_limit(root) is None
    True
    """
    root = Path(root)
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max":
            return None
        return _ratio(quota, period or "100000")
    quota, period = (
        _read(root / "cpu" / "cpu.cfs_quota_us"),
        _read(root / "cpu" / "cpu.cfs_period_us"),
    )
    if quota is None or period is None or quota.startswith("-"):
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        value = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def usable_cores() -> int:
    """Cores this process may use: its affinity mask, capped by its cgroup CPU quota (rounded up).

    Examples
    --------
    >>> 1 <= usable_cores() <= (os.cpu_count() or 1)
    True
    """
    cores = _affinity_cores()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return cores
