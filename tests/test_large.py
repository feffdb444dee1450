"""Block-wise prediction of big images: stitching, resuming, reading, the table, the layering."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucleuseg import large, metrics
from nucleuseg.config import InferenceConfig, get_preset
from nucleuseg.data import synthetic_sample
from nucleuseg.errors import ImageReadError, InputError
from nucleuseg.inference import predict_labels
from nucleuseg.large import DEFAULT_BLOCK, image_stats, segment_large

REASON = 'block-wise prediction needs dask and zarr: pip install "nucleuseg[large]"'
zarr = pytest.importorskip("zarr", reason=REASON)
pytest.importorskip("dask", reason=REASON)

COMPONENTS = get_preset("default").replace(
    inference=InferenceConfig(postprocess="components", min_size=4)
)


def pointwise(batch):
    """A stand-in network: the normalised first channel is the foreground probability."""
    return batch[..., :1]


def smooth(batch):
    """A stand-in network with context: a blurred foreground (needs the halo to agree)."""
    return ndi.gaussian_filter(batch[..., :1], sigma=(0, 1.5, 1.5, 0), mode="reflect")


def read(result):
    return zarr.open_array(result.labels, mode="r")[:]


def table(result):
    with open(result.table, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("predict", [pointwise, smooth], ids=["pointwise", "smooth"])
def test_blocks_agree_with_the_whole_image(predict, tmp_path):
    sample = synthetic_sample(5, size=256, kind="fluorescence")
    whole = predict_labels(predict, sample.image, COMPONENTS, stats=image_stats(sample.image))
    result = segment_large(
        sample.image, predict, COMPONENTS, tmp_path, block=64, halo=32, scheduler="synchronous"
    )
    labels = read(result)
    assert result.blocks == 16 and result.predicted == 16
    assert labels.dtype == np.uint32 and labels.shape == (256, 256)
    # many nuclei cross the block borders, so the test means something
    borders = np.zeros((256, 256), bool)
    borders[64::64] = borders[:, 64::64] = True
    crossing = np.unique(whole[borders & (whole > 0)])
    assert len(crossing) >= 10
    assert metrics.dsb_score(whole, labels.astype(np.int32)) >= 0.98
    # labels are 1..N, one per nucleus, numbered without gaps
    assert result.nuclei == int(labels.max()) == len(np.unique(labels)) - 1
    assert abs(result.nuclei - int(whole.max())) <= 2


def test_nuclei_on_borders_and_corners_are_found_whole_once(tmp_path):
    image = np.zeros((192, 192), np.uint8)
    truth = np.zeros((192, 192), np.int32)
    yy, xx = np.mgrid[:192, :192]
    centres = [
        (64, 64),
        (64, 128),
        (128, 64),
        (128, 128),
        (64, 96),
        (96, 64),
        (128, 100),
        (100, 128),
        (63, 30),
        (30, 64),
        (0, 64),
        (64, 0),
        (191, 128),
        (160, 191),
    ]
    for k, (cy, cx) in enumerate(centres, start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 7**2
        image[disc] = 200
        truth[disc] = k
    result = segment_large(
        image, pointwise, COMPONENTS, tmp_path, block=64, halo=24, scheduler="synchronous"
    )
    labels = read(result).astype(np.int32)
    assert result.nuclei == len(centres)
    for k in range(1, len(centres) + 1):
        found = np.unique(labels[truth == k])
        assert len(found) == 1 and found[0] > 0, (centres[k - 1], found)
        assert np.array_equal(labels == found[0], truth == k), centres[k - 1]
    rows = table(result)
    assert len(rows) == len(centres)
    by_label = {int(r["label"]): r for r in rows}
    for k in range(1, len(centres) + 1):
        row = by_label[int(np.unique(labels[truth == k])[0])]
        assert int(row["area"]) == int((truth == k).sum())
        assert abs(float(row["centroid_y"]) - np.mean(yy[truth == k])) < 1e-3
        assert abs(float(row["centroid_x"]) - np.mean(xx[truth == k])) < 1e-3
        ys, xs = np.nonzero(truth == k)
        bbox = [int(row[c]) for c in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")]
        assert bbox == [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
        assert float(row["mean_intensity"]) == pytest.approx(200.0)


class Stop(Exception):
    pass


def failing_after(k):
    calls = []

    def predict(batch):
        calls.append(1)
        if len(calls) > k:
            raise Stop
        return smooth(batch)

    return predict, calls


def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(tmp_path):
    sample = synthetic_sample(5, size=(200, 230), kind="fluorescence")
    kwargs = dict(block=64, halo=24, scheduler="synchronous")
    reference = segment_large(sample.image, smooth, COMPONENTS, tmp_path / "ref", **kwargs)
    broken, _ = failing_after(5)
    with pytest.raises(Stop):
        segment_large(sample.image, broken, COMPONENTS, tmp_path / "run", **kwargs)
    done = sorted(p.name for p in (tmp_path / "run" / large.WORK).glob("labels_*.npz"))
    assert len(done) == 5
    counting, calls = failing_after(10**6)
    result = segment_large(sample.image, counting, COMPONENTS, tmp_path / "run", **kwargs)
    assert result.predicted == len(calls) == result.blocks - 5 == 16 - 5
    assert np.array_equal(read(result), read(reference))
    assert (tmp_path / "run" / large.TABLE).read_text() == (
        tmp_path / "ref" / large.TABLE
    ).read_text()
    assert not (tmp_path / "run" / large.WORK).exists()
    # a finished run is not done again; work files a stop at the very end left are cleared
    (tmp_path / "run" / large.WORK).mkdir()
    again = segment_large(sample.image, failing_after(0)[0], COMPONENTS, tmp_path / "run", **kwargs)
    assert again.predicted == 0 and again.nuclei == reference.nuclei
    assert not (tmp_path / "run" / large.WORK).exists()


def test_a_half_written_block_is_not_taken_as_done(tmp_path, monkeypatch):
    sample = synthetic_sample(6, size=192, kind="fluorescence")
    kwargs = dict(block=64, halo=24, scheduler="synchronous")
    reference = read(segment_large(sample.image, smooth, COMPONENTS, tmp_path / "ref", **kwargs))
    real_save, saved = large._save, []

    def crash_on_fourth_chunk(path, **arrays):
        if path.name.startswith("nuclei_"):
            saved.append(path)
            if len(saved) == 4:  # its chunk is written, its record is not
                raise Stop
        real_save(path, **arrays)

    monkeypatch.setattr(large, "_save", crash_on_fourth_chunk)
    with pytest.raises(Stop):
        segment_large(sample.image, smooth, COMPONENTS, tmp_path / "run", **kwargs)
    monkeypatch.undo()
    work = tmp_path / "run" / large.WORK
    crashed = int(saved[-1].stem.split("_")[1])
    assert not saved[-1].exists()
    row, col = divmod(crashed, 3)
    core = np.s_[row * 64 : row * 64 + 64, col * 64 : col * 64 + 64]
    partial = zarr.open_array(tmp_path / "run" / large.LABELS, mode="r+")
    assert np.array_equal(partial[core], reference[core])  # written, yet not marked done
    # what a kill in the middle of writing leaves: a scrambled chunk, a stray temporary file
    partial[core] = 7
    (work / f".nuclei_{crashed}.tmp.npz").write_bytes(b"half")
    result = segment_large(sample.image, smooth, COMPONENTS, tmp_path / "run", **kwargs)
    assert result.predicted == 0  # every block was predicted before the crash
    assert np.array_equal(read(result), reference)


def test_many_nuclei_need_more_than_sixteen_bits(tmp_path):
    image = np.zeros((780, 780), np.uint8)
    image[1::3, 1::3] = 255  # one-pixel nuclei, 260 x 260 of them
    preset = get_preset("default").replace(
        inference=InferenceConfig(postprocess="components", min_size=0)
    )
    result = segment_large(
        image, pointwise, preset, tmp_path, block=256, halo=16, scheduler="threads", workers=2
    )
    labels = read(result)
    assert result.nuclei == 260 * 260 > 65_535
    assert labels.dtype == np.uint32 and int(labels.max()) == 260 * 260
    assert len(np.unique(labels[1::3, 1::3])) == 260 * 260
    assert len(table(result)) == 260 * 260


def test_sources_tiff_zarr_ome_zarr_and_channels(tmp_path):
    import tifffile

    sample = synthetic_sample(2, size=(150, 170), kind="fluorescence")
    kwargs = dict(block=64, halo=24, scheduler="synchronous")
    expected = read(segment_large(sample.image, smooth, COMPONENTS, tmp_path / "np", **kwargs))
    tifffile.imwrite(tmp_path / "big.tif", sample.image, tile=(32, 32))
    planes = np.moveaxis(sample.image, -1, 0)
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    array = zarr.create_array(
        store=str(tmp_path / "image.zarr"),
        shape=sample.image.shape,
        chunks=(50, 50, 3),
        dtype="uint8",
    )
    array[:] = sample.image
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w")
    level = group.create_array("0", shape=(1, 3, 150, 170), chunks=(1, 3, 64, 64), dtype="uint8")
    level[0] = np.moveaxis(sample.image, -1, 0)
    group.attrs["ome"] = {"multiscales": [{"datasets": [{"path": "0"}]}]}
    for name in ("big.tif", "planar.tif", "image.zarr", "ome.zarr"):
        result = segment_large(
            tmp_path / name, smooth, COMPONENTS, tmp_path / f"out_{name}", **kwargs
        )
        assert np.array_equal(read(result), expected), name
        assert "mean_intensity_2" in table(result)[0]


def test_bad_arguments_are_named(tmp_path):
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(InputError, match="block"):
        segment_large(image, pointwise, COMPONENTS, tmp_path / "a", block=8)
    with pytest.raises(InputError, match="halo"):
        segment_large(image, pointwise, COMPONENTS, tmp_path / "a", halo=-1)
    with pytest.raises(InputError, match="iou"):
        segment_large(image, pointwise, COMPONENTS, tmp_path / "a", iou=1.0)
    with pytest.raises(InputError, match="resizes"):
        segment_large(image, pointwise, get_preset("seed"), tmp_path / "a")
    with pytest.raises(ImageReadError, match="no such"):
        segment_large(tmp_path / "missing.tif", pointwise, COMPONENTS, tmp_path / "a")
    with pytest.raises(InputError, match="shape"):
        segment_large(np.zeros((4, 5, 6, 7)), pointwise, COMPONENTS, tmp_path / "a")
    # an unfinished run with other settings is not mixed with this one
    out = tmp_path / "b"
    with pytest.raises(Stop):
        segment_large(
            image, failing_after(0)[0], COMPONENTS, out, block=32, scheduler="synchronous"
        )
    assert json.loads((out / large.PROGRESS).read_text())["settings"]["block"] == 32
    with pytest.raises(InputError, match="other settings"):
        segment_large(image, pointwise, COMPONENTS, out, block=16, scheduler="synchronous")


def test_an_empty_image_gives_no_nuclei(tmp_path):
    result = segment_large(
        np.zeros((100, 70), np.uint8),
        pointwise,
        COMPONENTS,
        tmp_path,
        block=32,
        halo=8,
        scheduler="synchronous",
    )
    assert result.nuclei == 0 and not read(result).any()
    assert table(result) == []


def test_import_nucleuseg_imports_neither_dask_nor_zarr():
    code = textwrap.dedent(
        """
        import sys, nucleuseg
        leaked = {"dask", "zarr"} & set(sys.modules)
        assert not leaked, leaked
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_segmenter_predicts_blocks_as_it_predicts_the_whole_image(tmp_path):
    from nucleuseg import Segmenter

    tiny = get_preset("default").network.replace(depth=3, base_filters=4)
    seg = Segmenter("torch", config=tiny, seed=1)  # untrained: noisy maps, many small objects
    sample = synthetic_sample(5, size=256, kind="fluorescence")
    whole = predict_labels(
        seg.network.predict, sample.image, seg.preset, stats=image_stats(sample.image)
    )
    result = seg.predict_blocks(sample.image, tmp_path, block=64, halo=48, scheduler="synchronous")
    assert int(whole.max()) > 100
    assert metrics.dsb_score(whole, read(result).astype(np.int32)) >= 0.98


