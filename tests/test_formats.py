"""Data formats: the registry, detection of the DSB and images + labels layouts, forcing one,
the images + labels reader and its errors, and --data / --format on the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import backend_or_skip
from nucleuseg import cli, config
from nucleuseg.data import formats, make_synthetic
from nucleuseg.data.base import Dataset, Sample
from nucleuseg.data.folders import label_files, load_folders
from nucleuseg.data.formats import (
    detect_formats,
    get_format,
    list_formats,
    load_dataset,
    register_format,
)
from nucleuseg.data.images import write_image
from nucleuseg.errors import DatasetError, ImageReadError, InputError

SHAPE = (12, 16)


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """The built-in formats only, in a copy: formats registered here (or by doctests) do not
    leak into other tests."""
    builtin = {k: v for k, v in formats._FORMATS.items() if k in ("dsb", "folders")}
    monkeypatch.setattr(formats, "_FORMATS", builtin)


def label_image(k: int) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint16)
    labels[1:5, 1:6] = 1
    labels[6:11, 8 : 10 + k] = 300 + k  # 16-bit ids, not sequential
    return labels


def make_folders(root: Path, ids=("a", "b", "c"), labels: str | None = "labels", ending=".png"):
    """``root/images/<id>.png`` (dark, bright nuclei) and ``root/<labels>/<id><ending>``."""
    (root / "images").mkdir(parents=True)
    if labels:
        (root / labels).mkdir()
    for k, image_id in enumerate(ids):
        lab = label_image(k)
        write_image(
            root / "images" / f"{image_id}.png", np.where(lab > 0, 200, 10).astype(np.uint8)
        )
        if labels:
            write_image(root / labels / f"{image_id}{ending}", lab)
    return root


def make_dsb(root: Path, ids=("a", "b")) -> Path:
    for k, image_id in enumerate(ids):
        (root / image_id / "images").mkdir(parents=True)
        (root / image_id / "masks").mkdir()
        lab = label_image(k)
        write_image(root / image_id / "images" / f"{image_id}.png", np.zeros((*SHAPE, 4), np.uint8))
        for n, value in enumerate(np.unique(lab)[1:]):
            write_image(root / image_id / "masks" / f"m{n}.png", lab == value)
    return root


# --------------------------------------------------------------------------- registry, detection


def test_the_built_in_formats():
    assert list_formats() == ["dsb", "folders"]
    assert "masks" in get_format("dsb").layout and "labels/" in get_format("folders").layout
    with pytest.raises(InputError, match=r"unknown data format 'zarr'; registered: \['dsb', 'fo"):
        get_format("zarr")
    with pytest.raises(InputError, match=r"unknown data format 'zarr'"):
        load_dataset(".", format="zarr")


def test_each_layout_is_detected_and_loaded_in_its_format(tmp_path):
    dsb = make_dsb(tmp_path / "stage1_train")
    folders = make_folders(tmp_path / "plate")
    assert detect_formats(dsb) == ["dsb"]
    assert detect_formats(folders) == ["folders"]
    from_dsb = load_dataset(dsb, cache=False, progress=False)
    from_folders = load_dataset(folders)
    assert type(from_dsb).__name__ == "DSBDataset" and from_dsb.ids == ["a", "b"]
    assert type(from_folders) is Dataset and from_folders.ids == ["a", "b", "c"]
    # The same nuclei, whichever way they are stored (DSB numbers them by mask file).
    for image_id in ("a", "b"):
        a, b = from_dsb[image_id].labels, from_folders[image_id].labels
        assert np.array_equal(a > 0, b > 0) and len(np.unique(a)) == len(np.unique(b)) == 3
    # The folder holding stage1_train is DSB's, which says what to pass.
    assert detect_formats(tmp_path) == ["dsb"]
    with pytest.raises(DatasetError, match=r"holds stage1_train: pass one of them"):
        load_dataset(tmp_path)


def test_a_format_can_be_forced(tmp_path):
    dsb = make_dsb(tmp_path / "dsb")
    folders = make_folders(tmp_path / "plate")
    with pytest.raises(DatasetError, match=r"dsb: no images/ folder"):
        load_dataset(dsb, format="folders")
    with pytest.raises(DatasetError, match=r"plate[/\\]images: no images/ folder"):
        load_dataset(folders, format="dsb", cache=False)
    assert load_dataset(folders, format="folders").ids == ["a", "b", "c"]


def test_nothing_or_several_formats_match(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: empty dataset"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("no images here")
    with pytest.raises(
        DatasetError,
        match=r"other: not a dataset in any registered format; tried dsb \(<id>/images/<id>\.png "
        r".*\); folders \(images/\*\.png .*\)\. Name one with format=",
    ):
        load_dataset(tmp_path / "other")
    with pytest.raises(DatasetError, match=r"nowhere: no such folder"):
        load_dataset(tmp_path / "nowhere")
    register_format("anything", lambda path: True, load_folders, "any folder")
    with pytest.raises(DatasetError, match=r"several data formats \(folders, anything\); name one"):
        load_dataset(make_folders(tmp_path / "plate"))
    assert load_dataset(tmp_path / "plate", format="anything").ids == ["a", "b", "c"]


def test_a_registered_format_is_detected_and_offered_on_the_command_line(tmp_path):
    def detect(path: Path) -> bool:
        return (path / "stack.txt").is_file()

    def load(path: Path, labels: bool | None = None) -> Dataset:
        count = int((path / "stack.txt").read_text())
        image = np.zeros((*SHAPE, 3), np.uint8)

        def sample(image_id: str) -> Sample:
            return Sample(image_id, image, None, "fluorescence")

        return Dataset([f"s{i}" for i in range(count)], sample, path.name)

    fmt = register_format("stack", detect, load, "stack.txt")
    assert fmt.name == "stack" and list_formats()[-1] == "stack"
    (tmp_path / "stack.txt").write_text("3")
    assert load_dataset(tmp_path).ids == ["s0", "s1", "s2"]
    args = cli._parser().parse_args(
        ["submit", "m", "--data", "d", "--out", "o", "--format", "stack"]
    )
    assert args.format == "stack"
    with pytest.raises(InputError, match=r"detect must be callable"):
        register_format("broken", None, load)
    with pytest.raises(InputError, match=r"name must be a non-empty string"):
        register_format("", detect, load)


def test_relative_names_are_looked_up_under_nucleuseg_dsb(tmp_path, monkeypatch):
    make_folders(tmp_path / "plate")
    monkeypatch.setenv("NUCLEUSEG_DSB", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    assert load_dataset("plate").ids == ["a", "b", "c"]
    assert detect_formats("plate") == ["folders"]


def test_the_labels_option_reaches_the_dsb_reader(tmp_path):
    root = make_dsb(tmp_path / "dsb")
    assert load_dataset(root, labels=False, cache=False)["a"].labels is None
    assert load_dataset(root, labels=True, cache=False)["a"].labels.max() == 2
    with pytest.raises(InputError, match=r"give labels or masks, not both"):
        load_dataset(root, labels=True, masks=True, cache=False)


# --------------------------------------------------------------------------- images + labels


def test_folders_read_images_and_labels_lazily(tmp_path):
    root = make_folders(tmp_path / "plate", ids=("b", "a", "c10", "c2"))
    ds = load_folders(root)
    assert ds.ids == ["a", "b", "c10", "c2"] and ds.name == "plate"
    sample = ds["b"]
    assert sample.image.shape == (*SHAPE, 3) and sample.image.dtype == np.uint8
    assert sample.labels.dtype == np.int32
    assert np.array_equal(sample.labels, label_image(0))
    assert sample.kind == "fluorescence"
    train, val = ds.split(0.25, seed=0)
    assert sorted(train.ids + val.ids) == ds.ids and len(val) == 1


@pytest.mark.parametrize(
    "folder, ending",
    [("labels", ".tif"), ("masks", ".png"), ("labels", "_labels.png"), ("masks", "_masks.tiff")],
)
def test_label_folders_and_file_names(tmp_path, folder, ending):
    root = make_folders(tmp_path / "plate", labels=folder, ending=ending)
    ds = load_folders(root)
    assert [int(s.labels.max()) for s in ds] == [300, 301, 302]


def test_an_image_named_like_a_label_file_keeps_its_name(tmp_path):
    root = make_folders(tmp_path / "plate", ids=("x_labels", "y"))
    assert load_folders(root).ids == ["x_labels", "y"]
    assert load_folders(root)["x_labels"].labels.max() == 300


def test_images_without_labels_are_for_prediction(tmp_path):
    root = make_folders(tmp_path / "plate", labels=None)
    ds = load_dataset(root)
    assert [s.labels for s in ds] == [None, None, None]
    with pytest.raises(DatasetError, match=r"plate: no labels/ \(or masks/\) folder"):
        load_dataset(root, labels=True)
    # Other files beside the images are ignored.
    (root / "images" / "notes.txt").write_text("plate 1")
    (root / "images" / "sub").mkdir()
    assert load_folders(root).ids == ["a", "b", "c"]


def test_labels_false_leaves_even_a_broken_label_folder_alone(tmp_path):
    root = make_folders(tmp_path / "plate")
    write_image(root / "labels" / "stray.png", label_image(0))
    assert [s.labels for s in load_folders(root, labels=False)] == [None, None, None]


def test_a_label_image_without_an_image_is_an_error(tmp_path):
    root = make_folders(tmp_path / "plate")
    write_image(root / "labels" / "d.png", label_image(0))
    with pytest.raises(
        DatasetError,
        match=r"labels[/\\]d\.png: a label image without an image: "
        r"no d\.\* in .*plate[/\\]images",
    ):
        load_folders(root)


def test_images_lacking_labels_are_named(tmp_path):
    root = make_folders(tmp_path / "plate")
    (root / "labels" / "b.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"labels: 1 of 3 images have no label image \(b\); "
        r"pass labels=False",
    ):
        load_dataset(root)
    assert load_dataset(root, labels=False)["b"].labels is None


def test_a_label_image_of_another_size_is_refused_on_access(tmp_path):
    root = make_folders(tmp_path / "plate")
    write_image(root / "labels" / "b.png", np.zeros((5, 7), np.uint16))
    ds = load_folders(root)  # names are fine
    assert ds["a"].labels.max() == 300
    with pytest.raises(
        DatasetError, match=r"labels[/\\]b\.png: size 5x7 differs from its image's 12x16"
    ):
        ds["b"]


@pytest.mark.parametrize(
    "damage, error, message",
    [
        (lambda r: (r / "masks").mkdir(), DatasetError, r"both labels/ and masks/ folders"),
        (
            lambda r: write_image(r / "images" / "a.tif", np.zeros(SHAPE, np.uint8)),
            DatasetError,
            r"two images named 'a': a\.png and a\.tif",
        ),
        (
            lambda r: write_image(r / "labels" / "a_labels.png", label_image(0)),
            DatasetError,
            r"two label images for image 'a': a\.png and a_labels\.png",
        ),
        (
            lambda r: (r / "labels" / "a.jpg").write_bytes(b"\xff\xd8"),
            DatasetError,
            r"a\.jpg: a label image must be lossless \(\.png, \.tif, \.tiff\), not \.jpg",
        ),
        (
            lambda r: [p.unlink() for p in (r / "images").iterdir()],
            DatasetError,
            r"images: no image files",
        ),
    ],
    ids=["labels-and-masks", "two-images", "two-label-images", "jpeg-labels", "no-images"],
)
def test_layout_errors_name_the_problem(tmp_path, damage, error, message):
    root = make_folders(tmp_path / "plate")
    damage(root)
    with pytest.raises(error, match=message):
        load_folders(root)


def test_a_colour_label_image_is_refused(tmp_path):
    root = make_folders(tmp_path / "plate")
    write_image(root / "labels" / "a.png", np.zeros((*SHAPE, 3), np.uint8))
    with pytest.raises(ImageReadError, match=r"a\.png: a label image must be single-channel"):
        load_folders(root)["a"]


def test_bad_options_are_refused(tmp_path):
    root = make_folders(tmp_path / "plate")
    with pytest.raises(InputError, match=r"labels must be True, False or None, got 'yes'"):
        load_folders(root, labels="yes")
    with pytest.raises(InputError, match=r"max_pixels must be a positive integer"):
        load_folders(root, max_pixels=0)


def test_label_files_of_a_prediction_folder(tmp_path):
    for name in ("a_labels.png", "b.tif", "c_masks.tiff", "flows.npy", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    found = label_files(tmp_path)
    assert {k: p.name for k, p in found.items()} == {
        "a": "a_labels.png",
        "b": "b.tif",
        "c": "c_masks.tiff",
    }


# --------------------------------------------------------------------------- command line


@pytest.fixture
def tiny_cli_preset(monkeypatch, tiny_preset):
    """``--preset tiny``: the unit-test network, one short epoch."""
    preset = tiny_preset.replace(training=tiny_preset.training.replace(crop=16, steps_per_epoch=1))
    monkeypatch.setitem(config.PRESETS, "tiny", preset)
    return "tiny"


def synthetic_folders(root: Path, count: int = 6) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for sample in make_synthetic(count, size=32, seed=3, kinds=["fluorescence"]):
        write_image(root / "images" / f"{sample.image_id}.png", sample.image)
        write_image(root / "labels" / f"{sample.image_id}.tif", sample.labels.astype(np.uint16))
    return root


def test_train_evaluate_and_submit_on_an_images_and_labels_folder(
    tmp_path, monkeypatch, capsys, tiny_cli_preset
):
    backend = backend_or_skip("torch")
    monkeypatch.setenv("NUCLEUSEG_CACHE", str(tmp_path / "cache"))
    data = synthetic_folders(tmp_path / "plate")
    model = tmp_path / "m.safetensors"
    common = ["--data", str(data), "--val-fraction", "0.34"]
    assert (
        cli.main(
            [
                "train",
                "--backend",
                backend,
                *common,
                "--out",
                str(model),
                "--preset",
                tiny_cli_preset,
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "training on 4 images, validating on 2" in out and model.is_file()

    assert cli.main(["evaluate", str(model), *common, "--format", "folders"]) == 0
    out = capsys.readouterr().out
    assert "val part of" in out and "2 images" in out and "DSB score" in out

    csv_path = tmp_path / "sub.csv"
    assert cli.main(["submit", str(model), "--data", str(data), "--out", str(csv_path)]) == 0
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["ImageId"] for r in rows} == {f"synthetic-{i:04d}" for i in range(6)}
    assert not (tmp_path / "cache").exists()  # the folders format decodes without a cache


def test_the_command_line_names_the_layouts_it_tried(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("x")
    argv = ["evaluate", "m.safetensors", "--data", str(tmp_path / "other")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "not a dataset in any registered format; tried dsb (" in err
    assert "--format on the command line" in err
    # --format forces the format, so the DSB reader says what does not fit.
    assert cli.main([*argv, "--format", "dsb"]) == 2
    assert "empty dataset (no image folders)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--format", "zarr"])
    assert info.value.code == 2
    assert "invalid choice: 'zarr' (choose from dsb, folders)" in capsys.readouterr().err.replace(
        "'dsb', 'folders'", "dsb, folders"
    )
