"""Folders of images on dask.distributed workers: the same files as one process, workers lost.

One local cluster of two worker processes serves the module (starting one costs seconds); a
test that kills a worker waits for the nanny to bring it back. The workers run the model on the
onnx backend, which a worker process imports in a fraction of torch's time.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nucleuseg.batch import MEASUREMENTS, SUMMARY, segment_files
from nucleuseg.data import read_image, synthetic_sample, write_image
from nucleuseg.errors import ExtraMissing, InputError

distributed = pytest.importorskip("distributed")  # the large extra; installed in CI
BACKEND = "onnx"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A model file of an untrained tiny U-Net, saved by torch, run on onnx."""
    from nucleuseg import checkpoint
    from nucleuseg.backends.base import init_weights
    from nucleuseg.config import get_preset

    preset = get_preset("default")
    preset = preset.replace(network=preset.network.replace(depth=2, base_filters=2))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    checkpoint.save_model(path, init_weights(preset.network, 0), preset, "torch")
    return path


@pytest.fixture(scope="module")
def client():
    """A local cluster of two worker processes with one thread each, as the default builds."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def images(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        write_image(folder / f"cells{i:02d}.png", synthetic_sample(seed=i, size=(48, 64)).image)
    return folder


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def without_seconds(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in table]


def test_writes_what_one_process_writes(tmp_path, tiny_model, client):
    from nucleuseg.distributed import segment_files_distributed
    from nucleuseg.segmenter import Segmenter

    folder = images(tmp_path / "images", 6)
    (folder / "broken.png").write_bytes(b"not a png")
    one = segment_files(
        Segmenter.load(tiny_model, backend=BACKEND), folder, tmp_path / "one", progress=False
    )
    (tmp_path / "many").mkdir()
    leftover = tmp_path / "many" / ".cells00_labels.png.x1y2z3.tmp"  # as a lost worker leaves it
    leftover.write_bytes(b"half a file")
    seen = []
    many = segment_files_distributed(
        tiny_model,
        [folder, tmp_path / "missing.png"],
        tmp_path / "many",
        scheduler=client,
        backend=BACKEND,
        overlay=True,
        progress=False,
        on_image=seen.append,
    )
    assert [r.path for r in many.images] == [
        tmp_path / "missing.png",
        *(r.path for r in one.images),
    ]
    assert sorted(r.path.name for r in seen) == sorted(r.path.name for r in many.images)
    assert [r.path.name for r in many.failures] == ["missing.png", "broken.png"]
    assert many.nuclei == one.nuclei > 0
    for result in many.images[1:]:
        if result.ok:
            assert result.labels == tmp_path / "many" / result.labels.name
            assert result.overlay.is_file()
            expected = read_image(tmp_path / "one" / result.labels.name)
            np.testing.assert_array_equal(read_image(result.labels), expected)
    assert rows(many.measurements) == rows(one.measurements)
    assert without_seconds(rows(many.summary))[1:] == without_seconds(rows(one.summary))
    assert not leftover.exists()
    # The client is the caller's: left open.
    assert client.status == "running"


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(tmp_path, tiny_model, client):
    from nucleuseg.distributed import segment_files_distributed

    n = 12
    folder = images(tmp_path / "images", n)
    address, victim = sorted(client.run(os.getpid).items())[0]
    killed = []

    def kill_once(result) -> None:
        if not killed:  # after the first image, while the others are being segmented
            busy = client.processing([address])[address]
            os.kill(victim, signal.SIGKILL)
            killed.append((victim, len(busy)))

    report = segment_files_distributed(
        tiny_model,
        folder,
        tmp_path / "out",
        scheduler=client,
        backend=BACKEND,
        progress=False,
        on_image=kill_once,
    )
    assert killed[0][0] == victim and killed[0][1] >= 1  # it had images to segment
    assert report.ok and len(report.images) == n
    written = sorted(p.name for p in (tmp_path / "out").iterdir())  # no temporary file left
    assert written == sorted(
        [f"cells{i:02d}_labels.png" for i in range(n)] + [MEASUREMENTS, SUMMARY]
    )
    summary = rows(tmp_path / "out" / SUMMARY)
    assert sorted(r["image"] for r in summary) == sorted(str(p) for p in folder.iterdir())
    measured = rows(tmp_path / "out" / MEASUREMENTS)
    counts = {r["image"]: 0 for r in summary}
    for row in measured:
        counts[row["image"]] += 1
    assert counts == {r["image"]: int(r["nuclei"]) for r in summary}  # each image once
    for row in summary:  # each image's labels are 1..N once
        labels = read_image(tmp_path / "out" / row["labels"])
        assert int(labels.max()) == int(row["nuclei"])
    # The nanny replaced the killed process; every worker process loaded the model at most once.
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()
    loads = client.run(lambda: __import__("nucleuseg.distributed").distributed._LOADS)
    assert set(loads.values()) <= {0, 1}


def test_predict_command_with_scheduler(tmp_path, tiny_model, client, capsys):
    from nucleuseg import cli

    folder = images(tmp_path / "images", 3)
    out = tmp_path / "out"
    argv = ["predict", str(tiny_model), str(folder), "--out", str(out), "--no-progress"]
    argv += ["--backend", BACKEND]
    status = cli.main([*argv, "--scheduler", client.scheduler.address])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert f"segmenting on the cluster at {client.scheduler.address}" in printed
    assert sorted(p.name for p in out.glob("*_labels.png")) == [
        f"cells{i:02d}_labels.png" for i in range(3)
    ]
    assert len(rows(out / SUMMARY)) == 3


def test_predict_command_with_local_workers(tmp_path, tiny_model, capsys):
    from nucleuseg import cli

    folder = images(tmp_path / "images", 2)
    out = tmp_path / "out"
    argv = ["predict", str(tiny_model), str(folder), "--out", str(out), "--no-progress"]
    status = cli.main([*argv, "--backend", BACKEND, "--workers", "1", "--overlay"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "segmenting on 1 workers" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "cells00_labels.png", "cells00_overlay.png", "cells01_labels.png", "cells01_overlay.png",
        MEASUREMENTS, SUMMARY,
    ]  # fmt: skip


def test_options_checked_before_any_cluster(tmp_path, tiny_model, capsys):
    from nucleuseg import cli
    from nucleuseg.distributed import segment_files_distributed

    with pytest.raises(InputError, match="workers must be a positive integer"):
        segment_files_distributed(tiny_model, tmp_path, tmp_path / "out", workers=0)
    with pytest.raises(InputError, match="not with scheduler="):
        segment_files_distributed(
            tiny_model, tmp_path, tmp_path / "out", scheduler="tcp://nowhere:8786", workers=2
        )
    with pytest.raises(InputError, match="scheduler must be"):
        segment_files_distributed(tiny_model, tmp_path, tmp_path / "out", scheduler=3)
    argv = ["predict", str(tiny_model), str(tmp_path), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--workers", "2", "--scheduler", "tcp://nowhere:8786"]) == 2
    assert "not with --scheduler" in capsys.readouterr().err
    assert cli.main([*argv, "--blocks", "--workers"]) == 2
    assert "--blocks does not take --workers" in capsys.readouterr().err
    assert cli.main([*argv, "--workers", "-1"]) == 2
    assert "--workers must be a positive number" in capsys.readouterr().err


def test_each_process_loads_a_model_once_and_again_when_its_file_changes(tmp_path, tiny_model):
    import shutil

    from nucleuseg import checkpoint, distributed
    from nucleuseg.backends.base import init_weights
    from nucleuseg.distributed import _model_spec, _segmenter

    path = tmp_path / "model.safetensors"
    shutil.copy(tiny_model, path)
    loads = distributed._LOADS
    first = _segmenter(_model_spec(path, BACKEND, None, False))
    assert _segmenter(_model_spec(path, BACKEND, None, False)) is first
    assert _segmenter(_model_spec(path, BACKEND, None, True)).inference.tta  # TTA: another
    model = checkpoint.load_model(path)
    checkpoint.save_model(path, init_weights(model.preset.network, 1), model.preset, "torch")
    os.utime(path, ns=(0, 1))  # another modification time, however coarse the file system's
    second = _segmenter(_model_spec(path, BACKEND, None, False))
    assert second is not first
    assert distributed._LOADS == loads + 3


def test_missing_extra_names_it(tmp_path, tiny_model, monkeypatch):
    from nucleuseg.distributed import segment_files_distributed

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ExtraMissing, match=r"nucleuseg\[large\]"):
        segment_files_distributed(tiny_model, tmp_path, tmp_path / "out", workers=2)


def test_import_nucleuseg_imports_no_distributed():
    code = (
        "import sys, nucleuseg, nucleuseg.distributed, nucleuseg.cli; "
        "assert not {'distributed', 'dask'} & set(sys.modules), 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