def test_a_missing_extra_is_named(tmp_path, monkeypatch):
    from nucleuseg.errors import ExtraMissing

    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ExtraMissing, match=r"nucleuseg\[large\]"):
        segment_large(np.zeros((32, 32)), pointwise, COMPONENTS, tmp_path, block=16)


def test_the_command_line_predicts_a_big_tiff_in_blocks(tmp_path, capsys):
    import tifffile

    from nucleuseg import Segmenter
    from nucleuseg.cli import main

    tiny = get_preset("default").network.replace(depth=3, base_filters=4)
    seg = Segmenter("torch", config=tiny, seed=1)
    seg.save(tmp_path / "model.safetensors")
    sample = synthetic_sample(5, size=(160, 200), kind="fluorescence")
    tifffile.imwrite(tmp_path / "big.tif", sample.image, tile=(32, 32), bigtiff=True)
    argv = ["predict", str(tmp_path / "model.safetensors"), str(tmp_path / "big.tif")]
    argv += ["--out", str(tmp_path / "out"), "--blocks", "--block-size", "64", "--halo", "48"]
    assert main(argv) == 0
    expected = seg.predict_blocks(sample.image, tmp_path / "api", block=64, halo=48)
    written = zarr.open_array(tmp_path / "out" / "big" / large.LABELS, mode="r")[:]
    assert np.array_equal(written, read(expected))
    assert f"{expected.nuclei} nuclei" in capsys.readouterr().out
    assert (tmp_path / "out" / "big" / large.TABLE).exists()


