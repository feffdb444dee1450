"""Every script in examples/ runs on synthetic data and prints what it promises.

Each example runs as a user would run it (``python examples/NAME.py --out DIR``), with
``NUCLEUSEG_EXAMPLES_QUICK=1`` so that it trains a tiny network for a few steps. The documentation
includes the example files themselves, so these tests keep the docs' code working too.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"

PNG = b"\x89PNG\r\n\x1a\n"

# script -> (needs a backend, lines its output must contain, files it must write to --out)
CASES = {
    "quickstart.py": (True, ["DSB score on 4 held-out images"], ["quickstart.safetensors"]),
    "train_dsb.py": (
        True,
        ["no DSB folder given", "validation DSB score"],
        ["model.safetensors", "training.png", "best.png", "worst.png"],
    ),
    "swap_backends.py": (True, ["trained with torch", "identical label images"], []),
    "kaggle_submission.py": (
        True,
        ["ImageId,EncodedPixels", "DSB score of the submission"],
        ["submission.csv"],
    ),
    "evaluate_label_folder.py": (False, ["worst images:", "DSB score"], ["scores.csv"]),
    "plotting.py": (True, ["wrote"], ["samples.png", "predictions.png", "training.png"]),
}


def run_example(name: str, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUCLEUSEG_EXAMPLES_QUICK="1", MPLBACKEND="Agg")
    env.pop("NUCLEUSEG_DSB", None)  # always the synthetic fallback
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--out", str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


def test_every_example_is_in_the_docs():
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    missing = [name for name in CASES if f'--8<-- "examples/{name}"' not in pages]
    assert not missing, f"examples not included in any docs page: {missing}"


@pytest.mark.parametrize(
    "name",
    # The examples that train a model take several seconds each.
    [pytest.param(n, marks=pytest.mark.slow) if CASES[n][0] else n for n in sorted(CASES)],
)
def test_example_runs(name, tmp_path):
    needs_backend, expected, files = CASES[name]
    if needs_backend and importlib.util.find_spec("torch") is None:
        pytest.skip(f'{name} trains a model with the torch backend: pip install "nucleuseg[torch]"')
    out = tmp_path / "out"
    out.mkdir()
    result = run_example(name, out)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    for line in expected:
        assert line in result.stdout, f"{name}: {line!r} not in its output:\n{result.stdout}"
    for file in files:
        assert (out / file).is_file(), f"{name} did not write {file}"
        if file.endswith(".png"):
            assert (out / file).read_bytes()[:8] == PNG
