"""``nucleuseg demo``: the shipped model on the built-in samples, and the training demo."""

from __future__ import annotations

import csv

import pytest

from nucleuseg.cli import main
from nucleuseg.demo import SAMPLES, run_demo, run_pretrained_demo

pytest.importorskip("torch", reason="the demo tests run on the torch extra")


def test_the_pretrained_demo_segments_every_sample(tmp_path):
    score = run_pretrained_demo(backend="torch", out=tmp_path, progress=False)
    names = [name for name, _, _ in SAMPLES]
    for name in names:
        assert (tmp_path / "samples" / f"{name}.png").is_file()
        assert (tmp_path / f"{name}_labels.png").is_file()
        assert (tmp_path / f"{name}_overlay.png").is_file()
    assert (tmp_path / "predictions.png").stat().st_size > 10_000
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = {row["image"].rsplit("/", 1)[-1]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(f"{name}.png" for name in names)
    assert all(int(row["nuclei"]) > 0 for row in rows.values())
    with open(tmp_path / "measurements.csv", newline="") as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == sum(
            int(r["nuclei"]) for r in rows.values()
        )
    # The shipped model finds the synthetic nuclei well: a broken model, normalisation or
    # post-processing scores far lower.
    assert score.score > 0.6


def test_demo_command_takes_a_model_and_an_output_folder(tmp_path, capsys):
    assert main(["demo", "--backend", "torch", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "measurements.csv").is_file()


def test_demo_refuses_an_output_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["demo", "--out", str(target)]) != 0


def test_the_training_demo_trains_scores_and_writes(tmp_path):
    result = run_demo("torch", minutes=0.05, out=tmp_path)
    assert 0.0 <= result.score <= 1.0
    for name in ("demo.safetensors", "submission.csv", "predictions.png", "training.png"):
        assert (tmp_path / name).is_file()
