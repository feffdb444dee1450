"""Your own images: channels of multi-channel files, label files of any count, and the predict
command / segment_files over folders of mixed formats."""

from __future__ import annotations

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
