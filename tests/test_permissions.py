"""Files the library writes get the permissions an ordinary ``open`` gives under the umask.

Every writer goes through :mod:`nucleuseg._atomic`, whose temporary files start private
(``0600``); a model file came out ``0600`` under umask ``022`` because safetensors writes a file of
its own over the prepared one. Each kind of file is written here under umask ``022`` and ``077``
and its mode compared with what ``open`` gives a plain file beside it. The last test lists the
package's calls to the atomic writers, so a new kind of file cannot be added without a test here.
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import nucleuseg
from nucleuseg import _atomic, checkpoint, rle
from nucleuseg.backends.base import init_weights
from nucleuseg.config import get_preset
from nucleuseg.data.cache import SampleCache
from nucleuseg.data.images import write_image
from nucleuseg.history import EpochRecord, History

PACKAGE = Path(nucleuseg.__file__).parent


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    """Run the test under a umask, restoring the previous one after."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_ordinary_mode(path: Path, umask: int) -> None:
    """``path`` has the mode that a plain ``open(..., "w")`` gives a new file right now."""
    plain = path.parent / f"plain-{path.name}.txt"
    with open(plain, "w") as handle:
        handle.write("x")
    expected = _mode(plain)
    plain.unlink()
    assert expected == 0o666 & ~umask  # the reference itself is what the umask says
    assert _mode(path) == expected, (
        f"{path.name}: mode {_mode(path):04o}, an ordinary open gives {expected:04o} "
        f"under umask {umask:03o}"
    )
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


def _tiny_preset():
    preset = get_preset("default")
    return preset.replace(network=preset.network.replace(depth=2, base_filters=2))


class _FakeNetwork:
    """What write_training_state reads from a network, without a framework."""

    def __init__(self, preset):
        self.config = preset.network
        self._weights = init_weights(preset.network, 0)

    def get_weights(self):
        return self._weights

    def get_optimizer_state(self):
        return {"adam.step": np.array([3.0], np.float32)}


def test_model_file(tmp_path, umask):
    preset = _tiny_preset()
    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, init_weights(preset.network, 0), preset, "torch")
    assert_ordinary_mode(path, umask)
    assert checkpoint.load_model(path).preset == preset


def test_model_file_over_an_existing_one(tmp_path, umask):
    preset = _tiny_preset()
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    checkpoint.save_model(path, init_weights(preset.network, 0), preset, "torch")
    assert_ordinary_mode(path, umask)


def test_training_state_file(tmp_path, umask):
    preset = _tiny_preset()
    network = _FakeNetwork(preset)
    path = tmp_path / "state.safetensors"
    history = History([EpochRecord(1, 0.5, 0.25, 1e-3, 2.0)], best_epoch=1, best_score=0.25)
    checkpoint.write_training_state(path, network, preset, history, network.get_weights(), 7)
    assert_ordinary_mode(path, umask)
    assert checkpoint.read_training_state(path, preset.network).seed == 7


def test_segmenter_save(tmp_path, umask):
    pytest.importorskip("torch", reason="a Segmenter is built on the torch backend")
    from nucleuseg import Segmenter

    path = tmp_path / "nuclei.safetensors"
    Segmenter("torch", preset=_tiny_preset()).save(path)
    assert_ordinary_mode(path, umask)


def test_submission_and_solution_csv(tmp_path, umask):
    labels = {"a": np.array([[0, 1], [2, 2]], np.int32), "b": np.zeros((2, 2), np.int32)}
    rle.write_submission(labels, tmp_path / "submission.csv")
    rle.write_solution(labels, tmp_path / "solution.csv")
    assert_ordinary_mode(tmp_path / "submission.csv", umask)
    assert_ordinary_mode(tmp_path / "solution.csv", umask)


@pytest.mark.parametrize("name", ["labels.png", "labels.tif", "image.png"])
def test_images(tmp_path, umask, name):
    if name.startswith("labels"):
        image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    else:
        image = np.zeros((3, 4, 3), np.uint8)
    write_image(tmp_path / name, image)
    assert_ordinary_mode(tmp_path / name, umask)


