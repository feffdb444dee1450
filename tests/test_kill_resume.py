"""Training killed with SIGKILL at any moment resumes from its last completed epoch."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nucleuseg.checkpoint import load_model, read_training_state

SCRIPT = textwrap.dedent(
    """
    import sys
    from nucleuseg import Segmenter
    from nucleuseg.config import get_preset
    from nucleuseg.data import make_synthetic

    preset = get_preset("default")
    preset = preset.replace(
        network=preset.network.replace(depth=3, base_filters=4),
        training=preset.training.replace(crop=32, batch_size=2, steps_per_epoch=6),
    )
    state, out = sys.argv[1], sys.argv[2]
    seg = Segmenter("torch", preset=preset, seed=3)
    seg.fit(make_synthetic(4, size=48, seed=1), epochs=5, progress=False, resume=state or None)
    seg.save(out)
    """
)


def _run(tmp_path, state, out, **kwargs):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), str(state), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    pytest.importorskip("torch", reason="the kill/resume test trains on the torch backend")
    reference = tmp_path / "reference.safetensors"
    assert _run(tmp_path, "", reference).wait(timeout=300) == 0

    state = tmp_path / "state.safetensors"
    resumed = tmp_path / "resumed.safetensors"
    proc = _run(tmp_path, state, resumed)
    deadline = time.monotonic() + 240
    # kill it as soon as at least two epochs are on disk, in the middle of the next one
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            try:
                done = len(read_training_state(state, _config()).history.epochs)
            except Exception:  # the file is replaced atomically, but may not exist yet
                done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not resumed.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left"

    killed_at = len(read_training_state(state, _config()).history.epochs)
    assert 2 <= killed_at < 5
    assert _run(tmp_path, state, resumed).wait(timeout=300) == 0
    a, b = load_model(reference), load_model(resumed)
    assert [e["epoch"] for e in b.history["epochs"]] == [1, 2, 3, 4, 5]
    assert np.allclose(
        [e["loss"] for e in a.history["epochs"]],
        [e["loss"] for e in b.history["epochs"]],
        atol=1e-5,
    )
    worst = max(float(np.abs(a.weights[k] - b.weights[k]).max()) for k in a.weights)
    assert worst < 1e-5


def _config():
    from nucleuseg.config import get_preset

    return get_preset("default").network.replace(depth=3, base_filters=4)
