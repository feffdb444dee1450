"""bioimage.io packages, checked by the bioimage.io tools themselves.

``bioimageio.spec`` validates each exported package (with its file checks, offline: every
network connection fails during these tests) and ``bioimageio.core`` runs the package's weights
(ONNX and TorchScript) on its test input, through the preprocessing the package describes, and
compares with the stored test output. The test output is nucleuseg's own network on nucleuseg's
own normalisation, so the two passing together means that the spec's preprocessing is
nucleuseg's.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from nucleuseg import Segmenter, checkpoint, cli
from nucleuseg.backends.base import init_weights
from nucleuseg.bioimageio import MODEL_FILE, export_bioimageio, load_bioimageio
from nucleuseg.config import get_preset
from nucleuseg.errors import CheckpointError, InputError
from nucleuseg.export import FORMATS, export_model
from nucleuseg.transforms import image_modality, normalization_stats, normalize

MISSING = [
    m
    for m in ("bioimageio.spec", "bioimageio.core", "onnx", "onnxruntime", "torch")
    if importlib.util.find_spec(m.split(".")[0]) is None
    or (m.startswith("bioimageio.") and importlib.util.find_spec(m) is None)
]
if MISSING:
    pytest.skip(
        f"bioimage.io packages: {', '.join(MISSING)} not installed "
        '(pip install "nucleuseg[bioimageio,torch]")',
        allow_module_level=True,
    )

from bioimageio.core import test_model as run_test_tensors  # noqa: E402
from bioimageio.spec import load_description  # noqa: E402


@pytest.fixture(scope="module")
def offline():
    """Every connection to another machine fails while the module's tests run."""
    real = socket.socket.connect

    def refuse(self, address):
        if self.family == socket.AF_UNIX:
            return real(self, address)
        raise OSError(f"network disabled in this test (connect to {address})")

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = real


@pytest.fixture(scope="module")
def bright(tmp_path_factory, offline):
    """A small three-channel model (random weights) exported with ONNX and TorchScript weights."""
    preset = get_preset("default")
    seg = Segmenter("onnx", preset=preset.replace(network=preset.network.replace(base_filters=4)))
    seg.set_weights(init_weights(seg.preset.network, 3))
    path = export_bioimageio(seg, tmp_path_factory.mktemp("bright") / "nuclei.zip", test_size=64)
    return seg, path


@pytest.fixture(scope="module")
def dark(tmp_path_factory, offline):
    """A one-channel model file exported from the command line for dark nuclei."""
    folder = tmp_path_factory.mktemp("dark")
    preset = get_preset("seed")
    preset = preset.replace(network=preset.network.replace(depth=3, base_filters=4))
    checkpoint.save_model(
        folder / "seed.safetensors", init_weights(preset.network, 5), preset, "torch"
    )
    out = folder / "dark.zip"
    argv = ["export", str(folder / "seed.safetensors"), "--format", "bioimageio"]
    assert cli.main([*argv, "--polarity", "dark", "--out", str(out)]) == 0
    return folder / "seed.safetensors", out


def _valid(path):
    descr = load_description(path, perform_io_checks=True)
    summary = descr.validation_summary
    errors = [d for d in summary.details for e in d.errors]
    assert summary.status == "valid-format" and not errors, summary.format()
    return descr


def _array(path, name):
    with zipfile.ZipFile(path) as archive:
        return np.load(io.BytesIO(archive.read(name)))


def test_the_spec_validates_the_package(bright):
    descr = _valid(bright[1])
    assert descr.format_version.startswith("0.5")
    assert descr.weights.onnx is not None and descr.weights.torchscript is not None
    (image,) = descr.inputs
    steps = [(p.id, p.kwargs) for p in image.preprocessing if p.id != "ensure_dtype"]
    assert [s[0] for s in steps] == ["scale_range", "clip"]
    scale = steps[0][1]
    assert (scale.min_percentile, scale.max_percentile) == (1.0, 99.8)
    assert [str(a) for a in scale.axes] == ["y", "x", "channel"]  # all channels, no batch
    assert (steps[1][1].min, steps[1][1].max) == (0.0, 1.0)
    assert [str(a.id) for a in image.axes] == ["batch", "y", "x", "channel"]
    (output,) = descr.outputs
    assert output.axes[-1].channel_names == ["foreground", "contour", "touching"]
    assert [str(a.source.path) for a in descr.attachments] == [MODEL_FILE]
    assert descr.covers and descr.documentation is not None
    with zipfile.ZipFile(bright[1]) as archive:
        readme = archive.read("README.md").decode()
    assert "watershed" in readme and "Validation" in readme and "foreground" in readme


