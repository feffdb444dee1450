"""Image and mask files: every accepted mode, every refused one, damaged files, sizes; kinds."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucleuseg.data.images import image_shape, read_image, read_mask, write_image
from nucleuseg.data.kinds import image_kind
from nucleuseg.errors import DatasetError, ImageReadError, InputError

RNG = np.random.default_rng(0)


def save_pil(path, array, mode=None):
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


# --------------------------------------------------------------------------- read_image


def test_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    image = read_image(save_pil(tmp_path / "a.png", rgba))
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, rgba[..., :3])
    assert image.flags.c_contiguous


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_rgb_as_is(tmp_path, suffix):
    rgb = RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(save_pil(tmp_path / f"a{suffix}", rgb)), rgb)


def test_jpeg_is_read(tmp_path):
    rgb = np.full((16, 16, 3), 120, np.uint8)
    image = read_image(save_pil(tmp_path / "a.jpg", rgb))
    assert image.shape == (16, 16, 3) and abs(int(image[8, 8, 0]) - 120) <= 2


def test_gray_is_repeated(tmp_path):
    gray = RNG.integers(0, 256, (3, 5), dtype=np.uint8)
    image = read_image(save_pil(tmp_path / "g.png", gray))
    assert image.shape == (3, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], gray)


def test_16_bit_gray_stays_uint16(tmp_path):
    gray = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    image = read_image(save_pil(tmp_path / "g16.png", gray))
    assert image.dtype == np.uint16 and image.shape == (4, 6, 3)
    np.testing.assert_array_equal(image[..., 2], gray)


@pytest.mark.parametrize(
    ("mode", "message"),
    [("LA", "2-channel"), ("P", "palette"), ("1", "1-bit")],
)
def test_refused_modes(tmp_path, mode, message):
    path = save_pil(tmp_path / "x.png", RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8), mode)
    assert Image.open(path).mode == mode
    with pytest.raises(ImageReadError, match=rf"x\.png: {message}.*not supported"):
        read_image(path)


def test_cmyk_jpeg_refused(tmp_path):
    path = tmp_path / "c.jpg"
    Image.new("CMYK", (4, 4)).save(path)
    with pytest.raises(ImageReadError, match="mode CMYK are not supported"):
        read_image(path)


def test_tiff_float_refused(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.float32))
    with pytest.raises(ImageReadError, match=r"f\.tif: floating-point"):
        read_image(path)


def test_tiff_two_channels_refused(tmp_path):
    path = tmp_path / "two.tif"
    tifffile.imwrite(
        path, np.zeros((4, 4, 2), np.uint8), photometric="minisblack", planarconfig="contig"
    )
    with pytest.raises(ImageReadError, match="2-channel"):
        read_image(path)


def test_tiff_stack_refused(tmp_path):
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((4, 4), np.uint8))
        tif.write(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageReadError, match="2 pages"):
        read_image(path)


def test_tiff_16_bit_colour_and_gray(tmp_path):
    rgb = RNG.integers(0, 65536, (5, 3, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tiff", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "c.tiff"), rgb)
    gray = RNG.integers(0, 256, (5, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif")[..., 1], gray)
    rgba = RNG.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), rgba[..., :3])
    assert image_shape(tmp_path / "c.tiff") == (5, 3)


def test_truncated_png(tmp_path):
    path = save_pil(tmp_path / "t.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"t\.png: corrupt or truncated"):
        read_image(path)


def test_truncated_tiff(tmp_path):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, RNG.integers(0, 256, (64, 64), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"t\.tif"):
        read_image(path)


def test_zero_byte_missing_folder_and_garbage(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageReadError, match=r"junk\.png: not a PNG, TIFF, JPEG or BMP"):
        read_image(tmp_path / "junk.png")
    gif = tmp_path / "a.gif"
    Image.new("L", (2, 2)).save(gif)
    with pytest.raises(ImageReadError, match="not a PNG"):
        read_image(gif)


def test_max_pixels(tmp_path):
    path = save_pil(tmp_path / "m.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageReadError, match=r"10x10 = 100 pixels, more than max_pixels=99"):
        read_image(path, max_pixels=99)
    assert read_image(path, max_pixels=100).shape == (10, 10, 3)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_huge_header_refused_before_decoding_without_pillow_warnings(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))  # 1e10 pixels: Pillow would raise
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match="100000x100000 = 10000000000 pixels"):
            read_image(path)
        path.write_bytes(_png_header_only(10_000, 10_000))  # between Pillow's warn and error
        with pytest.raises(ImageReadError, match="more than max_pixels=64000000"):
            read_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit


# --------------------------------------------------------------------------- read_mask


def test_mask_values_and_modes(tmp_path):
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    for name, array, mode in [
        ("l.png", mask.astype(np.uint8) * 255, None),
        ("one.png", mask.astype(np.uint8), None),
        ("bits.png", mask.astype(np.uint8) * 255, "1"),
        ("w16.png", mask.astype(np.uint16) * 65535, None),
    ]:
        np.testing.assert_array_equal(read_mask(save_pil(tmp_path / name, array, mode)), mask)
    tifffile.imwrite(tmp_path / "m.tif", mask.astype(np.uint8) * 7)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif", shape=(5, 6)), mask)


def test_mask_errors(tmp_path):
    base = np.zeros((5, 6), np.uint8)
    base[1:3, 1:3] = 255
    two = base.copy()
    two[4, 5] = 128
    with pytest.raises(DatasetError, match=r"two\.png: mask is not binary.*128 to 255"):
        read_mask(save_pil(tmp_path / "two.png", two))
    with pytest.raises(DatasetError, match=r"zero\.png: empty mask"):
        read_mask(save_pil(tmp_path / "zero.png", np.zeros((5, 6), np.uint8)))
    with pytest.raises(DatasetError, match=r"full\.png: mask is foreground everywhere"):
        read_mask(save_pil(tmp_path / "full.png", np.full((5, 6), 255, np.uint8)))
    with pytest.raises(DatasetError, match=r"size\.png: size 5x6 differs from its image's 6x5"):
        read_mask(save_pil(tmp_path / "size.png", base), shape=(6, 5))
    rgb = np.repeat(base[..., None], 3, axis=2)
    with pytest.raises(ImageReadError, match=r"rgb\.png: a mask must be a single-channel image"):
        read_mask(save_pil(tmp_path / "rgb.png", rgb))
    with pytest.raises(ImageReadError, match="mode P"):
        read_mask(save_pil(tmp_path / "p.png", rgb, "P"))
    with pytest.raises(ImageReadError, match="no such file"):
        read_mask(tmp_path / "missing.png")


# --------------------------------------------------------------------------- write_image


def test_write_image_round_trips_and_is_atomic(tmp_path):
    labels = RNG.integers(0, 3000, (7, 9), dtype=np.uint16)
    write_image(tmp_path / "labels.png", labels)
    np.testing.assert_array_equal(read_image(tmp_path / "labels.png")[..., 0], labels)
    mask = RNG.random((7, 9)) > 0.5
    write_image(tmp_path / "mask.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png"), mask)
    rgb16 = RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16)
    write_image(tmp_path / "rgb16.tif", rgb16)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.tif"), rgb16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png", "mask.png", "rgb16.tif"]


def test_write_image_refuses(tmp_path):
    with pytest.raises(InputError, match=r"16-bit colour needs \.tif"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(InputError, match=r"float32"):
        write_image(tmp_path / "a.png", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match=r"not '\.jpg'"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="does not exist"):
        write_image(tmp_path / "no" / "a.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- image_kind


def _blobs(shape, background, nucleus):
    image = np.empty((*shape, len(background)), np.float64)
    image[:] = background
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx in [(10, 12), (30, 40), (45, 15), (20, 50)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = nucleus
    return image


def test_image_kind_on_the_three_kinds():
    noise = RNG.normal(0, 2, (64, 64, 1))
    fluo = np.clip(_blobs((64, 64), (12,), (180,)) + noise, 0, 255).astype(np.uint8)[..., 0]
    assert image_kind(fluo) == "fluorescence"
    assert image_kind(np.repeat(fluo[..., None], 3, axis=2)) == "fluorescence"
    assert image_kind(fluo.astype(np.uint16) * 16) == "fluorescence"  # 12-bit data in uint16
    dapi = _blobs((64, 64), (5, 5, 10), (20, 30, 230)).astype(np.uint8)  # blue on black
    assert image_kind(dapi) == "fluorescence"
    gray_bf = np.clip(_blobs((64, 64), (220,), (90,)) + noise, 0, 255).astype(np.uint8)[..., 0]
    assert image_kind(gray_bf) == "brightfield"
    stained_cells = np.clip(_blobs((64, 64), (225, 225, 230), (120, 60, 160)) + noise, 0, 255)
    assert image_kind(stained_cells.astype(np.uint8)) == "brightfield"
    tissue = np.clip(_blobs((64, 64), (180, 165, 205), (90, 50, 160)) + noise, 0, 255)
    assert image_kind(tissue.astype(np.uint8)) == "histology"
    he = np.clip(_blobs((64, 64), (230, 120, 170), (110, 60, 150)) + noise, 0, 255)
    assert image_kind(he.astype(np.uint16) * 200) == "histology"


def test_image_kind_edge_cases():
    assert image_kind(np.zeros((8, 8), np.uint8)) == "fluorescence"
    assert image_kind(np.full((8, 8, 3), 255, np.uint8)) == "brightfield"
    big = np.zeros((1000, 1000), np.uint8)  # sampled on a grid, still classified
    big[::50, ::50] = 255
    assert image_kind(big) == "fluorescence"
    for bad in (np.zeros((4, 4, 4)), np.zeros((0, 3)), np.zeros((4, 4), bool)):
        with pytest.raises(InputError):
            image_kind(bad)
    with pytest.raises(InputError, match="NaN"):
        image_kind(np.full((4, 4), np.nan))