def test_label_files_beyond_16_bits(tmp_path, umask):
    from nucleuseg.data.images import write_labels

    path = write_labels(tmp_path / "labels", np.arange(70_000).reshape(700, 100))
    assert path.suffix == ".tif"
    assert_ordinary_mode(path, umask)


def test_batch_outputs(tmp_path, umask):
    from nucleuseg.batch import segment_files

    class Threshold:
        def predict(self, image, diameter=None):
            return (image[..., 0] > 0).astype(np.int32)

    image = np.zeros((8, 8), np.uint8)
    image[2:5, 2:5] = 200
    write_image(tmp_path / "cells.png", image)
    report = segment_files(Threshold(), tmp_path, tmp_path / "out", overlay=True, progress=False)
    result = report.images[0]
    for path in (result.labels, result.overlay, report.measurements, report.summary):
        assert_ordinary_mode(path, umask)


def test_cache_entry(tmp_path, umask):
    cache = SampleCache(tmp_path / "cache")
    cache.put("k" * 40, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int32), "fluorescence")
    path = cache.path("k" * 40)
    assert_ordinary_mode(path, umask)
    assert cache.get("k" * 40) is not None


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_figures(tmp_path, umask, suffix):
    pytest.importorskip("matplotlib")
    from nucleuseg import viz

    fig = viz.plot_history(History([EpochRecord(1, 0.5, 0.3, 1e-3, 1.0)], best_epoch=1))
    path = viz.save_figure(fig, tmp_path / f"training{suffix}")
    assert_ordinary_mode(path, umask)


def test_atomic_writers_whatever_mode_the_writer_creates(tmp_path, umask):
    with _atomic.atomic_write(tmp_path / "text.txt", "w") as handle:
        handle.write("text")
    with _atomic.atomic_write(tmp_path / "bytes.bin", "wb") as handle:
        handle.write(b"bytes")

    def own_private_file(tmp):  # as safetensors does: a new file over the prepared one
        os.unlink(tmp)
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.write(fd, b"data")
        os.close(fd)

    def wide_open_file(tmp):
        Path(tmp).write_bytes(b"data")
        os.chmod(tmp, 0o777)

    _atomic.atomic_save(tmp_path / "own.bin", own_private_file)
    _atomic.atomic_save(tmp_path / "wide.bin", wide_open_file)
    for name in ("text.txt", "bytes.bin", "own.bin", "wide.bin"):
        assert_ordinary_mode(tmp_path / name, umask)


def test_reading_the_umask_leaves_it_unchanged(umask):
    assert _atomic._umask() == umask
    assert os.umask(umask) == umask


def test_search_results(tmp_path, umask):
    optuna = pytest.importorskip("optuna", reason='the search needs "nucleuseg[search]"')
    from nucleuseg.search import SearchResult, write_results

    preset = _tiny_preset()
    study = optuna.create_study(direction="maximize")
    for number, rate in enumerate((1e-3, 2e-3)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"training.learning_rate": rate},
                distributions={
                    "training.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2)
                },
                value=0.1 * (number + 1),
                user_attrs={"preset": preset.to_json(), "epoch_scores": [0.1], "seconds": 1.0},
            )
        )
    written = write_results(SearchResult.from_study(study), tmp_path)
    names = {"best.json", "trials.csv", "history.png", "importances.png"}
    assert {p.name for p in written} == names
    for path in written:
        assert_ordinary_mode(path, umask)


