"""Your own images: channels of multi-channel files, label files of any count, and the predict
command / segment_files over folders of mixed formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucleuseg.data.images import read_channels, read_image, read_labels, write_labels
from nucleuseg.errors import ImageReadError, InputError

RNG = np.random.default_rng(7)

# --------------------------------------------------------------------------- channels


def stains(channels: int = 5, shape=(12, 17)) -> np.ndarray:
    """A ``(C, H, W)`` 16-bit stack whose channels differ."""
    return RNG.integers(0, 65536, (channels, *shape), dtype=np.uint16)


@pytest.mark.parametrize(
    "layout",
    ["pages", "imagej", "ome", "planar", "interleaved"],
)
def test_multi_channel_tiff_layouts(tmp_path, layout):
    cyx = stains(5)
    path = tmp_path / ("cells.ome.tif" if layout == "ome" else "cells.tif")
    if layout == "pages":  # what tifffile.imwrite writes for a (C, H, W) array
        tifffile.imwrite(path, cyx, photometric="minisblack")
    elif layout == "imagej":
        tifffile.imwrite(path, cyx, imagej=True, metadata={"axes": "CYX"})
    elif layout == "ome":
        tifffile.imwrite(path, cyx, metadata={"axes": "CYX"})
    elif layout == "planar":
        tifffile.imwrite(path, cyx, photometric="minisblack", planarconfig="separate")
    else:
        tifffile.imwrite(
            path, np.moveaxis(cyx, 0, 2), photometric="minisblack", planarconfig="contig"
        )
    np.testing.assert_array_equal(read_channels(path), np.moveaxis(cyx, 0, 2))
    for channel in (0, 4):
        image = read_image(path, channel=channel)
        assert image.shape == (12, 17, 3) and image.dtype == np.uint16
        for c in range(3):
            np.testing.assert_array_equal(image[..., c], cyx[channel])


def test_channel_of_gray_rgb_and_rgba_files(tmp_path):
    gray = RNG.integers(0, 65536, (6, 7), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png", channel=0)[..., 2], gray)
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "c.png", channel=2)[..., 0], rgb[..., 2])
    assert read_channels(tmp_path / "c.png").shape == (6, 7, 3)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    assert read_image(tmp_path / "c.jpg", channel=1).shape == (6, 7, 3)


@pytest.mark.parametrize(
    ("channel", "error", "message"),
    [
        (5, InputError, r"cells\.tif: no channel 5: the image has 5 channels \(0 to 4\)"),
        (-1, InputError, r"no channel -1"),
        ("1", InputError, r"cells\.tif: channel must be an integer, got '1'"),
        (True, InputError, r"channel must be an integer"),
    ],
)
def test_bad_channel(tmp_path, channel, error, message):
    tifffile.imwrite(tmp_path / "cells.tif", stains(5), photometric="minisblack")
    with pytest.raises(error, match=message):
        read_image(tmp_path / "cells.tif", channel=channel)


def test_gray_has_one_channel(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(InputError, match=r"g\.png: no channel 1: the image has 1 channel$"):
        read_image(tmp_path / "g.png", channel=1)


def test_without_a_channel_multi_channel_files_say_how_to_pick_one(tmp_path):
    tifffile.imwrite(tmp_path / "pages.tif", stains(3), photometric="minisblack")
    with pytest.raises(ImageReadError, match=r"pages\.tif: TIFF holds 3 pages .*--channel N"):
        read_image(tmp_path / "pages.tif")
    five = np.moveaxis(stains(5), 0, 2)
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match=r"five\.tif: images with 5 channels .*channel=N"):
        read_image(tmp_path / "five.tif")


def test_stacks_are_not_channels(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", stains(3), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(ImageReadError, match=r"z\.tif: TIFF is a stack along depth \(Z\)"):
        read_image(tmp_path / "z.tif", channel=0)
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(np.zeros((4, 4), np.uint8))
        tif.write(np.zeros((5, 5), np.uint8))
    with pytest.raises(ImageReadError, match=r"two\.tif: TIFF holds 2 pages in 2 series"):
        read_image(tmp_path / "two.tif", channel=0)
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((2, 4, 4), np.float32), photometric="minisblack")
    with pytest.raises(ImageReadError, match=r"f\.tif: floating-point images"):
        read_image(tmp_path / "f.tif", channel=0)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageReadError, match=r"bad\.tif: TIFF file holds no image"):
        read_image(tmp_path / "bad.tif", channel=0)


def test_channel_reading_checks_the_size_before_decoding(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", stains(2, (40, 40)), photometric="minisblack")
    with pytest.raises(ImageReadError, match=r"1600 pixels, more than max_pixels=100"):
        read_image(tmp_path / "c.tif", max_pixels=100, channel=0)


# --------------------------------------------------------------------------- label files


def test_write_labels_16_bit_png_while_labels_fit(tmp_path):
    labels = RNG.integers(0, 65536, (9, 11)).astype(np.int32)
    labels[0, 0] = 65535
    path = write_labels(tmp_path / "a_labels", labels)
    assert path == tmp_path / "a_labels.png"
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode.startswith("I;16")
    np.testing.assert_array_equal(read_labels(path), labels)


def test_write_labels_32_bit_tiff_beyond_65535_labels(tmp_path):
    labels = np.arange(300 * 300, dtype=np.int32).reshape(300, 300)  # 89,999 nuclei
    path = write_labels(tmp_path / "many_labels", labels)
    assert path == tmp_path / "many_labels.tif"
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].dtype == np.uint32
    np.testing.assert_array_equal(read_labels(path), labels)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_write_labels_with_an_ending(tmp_path):
    few = np.array([[0, 1], [2, 3]])
    assert write_labels(tmp_path / "x.tif", few).suffix == ".tif"
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:
        assert tif.pages[0].dtype == np.uint16
    many = np.full((2, 2), 70_000)
    assert read_labels(write_labels(tmp_path / "y.tiff", many)).max() == 70_000
    with pytest.raises(InputError, match=r"z\.png: labels up to 70000 do not fit a 16-bit PNG"):
        write_labels(tmp_path / "z.png", many)
    with pytest.raises(InputError, match=r"z\.jpg: label images are written as \.png or \.tif"):
        write_labels(tmp_path / "z.jpg", few)
    with pytest.raises(InputError, match=r"folder .*nowhere does not exist"):
        write_labels(tmp_path / "nowhere" / "z", many)
    with pytest.raises(InputError, match=r"labels has negative labels"):
        write_labels(tmp_path / "neg", np.full((2, 2), -1))


# --------------------------------------------------------------------------- the batch


class Threshold:
    """A stand-in segmenter: connected bright regions of the first channel, recording what it
    was given."""

    def __init__(self, level: float = 100):
        self.level = level
        self.calls: list[tuple[tuple[int, ...], float | None]] = []

    def predict(self, image, diameter=None):
        from skimage.measure import label

        self.calls.append((image.shape, diameter))
        return label(image[..., 0] > self.level).astype(np.int32)


def blobs(shape=(48, 64), value=200, dtype=np.uint8) -> np.ndarray:
    """A gray image with three bright squares (nuclei) of known areas 36, 64 and 100."""
    image = np.zeros(shape, dtype)
    image[4:10, 4:10] = value
    image[20:28, 30:38] = value
    image[34:44, 10:20] = value
    return image


def read_csv(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_segment_files_tables_and_channel(tmp_path):
    from nucleuseg.batch import SUMMARY_COLUMNS, segment_files
    from nucleuseg.measurements import COLUMNS

    cyx = np.zeros((3, 48, 64), np.uint16)
    cyx[0] = 5000  # a bright first channel everywhere: one big region if it were used
    cyx[1] = blobs(value=3000, dtype=np.uint16)  # the nuclear stain
    tifffile.imwrite(tmp_path / "cells.tif", cyx, photometric="minisblack")
    seen = []
    report = segment_files(
        Threshold(), tmp_path / "*.tif", tmp_path / "out", channel=1, progress=False,
        on_image=seen.append,
    )  # fmt: skip
    assert report.ok and [r.nuclei for r in report.images] == [3] and seen == list(report.images)
    result = report.images[0]
    assert result.mean_area == pytest.approx((36 + 64 + 100) / 3)
    expected_diameter = 2 * np.sqrt(64 / np.pi)
    assert result.median_equivalent_diameter == pytest.approx(expected_diameter)
    rows = read_csv(report.measurements)
    assert list(rows[0]) == ["image", *COLUMNS]
    assert [float(r["area"]) for r in rows] == [36.0, 64.0, 100.0]
    assert {float(r["mean_intensity"]) for r in rows} == {3000.0}  # measured on channel 1
    assert float(rows[2]["integrated_intensity"]) == 3000.0 * 100
    assert {r["image"] for r in rows} == {str(tmp_path / "cells.tif")}
    summary = read_csv(report.summary)
    assert list(summary[0]) == list(SUMMARY_COLUMNS)
    assert summary[0]["labels"] == "cells_labels.png" and summary[0]["nuclei"] == "3"
    labels = read_labels(tmp_path / "out" / "cells_labels.png")
    assert labels.shape == (48, 64) and labels.max() == 3


def test_a_bad_file_fails_alone(tmp_path):
    from nucleuseg.batch import segment_files

    Image.fromarray(blobs()).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    tifffile.imwrite(tmp_path / "two.tif", stains(2), photometric="minisblack")
    report = segment_files(
        Threshold(), [tmp_path, tmp_path / "missing.png"], tmp_path / "out", channel=0,
        progress=False,
    )  # fmt: skip
    assert not report.ok
    errors = {r.path.name: r.error for r in report.failures}
    assert set(errors) == {"missing.png", "corrupt.png"}
    assert errors["missing.png"] == "no such file or folder"
    assert "corrupt" in errors["corrupt.png"] and "corrupt.png" not in errors["corrupt.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "good_labels.png", "measurements.csv", "summary.csv", "two_labels.png",
    ]  # fmt: skip
    summary = {Path(r["image"]).name: r for r in read_csv(report.summary)}
    assert summary["corrupt.png"]["error"] and summary["corrupt.png"]["labels"] == ""
    assert summary["good.png"]["error"] == "" and summary["good.png"]["nuclei"] == "3"
    wrong = segment_files(Threshold(), tmp_path / "two.tif", tmp_path / "o2", channel=2)
    assert wrong.failures[0].error == "no channel 2: the image has 2 channels (0 to 1)"


def test_stem_clashes_get_a_number_and_the_output_folder_is_not_an_input(tmp_path):
    from nucleuseg.batch import find_images, segment_files

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(blobs()).save(tmp_path / folder / "cells.png")
    Image.fromarray(blobs()).save(tmp_path / "a" / "cells.jpg")
    out = tmp_path / "a" / "out"
    report = segment_files(Threshold(), [tmp_path / "a", tmp_path / "b"], out, progress=False)
    names = [(r.path.relative_to(tmp_path).as_posix(), r.labels.name) for r in report.images]
    assert names == [
        ("a/cells.jpg", "cells_labels.png"),
        ("a/cells.png", "cells_2_labels.png"),
        ("b/cells.png", "cells_3_labels.png"),
    ]
    # A rerun does not segment its own outputs, nor a file named twice.
    Image.fromarray(blobs()).save(out / "extra.png")
    files, missing = find_images([tmp_path / "a", tmp_path / "a" / "*.png", out / "extra.png"], out)
    assert [f.name for f in files] == ["cells.jpg", "cells.png", "extra.png"] and not missing
    _, missing = find_images([tmp_path / "b" / "*.tif", tmp_path / "empty"])
    assert [m.error for m in missing] == ["pattern matches no image file", "no such file or folder"]


def test_segment_files_refuses_bad_arguments_before_reading(tmp_path):
    from nucleuseg.batch import segment_files

    (tmp_path / "file").write_text("x")
    for kwargs, message in [
        ({"channel": -1}, r"channel must be a non-negative integer, got -1"),
        ({"diameter": 0}, r"diameter must be a positive number of pixels, got 0"),
        ({"diameter": float("nan")}, r"diameter must be a positive number"),
    ]:
        with pytest.raises(InputError, match=message):
            segment_files(Threshold(), tmp_path, tmp_path / "out", **kwargs)
    with pytest.raises(InputError, match=r"out .*file: exists and is not a folder"):
        segment_files(Threshold(), tmp_path, tmp_path / "file")
    with pytest.raises(InputError, match=r"sources is empty"):
        segment_files(Threshold(), [], tmp_path / "out")


# --------------------------------------------------------------------------- diameter


def test_diameter_rescales_the_network_input_and_returns_the_image_shape():
    from nucleuseg.config import InferenceConfig, get_preset
    from nucleuseg.inference import diameter_factor, predict_labels

    preset = get_preset("default").replace(
        inference=InferenceConfig(postprocess="components", target_radius=8.0, min_size=0)
    )  # native diameter 16
    shapes = []

    def net(batch):
        shapes.append(batch.shape[1:3])
        return batch[..., :1]

    image = np.zeros((100, 120), np.uint8)
    image[10:42, 10:42] = 200  # a 32-pixel nucleus
    image[60:92, 70:102] = 200
    labels = predict_labels(net, image, preset, diameter=32)
    assert shapes == [(64, 64)]  # 50 x 60 after halving, padded to the network's multiple
    assert labels.shape == (100, 120) and labels.max() == 2
    assert labels[26, 26] == 1 and labels[76, 86] == 2 and labels[50, 50] == 0
    shapes.clear()
    predict_labels(net, image, preset, diameter=8)  # small nuclei: doubled
    assert shapes == [(208, 240)]  # 200 x 240, padded
    assert diameter_factor(16, preset.inference) == 1.0
    for bad, message in [(0, "positive"), (-3, "positive"), ("20", "a number"), (1000, "too far")]:
        with pytest.raises(InputError, match=message):
            predict_labels(net, image, preset, diameter=bad)


def test_diameter_keeps_labels_consecutive_when_a_nucleus_is_lost():
    from nucleuseg.config import InferenceConfig, get_preset
    from nucleuseg.inference import predict_labels

    preset = get_preset("default").replace(
        inference=InferenceConfig(postprocess="components", target_radius=8.0, min_size=0)
    )
    image = np.zeros((64, 64), np.uint8)
    image[5:25, 5:25] = 200
    image[40:60, 40:60] = 200
    # Shrunk by 8, scaled back: the labels are 1..N whatever the nearest resize keeps.
    labels = predict_labels(lambda b: b[..., :1], image, preset, diameter=128)
    assert labels.shape == (64, 64)
    assert sorted(np.unique(labels)) == list(range(int(labels.max()) + 1))


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A model file of an untrained tiny U-Net on the first installed backend."""
    from conftest import installed_backends
    from nucleuseg import checkpoint
    from nucleuseg.backends.base import init_weights
    from nucleuseg.config import get_preset

    backends = installed_backends()
    if not backends:
        pytest.skip("no backend installed")
    preset = get_preset("default")
    preset = preset.replace(network=preset.network.replace(depth=2, base_filters=2))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    checkpoint.save_model(path, init_weights(preset.network, 0), preset, backends[0])
    return path