def test_bioimageio_core_reproduces_the_test_output_from_both_weights(bright):
    summary = run_test_tensors(bright[1])
    assert summary.status == "passed", summary.format()
    tested = {d.loc[1] for d in summary.details if len(d.loc) > 1 and d.loc[0] == "weights"}
    assert tested == {"onnx", "torchscript"}


def test_the_test_output_is_the_network_on_nucleusegs_normalisation(bright):
    seg, path = bright
    image = _array(path, "test_input.npy")[0]
    assert image.shape == (64, 64, 3) and image_modality(image) == "fluorescence"
    expected = seg.network.predict(normalize(image, normalization_stats(image))[None])
    np.testing.assert_allclose(_array(path, "test_output.npy"), expected, atol=1e-5)


def test_the_package_loads_back_as_a_segmenter(bright):
    seg, path = bright
    loaded = load_bioimageio(path, backend="onnx")
    assert loaded.preset == seg.preset
    for name, value in seg.get_weights().items():
        np.testing.assert_array_equal(loaded.get_weights()[name], value)
    image = _array(path, "test_input.npy")[0]
    np.testing.assert_array_equal(loaded.predict(image), seg.predict(image))


def test_dark_nuclei_are_inverted_by_the_preprocessing(dark):
    source, path = dark
    descr = _valid(path)
    steps = [p for p in descr.inputs[0].preprocessing if p.id != "ensure_dtype"]
    assert [p.id for p in steps] == ["scale_range", "clip", "scale_linear"]
    assert (steps[2].kwargs.gain, steps[2].kwargs.offset) == (-1.0, 1.0)
    assert descr.outputs[0].axes[-1].channel_names == ["foreground"]
    image = _array(path, "test_input.npy")[0]
    assert image_modality(image) != "fluorescence"  # a test image of the polarity's kind
    summary = run_test_tensors(path, weight_format="onnx")  # both formats: the test above
    assert summary.status == "passed", summary.format()
    loaded = load_bioimageio(path, backend="onnx")
    expected = checkpoint.load_model(source).weights
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded.get_weights()[name], value)


def test_a_shipped_model_brings_its_card(tmp_path, monkeypatch, offline):
    from nucleuseg import models

    preset = get_preset("default")
    preset = preset.replace(network=preset.network.replace(depth=2, base_filters=2))
    checkpoint.save_model(
        tmp_path / "m.safetensors", init_weights(preset.network, 0), preset, "torch"
    )
    card = {k: v for k, v in models._example_card("tiny").items() if k != "sha256"}
    monkeypatch.setattr(models, "DIRECTORY", tmp_path)
    models.save_shipped(tmp_path / "m.safetensors", "tiny", card)
    path = export_bioimageio("tiny", tmp_path / "tiny.zip", torchscript=False, test_size=32)
    descr = _valid(path)
    assert descr.name == "nucleuseg tiny (bright nuclei)" and descr.weights.torchscript is None
    with zipfile.ZipFile(path) as archive:
        readme = archive.read("README.md").decode()
    assert readme.startswith(models.card_markdown("tiny").rstrip())
    assert "## This bioimage.io package" in readme and "exceeds 0.5" in readme
    loaded = load_bioimageio(path, backend="onnx")  # the shipped float16 weights, as float32
    expected = checkpoint.load_model(models.resolve_model("tiny")).weights
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded.get_weights()[name], value)


def test_export_errors_name_the_argument(tmp_path):
    assert FORMATS == ("onnx", "bioimageio")
    with pytest.raises(InputError, match="polarity"):
        export_model("model.safetensors", tmp_path / "a.zip", format="bioimageio", polarity="x")
    with pytest.raises(InputError, match="is a folder"):
        export_bioimageio("model.safetensors", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        export_bioimageio("model.safetensors", tmp_path / "no" / "a.zip")
    with pytest.raises(InputError, match="bioimageio format"):
        export_model("model.safetensors", tmp_path / "a.onnx", polarity="dark")
    with pytest.raises(CheckpointError, match="no such model file"):
        export_bioimageio(tmp_path / "missing.safetensors", tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()


def test_loading_a_package_nucleuseg_did_not_write_says_so(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
    with pytest.raises(CheckpointError, match=f"no {MODEL_FILE}"):
        load_bioimageio(other)
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(CheckpointError, match="not a zip"):
        load_bioimageio(tmp_path / "text.zip")


def test_import_nucleuseg_imports_no_bioimageio_package():
    code = (
        "import sys, nucleuseg, nucleuseg.bioimageio, nucleuseg.export, nucleuseg.cli; "
        "assert not [m for m in sys.modules if m.startswith(('bioimageio', 'xarray'))]"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