def test_block_wise_outputs_and_work_files(tmp_path, umask):
    for module in ("dask", "zarr"):
        pytest.importorskip(module, reason='block-wise prediction needs "nucleuseg[large]"')
    from nucleuseg.config import InferenceConfig
    from nucleuseg.large import segment_large

    preset = get_preset("default").replace(inference=InferenceConfig(postprocess="components"))
    image = np.zeros((64, 64), np.uint8)
    image[10:20, 30:40] = 200
    calls = []

    def stops_at_the_third_block(batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stop")
        return batch[..., :1]

    with pytest.raises(RuntimeError):
        segment_large(
            image,
            stops_at_the_third_block,
            preset,
            tmp_path,
            block=32,
            halo=8,
            scheduler="synchronous",
        )
    work = sorted((tmp_path / "blocks").glob("labels_*.npz"))
    assert len(work) == 2
    for path in work:
        assert_ordinary_mode(path, umask)
    result = segment_large(
        image, lambda b: b[..., :1], preset, tmp_path, block=32, halo=8, scheduler="synchronous"
    )
    assert result.nuclei == 1
    for path in (result.table, tmp_path / "progress.json"):
        assert_ordinary_mode(path, umask)


def test_shipped_model_files(tmp_path, umask):
    from nucleuseg import models

    preset = _tiny_preset()
    source = tmp_path / "source.safetensors"
    checkpoint.save_model(source, init_weights(preset.network, 0), preset, "torch")
    card = {k: v for k, v in models._example_card("tiny").items() if k != "sha256"}
    info = models.save_shipped(source, "tiny", card, directory=tmp_path)
    assert_ordinary_mode(tmp_path / "tiny.json", umask)
    assert_ordinary_mode(info.path, umask)


def test_onnx_export(tmp_path, umask):
    for module in ("onnx", "onnxruntime"):
        pytest.importorskip(module, reason='pip install "nucleuseg[onnx]"')
    from nucleuseg.export import export_onnx

    preset = _tiny_preset()
    source = tmp_path / "model.safetensors"
    checkpoint.save_model(source, init_weights(preset.network, 0), preset, "torch")
    assert_ordinary_mode(export_onnx(source, tmp_path / "model.onnx"), umask)


def test_bioimageio_export(tmp_path, umask):
    for module in ("bioimageio.spec", "onnx", "onnxruntime"):
        pytest.importorskip(module, reason='pip install "nucleuseg[bioimageio]"')
    from nucleuseg.bioimageio import export_bioimageio

    preset = _tiny_preset()
    source = tmp_path / "model.safetensors"
    checkpoint.save_model(source, init_weights(preset.network, 0), preset, "torch")
    package = export_bioimageio(source, tmp_path / "model.zip", torchscript=False, test_size=32)
    assert_ordinary_mode(package, umask)


# Each call of an atomic writer in the package, and the test above that covers it.
COVERED = {
    ("batch.py", "atomic_write"): "test_batch_outputs",
    ("checkpoint.py", "atomic_save"): "test_model_file, test_training_state_file",
    ("data/cache.py", "atomic_write"): "test_cache_entry",
    ("data/images.py", "atomic_write"): "test_images, test_label_files_beyond_16_bits",
    ("export.py", "atomic_write"): "test_onnx_export",
    ("bioimageio.py", "atomic_save"): "test_bioimageio_export",
    ("rle.py", "atomic_write"): "test_submission_and_solution_csv",
    ("search.py", "atomic_write"): "test_search_results",
    ("large.py", "atomic_save"): "test_block_wise_outputs_and_work_files",
    ("large.py", "atomic_write"): "test_block_wise_outputs_and_work_files",
    ("models/__init__.py", "atomic_write"): "test_shipped_model_files",
    ("viz.py", "atomic_save"): "test_figures",
}


def test_every_writer_of_the_package_is_covered_here():
    calls = set()
    for source in sorted(PACKAGE.rglob("*.py")):
        if source.name == "_atomic.py":
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("atomic_write", "atomic_save"):
                    calls.add((source.relative_to(PACKAGE).as_posix(), name))
    new = sorted(calls - set(COVERED))
    assert not new, f"files written by {new} have no permission test in {Path(__file__).name}"
    gone = sorted(set(COVERED) - calls)
    assert not gone, f"{gone} no longer call the atomic writers: update COVERED"
