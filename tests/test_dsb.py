"""DSB 2018 folders: layout checks, lazy loading, merged labels, the sample cache, labels CSVs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import nucleuseg.data.dsb as dsb
from nucleuseg.data.base import in_memory
from nucleuseg.data.cache import CACHE_VERSION, SampleCache
from nucleuseg.data.dsb import load_dsb, preload
from nucleuseg.data.images import write_image
from nucleuseg.errors import DatasetError, InputError, MaskOverlapError
from nucleuseg.rle import write_solution

SHAPE = (12, 16)
BOXES = {  # per image: one box (y0, y1, x0, x1) per nucleus, in mask-file order
    "img-a": [(1, 4, 1, 5), (6, 10, 8, 14)],
    "img-b": [(2, 6, 2, 6), (2, 6, 9, 12), (8, 11, 1, 4)],
    "img-c": [(3, 9, 4, 12)],
}


def expected_labels(image_id: str) -> np.ndarray:
    labels = np.zeros(SHAPE, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(BOXES[image_id]):
        labels[y0:y1, x0:x1] = k + 1
    return labels


def make_dsb(root: Path, masks: bool = True, ids=None) -> Path:
    """A tiny stage1_train-like folder: dark RGBA images with bright nuclei, 0/255 masks."""
    rng = np.random.default_rng(0)
    for image_id in ids or BOXES:
        labels = expected_labels(image_id)
        (root / image_id / "images").mkdir(parents=True)
        rgba = np.full((*SHAPE, 4), 255, np.uint8)
        rgba[..., :3] = rng.integers(0, 20, (*SHAPE, 1), dtype=np.uint8)
        rgba[labels > 0, :3] = 200
        write_image(root / image_id / "images" / f"{image_id}.png", rgba)
        if masks:
            (root / image_id / "masks").mkdir()
            for k in range(int(labels.max())):
                write_image(root / image_id / "masks" / f"m{k:02d}.png", labels == k + 1)
    return root


@pytest.fixture
def train(tmp_path) -> Path:
    return make_dsb(tmp_path / "stage1_train")


def load(root, **kwargs):
    kwargs.setdefault("cache", False)
    kwargs.setdefault("progress", False)
    return load_dsb(root, **kwargs)


# --------------------------------------------------------------------------- loading


def test_load_lookup_order_and_labels(train):
    ds = load(train)
    assert repr(ds) == "DSBDataset('stage1_train', 3 images)"
    assert len(ds) == 3 and ds.ids == ["img-a", "img-b", "img-c"] and ds.labelled
    assert [s.image_id for s in ds] == ds.ids
    assert "img-b" in ds and "zzz" not in ds
    sample = ds["img-b"]
    assert sample.image.shape == (*SHAPE, 3) and sample.image.dtype == np.uint8
    assert sample.labels.dtype == np.int32
    np.testing.assert_array_equal(sample.labels, expected_labels("img-b"))
    assert sample.kind == "fluorescence" and ds[2].image_id == "img-c"
    with pytest.raises(KeyError, match="zzz"):
        ds["zzz"]


def test_loading_is_lazy(train, monkeypatch):
    calls = []
    real = dsb.read_image
    monkeypatch.setattr(
        dsb, "read_image", lambda path, **kw: calls.append(path) or real(path, **kw)
    )
    ds = load(train)
    assert calls == []
    ds["img-c"]
    assert [p.name for p in calls] == ["img-c.png"]


def test_masks_option_and_images_only_folder(tmp_path, train):
    assert load(train, masks=False)[0].labels is None
    test = make_dsb(tmp_path / "stage1_test", masks=False)
    ds = load(test)
    assert not ds.labelled and ds["img-a"].labels is None
    assert ds.info("img-a") == {"kind": "fluorescence", "shape": SHAPE}
    with pytest.raises(DatasetError, match=r"3 image folders have no masks/ folder \(img-a"):
        load(test, masks=True)


def test_some_folders_without_masks(train):
    for image_id in ("img-a", "img-c"):
        for f in (train / image_id / "masks").iterdir():
            f.unlink()
        (train / image_id / "masks").rmdir()
    with pytest.raises(DatasetError, match=r"2 of 3 image folders have no masks/.*masks=False"):
        load(train)


def test_empty_masks_folder_gives_empty_labels(train):
    for f in (train / "img-c" / "masks").iterdir():
        f.unlink()
    assert load(train)["img-c"].labels.max() == 0


def test_name_resolved_under_env(train, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("NUCLEUSEG_DSB", str(train.parent))
    assert len(load("stage1_train")) == 3
    with pytest.raises(
        DatasetError, match=r"stage2: no such folder here nor under \$NUCLEUSEG_DSB"
    ):
        load("stage2")
    monkeypatch.delenv("NUCLEUSEG_DSB")
    with pytest.raises(DatasetError, match=r"no such folder \(set \$NUCLEUSEG_DSB"):
        load("stage1_train")


def test_split_and_preload(train):
    ds = load(train, workers=2)
    fit, val = ds.split(0.34, seed=0)
    assert sorted(fit.ids + val.ids) == ds.ids and len(val) == 1
    assert set(ds.kinds().values()) == {"fluorescence"}
    generic = in_memory([ds[0], ds[1]])
    assert preload(generic, workers=2, progress=False) is generic
    with pytest.raises(InputError, match="workers"):
        preload(ds, workers=0)


def test_preload_reports_the_failing_sample(train):
    write_image(train / "img-b" / "masks" / "m01.png", np.zeros(SHAPE, np.uint8))
    ds = load(train, workers=2)
    with pytest.raises(DatasetError, match=r"img-b/masks/m01\.png: empty mask"):
        ds.preload()


def test_options_are_checked(train):
    with pytest.raises(InputError, match="overlap must be one of"):
        load(train, overlap="any")
    with pytest.raises(InputError, match="masks must be"):
        load(train, masks="yes")
    with pytest.raises(InputError, match="workers"):
        load(train, workers=-1)
    with pytest.raises(InputError, match="cache must be"):
        load(train, cache=None)


# --------------------------------------------------------------------------- masks


def test_overlapping_masks(train):
    both = expected_labels("img-a") > 0
    mask = np.zeros(SHAPE, bool)
    mask[2:8, 3:10] = True  # overlaps both nuclei of img-a
    write_image(train / "img-a" / "masks" / "m02.png", mask)
    ds = load(train, overlap="error")
    with pytest.raises(
        MaskOverlapError, match=r"img-a/masks: mask m02\.png overlaps mask m00\.png"
    ):
        ds["img-a"]
    first = load(train, overlap="first")["img-a"].labels
    np.testing.assert_array_equal(first[both], expected_labels("img-a")[both])
    assert (first == 3).sum() == mask.sum() - (mask & both).sum()
    assert (load(train, overlap="last")["img-a"].labels[mask] == 3).all()


def test_mask_of_wrong_size(train):
    write_image(train / "img-c" / "masks" / "m00.png", np.eye(5, dtype=bool))
    with pytest.raises(DatasetError, match=r"m00\.png: size 5x5 differs from its image's 12x16"):
        load(train)["img-c"]


def test_stray_files_in_masks(train):
    (train / "img-a" / "masks" / ".DS_Store").write_bytes(b"junk")
    assert load(train)["img-a"].labels.max() == 2
    (train / "img-a" / "masks" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"masks/notes\.txt: stray file in masks/"):
        load(train)
    (train / "img-a" / "masks" / "notes.txt").unlink()
    (train / "img-a" / "masks" / "sub").mkdir()
    with pytest.raises(DatasetError, match=r"masks/sub: unexpected folder"):
        load(train)


# --------------------------------------------------------------------------- layout errors


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: no such folder"):
        load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match=r"file: not a folder"):
        load(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "labels.csv").write_text("x")
    with pytest.raises(DatasetError, match=r"empty: empty dataset"):
        load(tmp_path / "empty")


def test_parent_folder_gets_a_hint(train):
    with pytest.raises(DatasetError, match=r"holds stage1_train: pass one of them"):
        load(train.parent)


def test_image_folder_errors(train):
    (train / "img-x").mkdir()
    with pytest.raises(DatasetError, match=r"img-x: no images/ folder"):
        load(train)
    (train / "img-x" / "images").mkdir()
    with pytest.raises(DatasetError, match=r"img-x/images: no image file"):
        load(train)
    write_image(train / "img-x" / "images" / "other.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"'other\.png' differs from its folder's id 'img-x'"):
        load(train)
    write_image(train / "img-x" / "images" / "img-x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"img-x/images: 2 files, expected one image"):
        load(train)
    (train / "img-x" / "images" / "other.png").unlink()
    (train / "img-x" / "images" / "img-x.png").rename(train / "img-x" / "images" / "img-x.txt")
    with pytest.raises(DatasetError, match=r"img-x\.txt: not an image file"):
        load(train)


def test_symlinks(train):
    os.symlink(train / "img-a", train / "img-alias")
    with pytest.raises(DatasetError, match=r"duplicate image ids 'img-a' and 'img-alias'"):
        load(train)
    (train / "img-alias").unlink()
    os.symlink(train / "loop", train / "loop")
    with pytest.raises(DatasetError, match=r"loop: broken symbolic link or symlink loop"):
        load(train)
    (train / "loop").unlink()
    os.symlink(train / "img-a" / "masks", train / "img-a" / "masks" / "again")
    with pytest.raises(DatasetError, match=r"masks/again: unexpected folder"):
        load(train)
    (train / "img-a" / "masks" / "again").unlink()
    os.symlink(train / "gone.png", train / "img-a" / "masks" / "m09.png")
    with pytest.raises(DatasetError, match=r"m09\.png: broken symbolic link"):
        load(train)


# --------------------------------------------------------------------------- labels CSV


def test_labels_csv(tmp_path):
    test = make_dsb(tmp_path / "stage1_test", masks=False)
    csv = tmp_path / "solution.csv"
    write_solution({i: expected_labels(i) for i in BOXES}, csv)
    ds = load(test, labels_csv=csv)
    assert ds.labelled
    for image_id in BOXES:
        np.testing.assert_array_equal(ds[image_id].labels, expected_labels(image_id))
    with pytest.raises(InputError, match="not both"):
        load(test, labels_csv=csv, masks=True)
    with pytest.raises(InputError, match="with labels_csv, overlap"):
        load(test, labels_csv=csv, overlap="largest")


def test_labels_csv_ids_and_shapes(tmp_path):
    test = make_dsb(tmp_path / "stage1_test", masks=False)
    csv = tmp_path / "solution.csv"
    write_solution({"img-a": expected_labels("img-a"), "img-b": expected_labels("img-b")}, csv)
    with pytest.raises(
        DatasetError, match=r"solution\.csv: 1 image ids are missing from it: img-c"
    ):
        load(test, labels_csv=csv)
    labels = {i: expected_labels(i) for i in BOXES} | {"img-z": expected_labels("img-a")}
    write_solution(labels, csv)
    with pytest.raises(DatasetError, match=r"1 image ids are not in the dataset folder: img-z"):
        load(test, labels_csv=csv)
    labels = {i: expected_labels(i) for i in BOXES}
    labels["img-b"] = np.zeros((12, 17), np.int32)
    labels["img-b"][0, 0] = 1
    write_solution(labels, csv)
    with pytest.raises(DatasetError, match=r"img-b is 12x16 .* gives Height,Width 12,17"):
        load(test, labels_csv=csv)


# --------------------------------------------------------------------------- cache


def entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "samples").glob("*.npz"))


def test_second_load_reads_the_cache(train, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = load(train, cache=cache_dir, workers=2).preload()
    assert len(entries(cache_dir)) == 3
    reference = {s.image_id: s for s in first}

    def refuse(*args, **kwargs):
        raise AssertionError("decoded a file although the cache is warm")

    monkeypatch.setattr(dsb, "read_image", refuse)
    monkeypatch.setattr(dsb, "read_mask", refuse)
    monkeypatch.setattr(dsb, "image_shape", refuse)
    monkeypatch.setattr(SampleCache, "get", refuse)
    second = load(train, cache=cache_dir)
    # Kinds and shapes come from the cache entries' small members: no pixel is read to split.
    assert second.kinds() == {i: "fluorescence" for i in BOXES}
    second.split(0.34)
    monkeypatch.undo()
    monkeypatch.setattr(dsb, "read_image", refuse)
    monkeypatch.setattr(dsb, "read_mask", refuse)
    for sample in load(train, cache=cache_dir):
        np.testing.assert_array_equal(sample.image, reference[sample.image_id].image)
        np.testing.assert_array_equal(sample.labels, reference[sample.image_id].labels)


def test_cache_default_folder_from_env(train, tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLEUSEG_CACHE", str(tmp_path / "envcache"))
    load(train, cache=True)["img-a"]
    assert len(entries(tmp_path / "envcache")) == 1


def _corruptions(path: Path) -> list:
    original = path.read_bytes()

    def garbage():
        path.write_bytes(b"not a zip file")

    def truncated():
        path.write_bytes(original[: len(original) // 2])

    def flipped():
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def missing_key():
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "labels"}
        np.savez(path, **arrays)

    def wrong_checksum():  # a valid zip with every key; only the checksum can tell
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["labels"] = arrays["labels"] * 0
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    def wrong_shape():
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["image"] = arrays["image"][:, :, :2]
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    def old_version():
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays["version"] = np.array(CACHE_VERSION + 1)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    return [garbage, truncated, flipped, missing_key, wrong_checksum, wrong_shape, old_version]


def test_corrupt_entries_are_rebuilt(train, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    load(train, cache=cache_dir)["img-b"]
    (entry,) = entries(cache_dir)
    corruptions = _corruptions(entry)
    calls = []
    real = dsb.read_image
    monkeypatch.setattr(
        dsb, "read_image", lambda path, **kw: calls.append(path) or real(path, **kw)
    )
    for corrupt in corruptions:
        corrupt()
        ds = load(train, cache=cache_dir)
        sample = ds["img-b"]
        np.testing.assert_array_equal(sample.labels, expected_labels("img-b"))
        assert SampleCache(cache_dir).get(entry.stem) is not None, corrupt.__name__
    assert len(calls) == len(corruptions)


def test_changed_source_invalidates(train, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    load(train, cache=cache_dir).preload(progress=False)
    calls = []
    real = dsb.read_image
    monkeypatch.setattr(
        dsb, "read_image", lambda path, **kw: calls.append(path.name) or real(path, **kw)
    )
    mask = train / "img-a" / "masks" / "m00.png"
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ds = load(train, cache=cache_dir)
    assert "img-a" not in ds._info and "img-b" in ds._info
    [s.labels for s in ds]
    assert calls == ["img-a.png"]
    bigger = expected_labels("img-a") == 1
    bigger[0, :] = True
    write_image(mask, bigger)
    assert (load(train, cache=cache_dir)["img-a"].labels == 1).sum() == bigger.sum()
    load(train, cache=cache_dir, overlap="last")["img-a"]  # another option, another entry
    assert calls == ["img-a.png", "img-a.png", "img-a.png"]


def test_unwritable_cache_warns_once_and_still_loads(train, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    ds = load(train, cache=blocker)
    with pytest.warns(RuntimeWarning, match="cannot write the sample cache"):
        ds["img-a"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds["img-b"].labels.max() == 3
