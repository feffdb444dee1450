"""The napari plugin in a real viewer, headless (Qt's offscreen platform): the dock widget
segments a synthetic image into a labels layer with measurements, the reader and writer round
trip, the sample data, and the npe2 manifest.

The model is the shipped default (``nuclei``) where it ships, else a tiny U-Net trained here for a
few seconds on synthetic fluorescence images. The viewer tests skip, naming the extra, where napari
is missing (CI installs every extra).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from nucleuseg import Segmenter
from nucleuseg.data import read_labels, synthetic_sample, write_image
from nucleuseg.errors import InputError
from nucleuseg.metrics import dsb_score
from nucleuseg.models import DEFAULT_MODEL, list_models
from nucleuseg.napari import (
    channel_choices,
    get_reader,
    image_plane,
    read_dsb_folder,
    synthetic_nuclei,
    write_labels,
)

# Before Qt starts: Qt's offscreen platform, which draws napari's OpenGL canvas through GLX, so
# it needs an X display: a virtual one (Xvfb) where there is none.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _start_xvfb() -> None:
    """Start Xvfb on a free display for this test process, when there is no display."""
    if os.environ.get("DISPLAY") or shutil.which("Xvfb") is None:
        return
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=_end_with_parent,
    )
    number = server.stdout.readline().decode().strip()  # Xvfb writes it once it is ready
    if not number.isdigit():
        server.kill()
        return
    os.environ["DISPLAY"] = f":{number}"


def _end_with_parent() -> None:
    """In the Xvfb child: end when this test process has ended (after Qt let go of it)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


HAVE_NAPARI = all(importlib.util.find_spec(m) for m in ("napari", "magicgui", "pytestqt"))
#: Qt (PyQt5) and TensorFlow cannot share a process: importing TensorFlow after Qt crashes, and a
#: process that loaded both crashes as it exits. So the test run keeps Qt out (pyproject's
#: addopts disable the napari and pytest-qt plugins) and the tests that need a real viewer run
#: in a process of their own, started by test_the_viewer_tests_pass_in_their_own_process with
#: this variable set; only there are they defined.
VIEWER_PROCESS = os.environ.get("NUCLEUSEG_NAPARI_VIEWER") == "1"
if HAVE_NAPARI and VIEWER_PROCESS:
    _start_xvfb()
needs_napari = pytest.mark.skipif(
    not HAVE_NAPARI,
    reason='the napari plugin: napari is not installed (pip install "nucleuseg[napari]")',
)
needs_display = pytest.mark.skipif(
    HAVE_NAPARI and not (os.environ.get("DISPLAY") or shutil.which("Xvfb")),
    reason="napari's canvas needs an X display: install Xvfb (Debian: apt-get install xvfb)",
)
VIEWER_TESTS = (
    "test_the_widget_segments_a_sample_image_into_a_labels_layer",
    "test_the_widget_takes_a_channel_and_a_nucleus_diameter",
    "test_the_widget_says_what_is_wrong",
)
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "nucleuseg" / "napari" / "napari.yaml"
SHIPPED = DEFAULT_MODEL in {info.name for info in list_models()}
#: What the widget's result must score against the truth: the shipped model is a real one;
#: the stand-in is a tiny U-Net trained for seconds.
BAR = 0.5 if SHIPPED else 0.15


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[str, str]:
    """``(model, backend)``: the shipped default model, or a tiny model file trained here."""
    from conftest import TRAINING, installed_backends

    installed = installed_backends()
    if not installed:
        pytest.skip("no backend installed")
    if SHIPPED:
        return DEFAULT_MODEL, "torch" if "torch" in installed else installed[0]
    from nucleuseg.config import get_preset
    from nucleuseg.data import make_synthetic

    trains = [b for b in TRAINING if b in installed]
    if not trains:
        pytest.skip("no backend that trains is installed, and no shipped model")
    backend = "torch" if "torch" in trains else trains[0]
    preset = get_preset("default")
    preset = preset.replace(
        name="tiny",
        network=preset.network.replace(depth=3, base_filters=8),
        training=preset.training.replace(
            crop=64, batch_size=4, steps_per_epoch=10, schedule="constant"
        ),
    )
    seg = Segmenter(backend, preset=preset, seed=1)
    seg.fit(make_synthetic(16, size=96, seed=0, kinds=["fluorescence"]), epochs=8, progress=False)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    seg.save(path)
    return str(path), backend


def make_widget(viewer, model: tuple[str, str]):
    from nucleuseg.napari._widget import MODEL_FILE, SegmentNuclei

    widget = SegmentNuclei(viewer)
    viewer.window.add_dock_widget(widget, name="Segment nuclei")
    name, backend = model
    if SHIPPED:
        widget.model.value = name
    else:
        widget.model.value = MODEL_FILE
        widget.model_file.value = name
    widget.backend.value = backend
    return widget


