"""Thread pools sized from the cores the process may use, not the machine's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nucleuseg.backends.threads import cgroup_cpu_limit


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.5


def test_cgroup_v2_without_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5


def test_cgroup_v1_unlimited_and_missing(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_malformed_quota_is_ignored(tmp_path):
    (tmp_path / "cpu.max").write_text("lots 0\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_quota_caps_the_affinity(monkeypatch):
    from nucleuseg.backends import threads

    monkeypatch.setattr(threads, "_affinity_cores", lambda: 8)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda root=None: 1.5)
    assert threads.usable_cores() == 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda root=None: None)
    assert threads.usable_cores() == 8


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_torch_network_uses_only_the_pinned_core():
    pytest.importorskip("torch", reason="the torch extra is not installed")
    core = min(os.sched_getaffinity(0))
    code = (
        "import os, torch\n"
        f"os.sched_setaffinity(0, {{{core}}})\n"
        "torch.set_num_threads(4)\n"
        "import nucleuseg as ns\n"
        "from nucleuseg.backends import build_network\n"
        "net = build_network('torch', ns.config.get_preset('default').network.replace(depth=2))\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "1"