def mixed_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """PNG 8-bit gray and colour, PNG 16-bit gray, JPEG, TIFF 16-bit with 4 channels (as pages)
    and 16-bit RGB TIFF, of different sizes; name -> (H, W)."""
    from nucleuseg.data import synthetic_sample

    folder.mkdir()
    image = synthetic_sample(seed=1, size=(56, 72)).image  # uint8 (H, W, 3)
    gray = image[..., 0]
    Image.fromarray(gray).save(folder / "gray8.png")
    Image.fromarray(image[:40]).save(folder / "colour8.png")
    Image.fromarray(gray.astype(np.uint16) * 250).save(folder / "gray16.png")
    Image.fromarray(image[:, :50]).save(folder / "photo.jpg", quality=95)
    stack = np.stack([gray.astype(np.uint16) * 100 + 7 * c for c in range(4)])
    tifffile.imwrite(folder / "stains.tif", stack, photometric="minisblack")
    tifffile.imwrite(folder / "rgb16.tiff", image.astype(np.uint16) * 257, photometric="rgb")
    return {
        "gray8": (56, 72), "colour8": (40, 72), "gray16": (56, 72), "photo": (56, 50),
        "stains": (56, 72), "rgb16": (56, 72),
    }  # fmt: skip


def test_predict_command_on_a_folder_of_mixed_formats(tmp_path, tiny_model, capsys):
    from nucleuseg import cli

    shapes = mixed_folder(tmp_path / "images")
    (tmp_path / "images" / "broken.tif").write_bytes(b"II*\x00" + b"\xff" * 40)
    out = tmp_path / "out"
    argv = ["predict", str(tiny_model), str(tmp_path / "images"), "--out", str(out)]
    status = cli.main([*argv, "--channel", "0", "--overlay", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1, captured.err
    assert "broken.tif: error: " in captured.err and "1 failed:" in captured.err
    assert "Traceback" not in captured.err
    assert "model's native nucleus diameter: 20 pixels" in captured.out
    for stem, shape in shapes.items():
        labels = read_labels(out / f"{stem}_labels.png")
        assert labels.shape == shape, stem
        with Image.open(out / f"{stem}_overlay.png") as overlay:
            assert overlay.mode == "RGB" and overlay.size == shape[::-1]
        assert f"{stem}." in captured.out
    summary = read_csv(out / "summary.csv")
    assert len(summary) == 7
    assert [Path(r["image"]).name for r in summary if r["error"]] == ["broken.tif"]
    rows = read_csv(out / "measurements.csv")
    counts = {Path(r["image"]).stem: 0 for r in summary}
    for row in rows:
        counts[Path(row["image"]).stem] += 1
    assert counts == {Path(r["image"]).stem: int(r["nuclei"]) for r in summary}

    # Without --channel the 4-channel TIFF fails with how to choose one; the rest succeed.
    status = cli.main([*argv[:-1], str(tmp_path / "again"), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1
    assert "stains.tif: error: TIFF holds 4 pages" in captured.err and "--channel N" in captured.err
    assert (tmp_path / "again" / "rgb16_labels.png").exists()


def test_predict_command_all_good_diameter_and_glob(tmp_path, tiny_model, capsys):
    from nucleuseg import cli

    mixed_folder(tmp_path / "images")
    out = tmp_path / "out"
    pattern = str(tmp_path / "images" / "*.png")
    status = cli.main(["predict", str(tiny_model), pattern, "--out", str(out), "--diameter", "30"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "--diameter 30: images resized by 0.667" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        "colour8_labels.png", "gray16_labels.png", "gray8_labels.png", "measurements.csv",
        "summary.csv",
    ]  # fmt: skip
    assert read_labels(out / "colour8_labels.png").shape == (40, 72)


def test_segmenter_predict_with_a_diameter(tiny_model):
    from nucleuseg import Segmenter

    seg = Segmenter.load(tiny_model)
    shapes = []
    network = seg.network.predict

    def recording(batch):
        shapes.append(batch.shape[1:3])
        return network(batch)

    seg.network.predict = recording
    image = blobs((60, 90))
    assert seg.predict(image, diameter=40).shape == (60, 90)  # native 20: halved
    assert seg.predict(image).shape == (60, 90)
    assert shapes == [(30, 46), (60, 90)]  # padded to the network's multiple, 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--channel", "-1"], "argument --channel: a channel number"),
        (["--diameter", "0"], "argument --diameter: a positive number of pixels, not '0'"),
        (["--diameter", "inf"], "argument --diameter: a positive number"),
    ],
)
def test_predict_command_usage_errors(tmp_path, options, message, capsys):
    from nucleuseg import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "m.safetensors", "x.png", "--out", str(tmp_path), *options])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_blocks_take_no_per_image_options(tmp_path, tiny_model, capsys):
    from nucleuseg import cli

    argv = ["predict", str(tiny_model), "x.tif", "--out", str(tmp_path), "--blocks"]
    assert cli.main([*argv, "--overlay", "--channel", "0"]) == 2
    assert "--blocks does not take --channel, --overlay" in capsys.readouterr().err