def run_and_wait(qtbot, widget) -> None:
    worker = widget.run()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=60_000)


def reference(model: tuple[str, str]) -> Segmenter:
    from nucleuseg.models import resolve_model

    return Segmenter.load(resolve_model(model[0]), backend=model[1])


# -- the dock widget in a viewer -----------------------------------------------------------------


@needs_napari
@needs_display
def test_the_viewer_tests_pass_in_their_own_process():
    env = {**os.environ, "NUCLEUSEG_NAPARI_VIEWER": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra"]
    command += [__file__, "-k", " or ".join(VIEWER_TESTS)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    tail = (result.stdout + result.stderr)[-3000:]
    assert result.returncode == 0, tail
    assert f"{len(VIEWER_TESTS)} passed" in result.stdout, tail


if VIEWER_PROCESS:

    @needs_napari
    @needs_display
    def test_the_widget_segments_a_sample_image_into_a_labels_layer(
        make_napari_viewer, qtbot, model
    ):
        from napari.layers import Labels

        sample = synthetic_sample(101, size=160, kind="fluorescence")
        viewer = make_napari_viewer()
        viewer.add_image(sample.image, rgb=True, name="cells", scale=(0.5, 0.5))
        widget = make_widget(viewer, model)
        assert widget.image.value is viewer.layers["cells"]
        assert list(widget.channel.choices) == [None, 0, 1, 2]

        run_and_wait(qtbot, widget)

        layer = viewer.layers["cells nuclei"]
        assert isinstance(layer, Labels)
        expected = reference(model).predict(sample.image)
        np.testing.assert_array_equal(layer.data, expected)
        assert tuple(layer.scale) == (0.5, 0.5)
        score = dsb_score(sample.labels, np.asarray(layer.data))
        assert score > BAR, f"DSB score {score:.3f} against the truth"
        # one row of measurements per nucleus, matched to the labels by "index"
        ids = np.unique(expected)[1:]
        features = layer.features
        np.testing.assert_array_equal(features["index"], ids)
        np.testing.assert_array_equal(features["area"], np.bincount(expected.ravel())[ids])
        assert {"centroid_y", "mean_intensity", "eccentricity"} <= set(features.columns)
        assert widget.status.value.startswith(f"{len(ids)} nuclei in")

        # again, on the same layer: the labels layer is updated, not doubled
        viewer.layers["cells nuclei"].data = np.zeros_like(expected)
        run_and_wait(qtbot, widget)
        assert [lay.name for lay in viewer.layers] == ["cells", "cells nuclei"]
        np.testing.assert_array_equal(viewer.layers["cells nuclei"].data, expected)

    @needs_napari
    @needs_display
    def test_the_widget_takes_a_channel_and_a_nucleus_diameter(make_napari_viewer, qtbot, model):
        sample = synthetic_sample(7, size=96, kind="fluorescence")
        stack = np.stack([np.zeros_like(sample.image[..., 0]), sample.image[..., 0]])  # (C, H, W)
        viewer = make_napari_viewer()
        viewer.add_image(stack, name="stains")
        widget = make_widget(viewer, model)
        assert list(widget.channel.choices) == [0, 1]
        widget.channel.value = 1
        widget.diameter.value = 24.0

        run_and_wait(qtbot, widget)

        expected = reference(model).predict(stack[1], diameter=24.0)
        np.testing.assert_array_equal(viewer.layers["stains nuclei"].data, expected)

    @needs_napari
    @needs_display
    def test_the_widget_says_what_is_wrong(make_napari_viewer, qtbot, model, tmp_path):
        from nucleuseg.napari._widget import MODEL_FILE

        viewer = make_napari_viewer()
        widget = make_widget(viewer, model)
        assert widget.run() is None  # no image layer
        assert "no image layer" in widget.status.value

        viewer.add_image(synthetic_sample(1, size=48).image, rgb=True, name="cells")
        widget.model.value = MODEL_FILE
        widget.model_file.value = tmp_path / "missing.safetensors"
        assert widget.run() is None
        assert "choose a model file" in widget.status.value

        (tmp_path / "broken.safetensors").write_bytes(b"not a model")  # fails in the worker
        widget.model_file.value = tmp_path / "broken.safetensors"
        run_and_wait(qtbot, widget)
        assert (
            widget.status.value.startswith("failed: ")
            and "broken.safetensors" in widget.status.value
        )
        assert "cells nuclei" not in viewer.layers


@needs_napari
def test_the_manifest_validates_and_names_importable_commands():
    import npe2

    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "nucleuseg"
    manifest.validate_imports()  # every python_name imports
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Segment nuclei"]
    assert contributions.readers[0].accepts_directories
    assert "*_labels.png" in contributions.readers[0].filename_patterns  # not every file
    assert "*" not in contributions.readers[0].filename_patterns
    assert contributions.writers[0].layer_types == ["labels"]
    assert [s.key for s in contributions.sample_data] == ["synthetic_nuclei"]
    assert npe2.PluginManifest.from_file(MANIFEST).model_dump() == manifest.model_dump()


def test_pyproject_declares_the_plugin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry = project["project"]["entry-points"]["napari.manifest"]
    assert entry == {"nucleuseg": "nucleuseg.napari:napari.yaml"}
    assert "napari.yaml" in project["tool"]["setuptools"]["package-data"]["nucleuseg.napari"]
    extras = project["project"]["optional-dependencies"]
    assert any(dep.startswith("napari") for dep in extras["napari"])
    assert "napari" in extras["all"][0]


def test_import_nucleuseg_imports_neither_napari_nor_qt():
    qt = "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6'}"
    code = (
        "import sys, nucleuseg, nucleuseg.napari\n"
        f"leaked = ({qt} | {{'magicgui'}}) & set(sys.modules)\n"
        "assert not leaked, leaked\n"
        "import nucleuseg.napari._widget\n"  # the widget's module: magicgui, still no Qt
        f"leaked = {qt} & set(sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- reader, writer, sample data (no viewer needed) ----------------------------------------------


def dsb_folder(root: Path, sample) -> Path:
    folder = root / sample.image_id
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    write_image(folder / "images" / f"{sample.image_id}.png", sample.image)
    for k in range(1, int(sample.labels.max()) + 1):
        mask = (sample.labels == k).astype(np.uint8) * 255
        write_image(folder / "masks" / f"mask{k:04d}.png", mask)
    return folder


def test_the_reader_opens_a_dsb_image_folder(tmp_path):
    sample = synthetic_sample(3, size=64, kind="fluorescence", image_id="abc")
    folder = dsb_folder(tmp_path, sample)
    reader = get_reader(str(folder))
    assert reader is not None
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = reader(str(folder))
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image_meta == {"name": "abc", "rgb": True} and labels_meta == {"name": "abc masks"}
    np.testing.assert_array_equal(image, sample.image)
    np.testing.assert_array_equal(labels, sample.labels)
    # without masks: the image alone
    for path in (folder / "masks").iterdir():
        path.unlink()
    (folder / "masks").rmdir()
    assert [kind for _, _, kind in read_dsb_folder(folder)] == ["image"]


def test_the_writer_and_reader_round_trip_label_images(tmp_path):
    labels = synthetic_sample(4, size=64).labels
    written = write_labels(str(tmp_path / "cells_labels.png"), labels, {})
    assert written == [str(tmp_path / "cells_labels.png")]
    np.testing.assert_array_equal(read_labels(written[0]), labels)
    reader = get_reader(written[0])
    assert reader is not None
    [(data, meta, kind)] = reader(written[0])
    assert (meta, kind) == ({"name": "cells_labels"}, "labels")
    np.testing.assert_array_equal(data, labels)
    # many labels: a 32-bit TIFF
    many = np.arange(70_000, dtype=np.int32).reshape(280, 250)
    [tif] = write_labels(str(tmp_path / "many_labels.tif"), many, {})
    np.testing.assert_array_equal(get_reader(tif)(tif)[0][0], many)
    with pytest.raises(InputError):
        write_labels(str(tmp_path / "x_labels.png"), np.zeros((2, 3, 4), np.int32), {})


def test_the_reader_leaves_other_files_to_napari(tmp_path):
    image = tmp_path / "photo.png"
    write_image(image, synthetic_sample(0, size=32).image)
    assert get_reader(str(image)) is None
    assert get_reader(str(tmp_path)) is None  # a folder, but not a DSB image folder
    assert get_reader(str(tmp_path / "missing_labels.png")) is None


def test_sample_data_is_a_synthetic_image_with_its_truth():
    (image, image_meta, kind), (labels, _, labels_kind) = synthetic_nuclei(seed=2)
    sample = synthetic_sample(2, size=256, kind="fluorescence")
    np.testing.assert_array_equal(image, sample.image)
    np.testing.assert_array_equal(labels, sample.labels)
    assert (kind, labels_kind, image_meta) == (
        "image",
        "labels",
        {"name": "synthetic", "rgb": True},
    )


def test_image_planes_and_channels():
    rgb = np.arange(4 * 5 * 3).reshape(4, 5, 3)
    np.testing.assert_array_equal(image_plane(rgb, rgb=True, channel=2), rgb[..., 2])
    assert image_plane(rgb[..., 0], rgb=False, channel=None).shape == (4, 5)
    with pytest.raises(InputError, match="channel 3: the image layer has channels all, 0, 1, 2"):
        image_plane(rgb, rgb=True, channel=3)
    with pytest.raises(InputError, match="channel None"):
        image_plane(np.zeros((2, 4, 5)), rgb=False, channel=None)
    with pytest.raises(InputError, match=r"shape \(2, 3, 4, 5\)"):
        channel_choices((2, 3, 4, 5), rgb=False)