@pytest.mark.parametrize("chunks", [(70, 64), (600, 530), (1, 530)])
def test_statistics_read_in_bands_equal_those_of_the_image_in_memory(tmp_path, chunks):
    from nucleuseg.transforms import as_rgb, normalization_stats

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (600, 530), dtype=np.uint8)
    image[:300] //= 3
    array = zarr.create_array(
        store=str(tmp_path / "a.zarr"), shape=image.shape, chunks=chunks, dtype="uint8"
    )
    array[:] = image
    assert image_stats(array) == normalization_stats(as_rgb(image))
    assert image_stats(tmp_path / "a.zarr") == image_stats(image)


def test_by_default_a_window_fits_one_network_tile(tmp_path):
    image = np.zeros((1000, 40), np.uint8)
    tile = COMPONENTS.inference.tile
    calls = []

    def predict(batch):
        calls.append(batch.shape)
        return batch[..., :1]

    result = segment_large(image, predict, COMPONENTS, tmp_path, halo=64, scheduler="synchronous")
    assert result.blocks == 2  # blocks of DEFAULT_BLOCK = 512 rows
    assert zarr.open_array(result.labels).chunks == (DEFAULT_BLOCK, DEFAULT_BLOCK)
    assert len(calls) == 2 and all(shape[1] <= tile for shape in calls)
    small = COMPONENTS.replace(inference=COMPONENTS.inference.replace(tile=256, overlap=16))
    again = segment_large(
        image, predict, small, tmp_path / "small", halo=64, scheduler="synchronous"
    )
    assert zarr.open_array(again.labels).chunks == (128, 128)  # the tile less two halos
    assert all(shape[1] <= 256 for shape in calls[2:])


def test_blocks_do_not_auto_scale(tmp_path):
    image = np.zeros((300, 300), np.uint8)
    image[100:104, 100:104] = 255  # a tiny nucleus that auto-scale would zoom in on
    shapes = []

    def predict(batch):
        shapes.append(batch.shape[1:3])
        return batch[..., :1]

    scaled = COMPONENTS.replace(inference=COMPONENTS.inference.replace(auto_scale=True))
    result = segment_large(image, predict, scaled, tmp_path, block=128, scheduler="synchronous")
    assert result.nuclei == 1
    assert len(shapes) == result.blocks  # one network call per block: no second, zoomed pass
