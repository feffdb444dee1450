"""The bad-input corpus: every kind of unusable input a user can hand to nucleuseg, in one table.

Each case builds its bad input in ``tmp_path`` (or as an array), calls a public entry point the
way a user would, and names the :class:`~nucleuseg.errors.NucleusegError` subclass it must raise
and a regular expression its message must match: the file (or argument) and what is wrong. No
case may end in a raw numpy / Pillow / framework exception, a wrong result or a partial output.

The ``cli`` cases run ``nucleuseg.cli.main`` and expect exit status 2 with
``nucleuseg <command>: error: <message>`` on stderr and no traceback.

The corpus only grows: :data:`MINIMUM` records how many cases each category had when it was last
counted, and :func:`test_corpus_only_grows` fails if a category shrinks. Cases whose name ends in
``-regression`` were found by the fuzz tests (``tests/test_fuzz.py``) or the safety audit and
fixed in the library.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucleuseg import checkpoint, cli, metrics, postprocess, rle
from nucleuseg.backends.base import init_weights
from nucleuseg.config import InferenceConfig, get_preset
from nucleuseg.data import load_dsb, read_image, read_labels, read_mask
from nucleuseg.data.images import write_image
from nucleuseg.errors import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    CSVFormatError,
    DatasetError,
    ImageReadError,
    InputError,
    MaskOverlapError,
    NucleusegError,
    RLEError,
)
from nucleuseg.segmenter import Segmenter

HAS_TORCH = importlib.util.find_spec("torch") is not None

# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One bad input: ``run(tmp_path)`` must raise ``error`` with a message matching ``match``.

    For ``cli`` cases ``run`` returns the argument list of ``nucleuseg``, and ``error`` is the
    class the command fails with (its message is matched on stderr).
    """

    category: str
    name: str
    run: Callable[[Path], object]
    error: type[NucleusegError]
    match: str
    torch: bool = False

    @property
    def id(self) -> str:
        return f"{self.category}-{self.name}"


CASES: list[Case] = []


def case(category: str, name: str, error: type[NucleusegError], match: str, torch: bool = False):
    """Register the decorated function as a corpus case."""

    def register(run: Callable[[Path], object]) -> Callable[[Path], object]:
        CASES.append(Case(category, name, run, error, match, torch))
        return run

    return register


# --------------------------------------------------------------------------- builders


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", newline="")
    else:
        path.write_bytes(data)
    return path


def rgb(shape=(8, 8)) -> np.ndarray:
    return (np.arange(shape[0] * shape[1] * 3).reshape(*shape, 3) % 251).astype(np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def box_mask(shape=(8, 8), box=(2, 5, 2, 5)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def dsb_folder(root: Path, ids=("a", "b"), shape=(8, 8), masks: bool = True) -> Path:
    """A valid tiny stage1_train-like folder: one RGBA image and one or two masks per id."""
    for image_id in ids:
        (root / image_id / "images").mkdir(parents=True)
        write_image(root / image_id / "images" / f"{image_id}.png", np.zeros((*shape, 4), np.uint8))
        if masks:
            (root / image_id / "masks").mkdir()
            write_image(root / image_id / "masks" / "m1.png", box_mask(shape, (1, 3, 1, 3)))
            write_image(root / image_id / "masks" / "m2.png", box_mask(shape, (5, 7, 5, 7)))
    return root


def load(root: Path, **kwargs):
    kwargs.setdefault("cache", False)
    kwargs.setdefault("progress", False)
    return load_dsb(root, **kwargs)


def load_all(root: Path, **kwargs) -> None:
    """Open a DSB folder and touch every sample, as training does."""
    for sample in load(root, **kwargs):
        assert sample.image is not None


def csv_file(tmp: Path, text: str, name: str = "labels.csv") -> Path:
    return write(tmp / name, text)


@cache
def tiny_preset():
    preset = get_preset("default")
    return preset.replace(network=preset.network.replace(depth=2, base_filters=2))


def model_file(tmp: Path, name: str = "model.safetensors") -> Path:
    preset = tiny_preset()
    path = tmp / name
    checkpoint.save_model(path, init_weights(preset.network, 0), preset, "torch")
    return path


def raw_safetensors(path: Path, tensors: dict, metadata: dict) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)
    return path


def model_with(tmp: Path, weights=None, **metadata) -> Path:
    """A safetensors file with the tiny preset's weights and metadata, changed as asked."""
    preset = tiny_preset()
    tensors = init_weights(preset.network, 0) if weights is None else weights
    meta = {"nucleuseg.format": str(checkpoint.FORMAT_VERSION), "preset": preset.to_json()}
    meta.update(metadata)
    meta = {k: v for k, v in meta.items() if v is not None}
    return raw_safetensors(tmp / "bad.safetensors", tensors, meta)


def preset_with(section: str | None, key: str, value) -> str:
    data = json.loads(tiny_preset().to_json())
    (data if section is None else data[section])[key] = value
    return json.dumps(data)


@cache
def torch_segmenter() -> Segmenter:
    return Segmenter("torch", preset=tiny_preset())


class _Payload:
    """Unpickling this writes a file: proof of code execution."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


# --------------------------------------------------------------------------- image files


@case("image", "truncated-png", ImageReadError, r"cut\.png: corrupt or truncated")
def _(tmp):
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    read_image(write(tmp / "cut.png", data[: len(data) // 2]))


@case("image", "corrupt-png-header", ImageReadError, r"hdr\.png: .*(corrupt|not a PNG)")
def _(tmp):
    data = bytearray(png_bytes(rgb()))
    data[16:24] = b"\xff" * 8  # width and height in IHDR, CRC now wrong
    read_image(write(tmp / "hdr.png", bytes(data)))


@case("image", "corrupt-png-data", ImageReadError, r"flip\.png: corrupt or truncated")
def _(tmp):
    data = bytearray(png_bytes(np.random.default_rng(1).integers(0, 256, (32, 32), np.uint8)))
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 30] = bytes(20)
    read_image(write(tmp / "flip.png", bytes(data)))


@case("image", "truncated-tiff", ImageReadError, r"cut\.tif: ")
def _(tmp):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    read_image(write(tmp / "cut.tif", buffer.getvalue()[:200]))


@case(
    "image",
    "corrupt-tiff-header",
    ImageReadError,
    r"junk\.tif: (not a readable TIFF|TIFF file holds no image)",
)
def _(tmp):
    read_image(write(tmp / "junk.tif", b"II*\x00" + b"\xff" * 40))


@case("image", "zero-byte", ImageReadError, r"empty\.png: empty file \(0 bytes\)")
def _(tmp):
    read_image(write(tmp / "empty.png", b""))


@case("image", "missing-file", ImageReadError, r"absent\.png: no such file")
def _(tmp):
    read_image(tmp / "absent.png")


@case("image", "folder-not-file", ImageReadError, r"dir\.png: not a file")
def _(tmp):
    (tmp / "dir.png").mkdir()
    read_image(tmp / "dir.png")


@case("image", "text-named-png", ImageReadError, r"text\.png: not a PNG, TIFF, JPEG or BMP")
def _(tmp):
    read_image(write(tmp / "text.png", "this is not an image"))


@case("image", "gif", ImageReadError, r"anim\.gif: not a PNG, TIFF, JPEG or BMP")
def _(tmp):
    Image.new("L", (4, 4)).save(tmp / "anim.gif")
    read_image(tmp / "anim.gif")


@case("image", "palette-png", ImageReadError, r"pal\.png: palette images \(mode P\)")
def _(tmp):
    read_image(write(tmp / "pal.png", png_bytes(rgb(), "P")))


@case("image", "1-bit-png", ImageReadError, r"bits\.png: 1-bit images")
def _(tmp):
    read_image(write(tmp / "bits.png", png_bytes(rgb(), "1")))


@case("image", "2-channel-png", ImageReadError, r"la\.png: 2-channel images \(gray \+ alpha")
def _(tmp):
    read_image(write(tmp / "la.png", png_bytes(rgb(), "LA")))


@case("image", "2-channel-tiff", ImageReadError, r"two\.tif: 2-channel images")
def _(tmp):
    tifffile.imwrite(
        tmp / "two.tif", np.zeros((4, 4, 2), np.uint8), photometric="minisblack",
        planarconfig="contig",
    )  # fmt: skip
    read_image(tmp / "two.tif")


@case("image", "float-tiff", ImageReadError, r"f\.tif: floating-point images \(mode F\)")
def _(tmp):
    tifffile.imwrite(tmp / "f.tif", np.zeros((4, 4), np.float32))
    read_image(tmp / "f.tif")


@case("image", "int32-tiff", ImageReadError, r"i32\.tif: images with dtype int32")
def _(tmp):
    tifffile.imwrite(tmp / "i32.tif", np.zeros((4, 4), np.int32))
    read_image(tmp / "i32.tif")


@case("image", "signed-16-bit-tiff", ImageReadError, r"i16\.tif: images with dtype int16")
def _(tmp):
    tifffile.imwrite(tmp / "i16.tif", np.zeros((4, 4), np.int16))
    read_image(tmp / "i16.tif")


@case("image", "colour-tiff-as-label-image", ImageReadError, r"c\.tif: a label image")
def _(tmp):
    tifffile.imwrite(tmp / "c.tif", np.zeros((4, 4, 3), np.uint16), photometric="rgb")
    read_labels(tmp / "c.tif")


@case("image", "tiff-stack", ImageReadError, r"stack\.tif: TIFF holds 2 pages")
def _(tmp):
    with tifffile.TiffWriter(tmp / "stack.tif") as tif:
        tif.write(np.zeros((4, 4), np.uint8))
        tif.write(np.zeros((4, 4), np.uint8))
    read_image(tmp / "stack.tif")


@case(
    "image", "channel-out-of-range", InputError, r"st\.tif: no channel 3: .* 3 channels \(0 to 2\)"
)
def _(tmp):
    tifffile.imwrite(tmp / "st.tif", np.zeros((3, 4, 4), np.uint16), photometric="minisblack")
    read_image(tmp / "st.tif", channel=3)


@case("image", "z-stack-read-as-channels", ImageReadError, r"z\.tif: TIFF is a stack along depth")
def _(tmp):
    tifffile.imwrite(
        tmp / "z.tif", np.zeros((3, 4, 4), np.uint8), imagej=True, metadata={"axes": "ZYX"}
    )
    read_image(tmp / "z.tif", channel=0)


@case("image", "labels-beyond-16-bit-png", InputError, r"l\.png: labels up to 70000 do not fit")
def _(tmp):
    from nucleuseg.data import write_labels

    write_labels(tmp / "l.png", np.full((2, 2), 70_000))


def tiff_with_next_page(next_offset: int | None) -> bytes:
    """A one-page TIFF whose "next page" offset points at ``next_offset`` (its own page when
    ``None``)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((4, 4), np.uint8))
    data = bytearray(buffer.getvalue())
    (first,) = struct.unpack("<I", data[4:8])
    (entries,) = struct.unpack("<H", data[first : first + 2])
    struct.pack_into(
        "<I", data, first + 2 + 12 * entries, first if next_offset is None else next_offset
    )
    return bytes(data)


@case("image", "tiff-page-loop-regression", ImageReadError, r"loop\.tif: corrupt TIFF: .* loops")
def _(tmp):
    # Counting the pages of this file used to follow its page chain for ever.
    read_image(write(tmp / "loop.tif", tiff_with_next_page(None)))


@case("image", "tiff-page-loop-via-mask-regression", ImageReadError, r"m3\.tif: corrupt TIFF")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    write(root / "a" / "masks" / "m3.tif", tiff_with_next_page(None))
    load_all(root)


@case("image", "file-far-larger-than-its-pixels", ImageReadError, r"big\.png: \d+ bytes, more than")
def _(tmp):
    path = write(tmp / "big.png", png_bytes(np.zeros((2, 2), np.uint8)))
    with open(path, "r+b") as handle:
        handle.truncate(80 * 2**20)  # sparse: takes no disk space
    read_image(path, max_pixels=4)


@case("image", "cmyk-jpeg", ImageReadError, r"c\.jpg: images with mode CMYK are not supported")
def _(tmp):
    Image.new("CMYK", (4, 4)).save(tmp / "c.jpg")
    read_image(tmp / "c.jpg")


@case("image", "over-max-pixels", ImageReadError, r"m\.png: image is 10x10 = 100 pixels, more")
def _(tmp):
    read_image(write(tmp / "m.png", png_bytes(np.zeros((10, 10), np.uint8))), max_pixels=99)


@case("image", "huge-header", ImageReadError, r"bomb\.png: image is 100000x100000")
def _(tmp):
    read_image(write(tmp / "bomb.png", png_header_only(100_000, 100_000)))


@case("image", "zero-size-header", ImageReadError, r"zero\.png: .*(no pixels|corrupt|not a PNG)")
def _(tmp):
    read_image(write(tmp / "zero.png", png_header_only(0, 5)))


@case("image", "dsb-image-over-max-pixels", ImageReadError, r"a\.png: .*more than max_pixels=63")
def _(tmp):
    load_all(dsb_folder(tmp / "ds"), max_pixels=63)


@case("image", "dsb-max-pixels-after-cache", ImageReadError, r"a\.png: .*more than max_pixels=63")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    load_all(root, cache=tmp / "cache")  # cached under the default limit
    load_all(root, cache=tmp / "cache", max_pixels=63)


@case("image", "dsb-corrupt-image", ImageReadError, r"images/b\.png: corrupt or truncated")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    image = root / "b" / "images" / "b.png"
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8))
    image.write_bytes(data[: len(data) // 2])
    load_all(root)


@case("image", "dsb-zero-byte-image", ImageReadError, r"images/a\.png: empty file")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    (root / "a" / "images" / "a.png").write_bytes(b"")
    load_all(root)


# --------------------------------------------------------------------------- masks


def dsb_with_mask(tmp: Path, mask: np.ndarray | bytes, name: str = "m3.png") -> Path:
    root = dsb_folder(tmp / "ds")
    target = root / "a" / "masks" / name
    if isinstance(mask, bytes):
        target.write_bytes(mask)
    else:
        write_image(target, mask)
    return root


@case("mask", "size-differs", DatasetError, r"m3\.png: size 4x8 differs from its image's 8x8")
def _(tmp):
    load_all(dsb_with_mask(tmp, box_mask((4, 8), (1, 2, 1, 2))))


@case("mask", "non-binary", DatasetError, r"m3\.png: mask is not binary: .* 100 to 255")
def _(tmp):
    mask = np.zeros((8, 8), np.uint8)
    mask[1, 1], mask[2, 2] = 100, 255
    load_all(dsb_with_mask(tmp, mask))


@case("mask", "empty", DatasetError, r"m3\.png: empty mask \(no foreground pixels\)")
def _(tmp):
    load_all(dsb_with_mask(tmp, np.zeros((8, 8), np.uint8)))


@case("mask", "all-foreground", DatasetError, r"m3\.png: mask is foreground everywhere")
def _(tmp):
    load_all(dsb_with_mask(tmp, np.full((8, 8), 255, np.uint8)))


@case(
    "mask", "overlap-error-policy", MaskOverlapError, r"a/masks: mask m3\.png overlaps mask m1\.png"
)
def _(tmp):
    load_all(dsb_with_mask(tmp, box_mask((8, 8), (1, 3, 1, 3))), overlap="error")


@case("mask", "unknown-overlap-policy", InputError, r"overlap must be one of .* got 'union'")
def _(tmp):
    load(dsb_folder(tmp / "ds"), overlap="union")


@case("mask", "colour-mask", ImageReadError, r"m3\.png: a mask must be a single-channel image")
def _(tmp):
    load_all(dsb_with_mask(tmp, np.full((8, 8, 3), 255, np.uint8)))


@case("mask", "palette-mask", ImageReadError, r"m3\.png: a mask must be .*mode P")
def _(tmp):
    load_all(dsb_with_mask(tmp, png_bytes(box_mask().astype(np.uint8) * 255, "P")))


@case("mask", "corrupt-mask", ImageReadError, r"m3\.png: ")
def _(tmp):
    data = png_bytes(np.random.default_rng(0).integers(0, 2, (8, 8), np.uint8) * 255)
    load_all(dsb_with_mask(tmp, data[:40]))


@case("mask", "zero-byte-mask", ImageReadError, r"m3\.png: empty file \(0 bytes\)")
def _(tmp):
    load_all(dsb_with_mask(tmp, b""))


@case("mask", "stray-text-file", DatasetError, r"masks/notes\.txt: stray file in masks/")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    write(root / "a" / "masks" / "notes.txt", "hello")
    load(root)


@case("mask", "stray-thumbs-db", DatasetError, r"masks/Thumbs\.db: stray file in masks/")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    write(root / "b" / "masks" / "Thumbs.db", b"\x00\x01")
    load(root)


@case("mask", "subfolder-in-masks", DatasetError, r"masks/extra: unexpected folder in masks/")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    (root / "a" / "masks" / "extra").mkdir()
    load(root)


@case("mask", "read-mask-shape-differs", DatasetError, r"m\.png: size 8x8 differs .* 8x9")
def _(tmp):
    write_image(tmp / "m.png", box_mask())
    read_mask(tmp / "m.png", shape=(8, 9))


@case("mask", "read-mask-two-values", DatasetError, r"two\.png: mask is not binary")
def _(tmp):
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0], mask[1, 1] = 1, 2
    write_image(tmp / "two.png", mask)
    read_mask(tmp / "two.png")


@case("mask", "16-bit-non-binary", DatasetError, r"m3\.png: mask is not binary: .* 1 to 300")
def _(tmp):
    mask = np.zeros((8, 8), np.uint16)
    mask[1, 1], mask[2, 2] = 1, 300
    load_all(dsb_with_mask(tmp, mask))


@case("mask", "float-tiff-mask", ImageReadError, r"m3\.tif: a mask must be .*mode F")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    tifffile.imwrite(root / "a" / "masks" / "m3.tif", box_mask().astype(np.float32))
    load_all(root)


# --------------------------------------------------------------------------- layouts


@case("layout", "missing-root", DatasetError, r"nowhere: no such folder")
def _(tmp):
    load(tmp / "nowhere")


@case("layout", "root-is-a-file", DatasetError, r"file\.txt: not a folder")
def _(tmp):
    load(write(tmp / "file.txt", "x"))


@case("layout", "empty-dataset", DatasetError, r"ds: empty dataset \(no image folders\)")
def _(tmp):
    (tmp / "ds").mkdir()
    load(tmp / "ds")


@case("layout", "only-hidden-entries", DatasetError, r"ds: empty dataset")
def _(tmp):
    (tmp / "ds" / ".ipynb_checkpoints").mkdir(parents=True)
    write(tmp / "ds" / ".DS_Store", b"\x00")
    load(tmp / "ds")


@case("layout", "missing-images-folder", DatasetError, r"ds/b: no images/ folder")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    for child in (root / "b" / "images").iterdir():
        child.unlink()
    (root / "b" / "images").rmdir()
    load(root)


@case("layout", "images-is-a-file", DatasetError, r"ds/a: no images/ folder")
def _(tmp):
    (tmp / "ds" / "a").mkdir(parents=True)
    write(tmp / "ds" / "a" / "images", "not a folder")
    load(tmp / "ds")


@case("layout", "empty-images-folder", DatasetError, r"a/images: no image file")
def _(tmp):
    (tmp / "ds" / "a" / "images").mkdir(parents=True)
    load(tmp / "ds")


@case("layout", "two-images", DatasetError, r"a/images: 2 files, expected one image: a\.png")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    write_image(root / "a" / "images" / "a_copy.png", np.zeros((8, 8), np.uint8))
    load(root)


@case("layout", "image-name-differs-from-id", DatasetError, r"'other\.png' differs .* id 'a'")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    (root / "a" / "images" / "a.png").rename(root / "a" / "images" / "other.png")
    load(root)


@case("layout", "image-not-an-image-suffix", DatasetError, r"a\.txt: not an image file")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    (root / "a" / "images" / "a.png").rename(root / "a" / "images" / "a.txt")
    load(root)


@case("layout", "folder-in-images", DatasetError, r"images/sub: unexpected folder in images/")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    (root / "a" / "images" / "sub").mkdir()
    load(root)


@case("layout", "duplicate-ids", DatasetError, r"duplicate image ids 'a' and 'a2'")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    os.symlink(root / "a", root / "a2")
    load(root)


@case("layout", "symlink-loop", DatasetError, r"loop: broken symbolic link or symlink loop")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    os.symlink(root / "loop", root / "loop")
    load(root)


@case("layout", "symlink-cycle-of-two", DatasetError, r"ds/c: broken symbolic link or .* loop")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    os.symlink(root / "d", root / "c")
    os.symlink(root / "c", root / "d")
    load(root)


@case("layout", "broken-symlink", DatasetError, r"masks/m9\.png: broken symbolic link")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    os.symlink(tmp / "gone.png", root / "a" / "masks" / "m9.png")
    load(root)


@case("layout", "some-folders-without-masks", DatasetError, r"1 of 2 image folders have no masks/")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    for child in (root / "b" / "masks").iterdir():
        child.unlink()
    (root / "b" / "masks").rmdir()
    load(root)


@case("layout", "masks-required-but-absent", DatasetError, r"2 image folders have no masks/")
def _(tmp):
    load(dsb_folder(tmp / "ds", masks=False), masks=True)


@case("layout", "masks-is-a-file", DatasetError, r"a/masks: not a folder")
def _(tmp):
    root = dsb_folder(tmp / "ds", masks=False)
    write(root / "a" / "masks", "x")
    load(root)


@case("layout", "parent-of-stage-folders", DatasetError, r"holds stage1_train: pass one of them")
def _(tmp):
    dsb_folder(tmp / "dsb" / "stage1_train")
    load(tmp / "dsb")


@case("layout", "only-stray-files", DatasetError, r"ds: empty dataset \(no image folders\)")
def _(tmp):
    write(tmp / "ds" / "README.txt", "images go in folders")
    load(tmp / "ds")


@case("layout", "image-is-a-broken-symlink", DatasetError, r"images/a\.png: broken symbolic link")
def _(tmp):
    root = dsb_folder(tmp / "ds")
    (root / "a" / "images" / "a.png").unlink()
    os.symlink(tmp / "gone.png", root / "a" / "images" / "a.png")
    load(root)


@case("layout", "bad-workers-option", InputError, r"workers must be a positive integer, got 0")
def _(tmp):
    load(dsb_folder(tmp / "ds"), workers=0)


@case("layout", "bad-max-pixels-option", InputError, r"max_pixels must be a positive integer")
def _(tmp):
    load(dsb_folder(tmp / "ds"), max_pixels=0)


# --------------------------------------------------------------------------- CSVs

HEADER = "ImageId,EncodedPixels,Height,Width\n"


@case("csv", "missing-column", CSVFormatError, r"labels\.csv:1: missing column\(s\) EncodedPixels")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, "ImageId,Height,Width\na,8,8\n"))


@case("csv", "extra-column", CSVFormatError, r"labels\.csv:1: unknown column 'Score'")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, "ImageId,EncodedPixels,Score\na,1 1,0.9\n"))


@case("csv", "duplicate-header", CSVFormatError, r"labels\.csv:1: column 'ImageId' appears twice")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, "ImageId,EncodedPixels,ImageId\na,1 1,a\n"))


@case("csv", "height-without-width", CSVFormatError, r":1: column Height without Width")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, "ImageId,EncodedPixels,Height\na,1 1,8\n"))


@case("csv", "empty-file", CSVFormatError, r"labels\.csv: the file is empty")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, ""))


@case("csv", "bom-only", CSVFormatError, r"labels\.csv: the file is empty")
def _(tmp):
    rle.read_rle_csv(write(tmp / "labels.csv", b"\xef\xbb\xbf"))


@case("csv", "missing-file-regression", CSVFormatError, r"absent\.csv: no such file")
def _(tmp):
    rle.read_rle_csv(tmp / "absent.csv")


@case("csv", "folder-not-file-regression", CSVFormatError, r"dir\.csv: a folder, not a CSV")
def _(tmp):
    (tmp / "dir.csv").mkdir()
    rle.read_rle_csv(tmp / "dir.csv")


@case("csv", "row-with-extra-field", CSVFormatError, r"labels\.csv:3: expected 4 fields .* got 5")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + "a,1 1,8,8\na,3 1,8,8,x\n"))


@case("csv", "empty-image-id", CSVFormatError, r"labels\.csv:2: empty ImageId")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + " ,1 1,8,8\n"))


@case("csv", "height-not-an-integer", CSVFormatError, r":2: Height must be a positive integer")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + "a,1 1,8.0,8\n"))


@case("csv", "width-zero", CSVFormatError, r":2: Width must be a positive integer, got '0'")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + "a,1 1,8,0\n"))


@case("csv", "height-5000-digits-regression", CSVFormatError, r":2: Height must be a positive")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + f"a,1 1,{'9' * 5000},8\n"))


@case("csv", "huge-height-width-regression", CSVFormatError, r":2: Height,Width 100000,100000")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + "a,1 1,100000,100000\n"))


@case("csv", "shape-differs-between-rows", CSVFormatError, r":3: image 'a' has Height,Width 8,9")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, HEADER + "a,1 1,8,8\na,3 1,8,9\n"))


@case("csv", "unterminated-quote", CSVFormatError, r"labels\.csv: malformed CSV")
def _(tmp):
    rle.read_rle_csv(csv_file(tmp, 'ImageId,EncodedPixels\n"a,1 1\n'))


@case("csv", "invalid-utf8", CSVFormatError, r"labels\.csv: not valid UTF-8 text")
def _(tmp):
    rle.read_rle_csv(write(tmp / "labels.csv", b"ImageId,EncodedPixels\n\xff\xfe,1 1\n"))


@case("csv", "utf16-with-bom", CSVFormatError, r"labels\.csv: not valid UTF-8 text")
def _(tmp):
    rle.read_rle_csv(write(tmp / "labels.csv", "ImageId,EncodedPixels\na,1 1\n".encode("utf-16")))


@case("csv", "bom-crlf-names-the-right-line", CSVFormatError, r"labels\.csv:3: .* 'b': 3 numbers")
def _(tmp):
    text = "\ufeffImageId,EncodedPixels\r\na,1 1\r\nb,1 2 3\r\n"
    rle.read_rle_csv(write(tmp / "labels.csv", text.encode("utf-8")))


@case("csv", "nul-in-encoding", CSVFormatError, r"labels\.csv:2: .*token 2 .*not an integer")
def _(tmp):
    rle.read_rle_csv(write(tmp / "labels.csv", b"ImageId,EncodedPixels\na,1 \x00 2\n"))


# Malformed RLE of every kind, through the CSV reader and through decode().
MALFORMED_RLE = {
    "not-an-integer": ("1 x", r"token 2 \('x'\) is not an integer"),
    "float-token": ("1.5 2", r"token 1 \('1\.5'\) is not an integer"),
    "odd-count": ("1 2 5", r"3 numbers: .* must be even"),
    "zero-start": ("0 2", r"run 1 \(start 0, length 2\): starts are 1-based"),
    "negative-start": ("-3 2", r"run 1 \(start -3, length 2\): starts are 1-based"),
    "zero-length": ("1 0", r"run 1 \(start 1, length 0\): a length must be at least 1"),
    "negative-length": ("4 -1", r"a length must be at least 1"),
    "descending-starts": ("10 2 3 1", r"run 2 \(start 3, length 1\) starts before run 1"),
    "overlapping-runs": ("1 5 3 2", r"run 2 \(start 3, length 2\) overlaps run 1"),
    "huge-token": ("1 " + "9" * 30, r"token 2 \(9+\.*\) is too large"),
    "run-outside-image": ("60 10", r"run 1 \(start 60, length 10\) ends at pixel 69 beyond the 64"),
    "start-outside-image": ("65 1", r"ends at pixel 65 beyond the 64 pixels of a 8x8 image"),
    "unicode-digits": ("\u0661 2", r"token 1 .* is not an integer"),
}

for _name, (_text, _pattern) in MALFORMED_RLE.items():

    def _via_csv(tmp, text=_text):
        rle.read_rle_csv(csv_file(tmp, HEADER + f"a,{text},8,8\n"))

    def _via_decode(tmp, text=_text):
        rle.decode(text, (8, 8))

    CASES.append(
        Case(
            "csv", f"rle-{_name}", _via_csv, CSVFormatError, rf"labels\.csv:2: .*'a': .*{_pattern}"
        )
    )
    CASES.append(Case("csv", f"decode-{_name}", _via_decode, RLEError, _pattern))


@case("csv", "decode-not-a-string", RLEError, r"an RLE must be a string, got list")
def _(tmp):
    rle.decode([1, 2], (8, 8))


@case("csv", "decode-labels-empty-encoding", RLEError, r"RLE 2 is empty")
def _(tmp):
    rle.decode_labels(["1 2", ""], (8, 8))


@case("csv", "decode-labels-overlap", MaskOverlapError, r"RLE 2 overlaps RLE 1 on 1 pixel")
def _(tmp):
    rle.decode_labels(["1 3", "3 2"], (8, 8))


@case("csv", "decode-labels-one-string", InputError, r"rles must be a sequence of strings")
def _(tmp):
    rle.decode_labels("1 3", (8, 8))


@case("csv", "decode-labels-names-the-encoding", RLEError, r"RLE 2: run 1 .* beyond the 64")
def _(tmp):
    rle.decode_labels(["1 3", "60 10"], (8, 8))


def dsb_and_csv(tmp: Path, rows: str, header: str = HEADER) -> tuple[Path, Path]:
    return dsb_folder(tmp / "ds", masks=False), csv_file(tmp, header + rows)


@case(
    "csv", "labels-csv-shape-disagrees", DatasetError, r"image b is 8x8 .* gives Height,Width 8,9"
)
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 1,8,8\nb,1 1,8,9\n")
    load(root, labels_csv=path)


@case("csv", "labels-csv-id-absent-from-folder", DatasetError, r"1 image ids are not in the .*: z")
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 1,8,8\nb,1 1,8,8\nz,1 1,8,8\n")
    load(root, labels_csv=path)


@case("csv", "labels-csv-folder-id-missing", DatasetError, r"1 image ids are missing from it: b")
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 1,8,8\n")
    load(root, labels_csv=path)


@case("csv", "labels-csv-run-outside-image", RLEError, r"labels\.csv: image b: RLE 1: .* beyond")
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 1\nb,60 10\n", header="ImageId,EncodedPixels\n")
    load_all(root, labels_csv=path)


@case("csv", "labels-csv-overlap-error", MaskOverlapError, r"labels\.csv: image a: RLE 2 overlaps")
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 3,8,8\na,3 2,8,8\nb,,8,8\n")
    load_all(root, labels_csv=path, overlap="error")


@case("csv", "labels-csv-missing-file", CSVFormatError, r"nope\.csv: no such file")
def _(tmp):
    load(dsb_folder(tmp / "ds", masks=False), labels_csv=tmp / "nope.csv")


@case("csv", "labels-csv-with-masks-true", InputError, r"either masks=True or labels_csv")
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 1,8,8\nb,1 1,8,8\n")
    load(root, labels_csv=path, masks=True)


@case("csv", "labels-csv-with-area-overlap-policy", InputError, r"with labels_csv, overlap must")
def _(tmp):
    root, path = dsb_and_csv(tmp, "a,1 1,8,8\nb,1 1,8,8\n")
    load(root, labels_csv=path, overlap="smallest")


@case("csv", "labels-from-csv-without-shape", InputError, r"shape is required")
def _(tmp):
    rle.labels_from_csv(rle.RLEImage(("1 1",)))


# --------------------------------------------------------------------------- arrays


def square(value=1, dtype=np.int32, shape=(4, 4)) -> np.ndarray:
    labels = np.zeros(shape, dtype)
    labels[1:3, 1:3] = value
    return labels


@case("array", "score-float-labels", InputError, r"true must have an integer dtype, got float64")
def _(tmp):
    metrics.score_image(square().astype(float), square())


@case("array", "score-nan-labels", InputError, r"pred contains NaN")
def _(tmp):
    metrics.score_image(square(), np.full((4, 4), np.nan))


@case("array", "score-inf-labels", InputError, r"pred must have an integer dtype")
def _(tmp):
    metrics.score_image(square(), np.full((4, 4), np.inf))


@case("array", "score-complex-labels", InputError, r"true must have an integer dtype, got complex")
def _(tmp):
    metrics.score_image(square().astype(complex), square())


@case("array", "score-string-labels", InputError, r"pred must have an integer dtype")
def _(tmp):
    metrics.score_image(square(), np.array([["a", "b"], ["c", "d"]]))


@case("array", "score-negative-labels", InputError, r"pred has negative labels \(min -1\)")
def _(tmp):
    metrics.score_image(square(), square(-1))


@case("array", "score-3d-labels", InputError, r"true must be a 2-D label image, got shape \(2, 4")
def _(tmp):
    metrics.score_image(np.stack([square(), square()]), square())


@case("array", "score-1d-labels", InputError, r"pred must be a 2-D label image, got shape \(16,\)")
def _(tmp):
    metrics.score_image(square(), square().ravel())


@case("array", "score-mismatched-shapes", InputError, r"true has shape \(4, 4\) but pred .* \(4, 5")
def _(tmp):
    metrics.score_image(square(), square(shape=(4, 5)))


@case("array", "score-labels-beyond-int32", InputError, r"true has labels beyond int32")
def _(tmp):
    metrics.score_image(square(2**40, np.int64), square())


@case("array", "iou-matrix-mismatched", InputError, r"true has shape \(4, 4\) but pred has shape")
def _(tmp):
    metrics.iou_matrix(square(), square(shape=(5, 4)))


@case("array", "dataset-missing-prediction", InputError, r"no prediction for 1 image\(s\): 'b'")
def _(tmp):
    metrics.score_dataset({"a": square(), "b": square()}, {"a": square()})


@case("array", "dataset-extra-prediction", InputError, r"predictions for 1 image\(s\) not in")
def _(tmp):
    metrics.score_dataset({"a": square()}, {"a": square(), "z": square()})


@case("array", "dataset-empty", InputError, r"truths is empty")
def _(tmp):
    metrics.score_dataset({}, {})


@case("array", "dataset-names-the-image", InputError, r"image 'b': true has shape \(4, 4\) but")
def _(tmp):
    metrics.score_dataset(
        {"a": square(), "b": square()}, {"a": square(), "b": square(shape=(3, 3))}
    )


@case("array", "dataset-not-a-mapping-regression", InputError, r"truths must be a mapping .* nd")
def _(tmp):
    metrics.score_dataset(square(), square())


@case("array", "score-object-array", InputError, r"true must have an integer dtype, got object")
def _(tmp):
    metrics.score_image(np.array([[1, None]], dtype=object), square())


@case("array", "score-none", InputError, r"pred must be a 2-D label image, got shape \(\)")
def _(tmp):
    metrics.score_image(square(), None)


@case("array", "dataset-preds-not-a-mapping-regression", InputError, r"preds must be a mapping")
def _(tmp):
    metrics.score_dataset({"a": square()}, [square()])


@case("array", "probs-nan", InputError, r"probabilities contains NaN or infinite values")
def _(tmp):
    postprocess.to_instances(np.full((4, 4), np.nan, np.float32))


@case("array", "probs-inf", InputError, r"probabilities contains NaN or infinite values")
def _(tmp):
    postprocess.to_instances(np.full((4, 4, 3), np.inf))


@case("array", "probs-integer-dtype", InputError, r"probabilities must be floating point, got int")
def _(tmp):
    postprocess.to_instances(square())


@case(
    "array", "probs-out-of-range", InputError, r"probabilities must lie in \[0, 1\], got \[2, 2\]"
)
def _(tmp):
    postprocess.to_instances(np.full((4, 4), 2.0), InferenceConfig(postprocess="components"))


@case("array", "probs-4d", InputError, r"probabilities must be \(H, W\) or \(H, W, C\), got shape")
def _(tmp):
    postprocess.to_instances(np.zeros((1, 4, 4, 3), np.float32))


@case("array", "encode-label-image", InputError, r"mask must hold only 0 and 1, found 2")
def _(tmp):
    rle.encode(square(2))


@case("array", "encode-3d", InputError, r"mask must be a 2-D array, got shape \(1, 4, 4\)")
def _(tmp):
    rle.encode(square()[None])


@case("array", "encode-labels-negative", InputError, r"labels has negative labels")
def _(tmp):
    rle.encode_labels(square(-5))


@case("array", "decode-shape-infinite-regression", InputError, r"shape must be two non-negative")
def _(tmp):
    rle.decode("1 1", (float("inf"), 3))


@case("array", "decode-shape-huge-regression", InputError, r"shape 1000000x1000000 has .* more")
def _(tmp):
    rle.decode("1 1", (10**6, 10**6))


@case("array", "decode-shape-negative", InputError, r"shape must be two non-negative .* \(3, -1\)")
def _(tmp):
    rle.decode("1 1", (3, -1))


@case("array", "submission-bad-id", InputError, r"predictions keys must be non-empty image ids")
def _(tmp):
    rle.write_submission({" a": square()}, tmp / "sub.csv")


@case("array", "submission-float-labels", InputError, r"predictions\['a'\] must have an integer")
def _(tmp):
    rle.write_submission({"a": square().astype(np.float32)}, tmp / "sub.csv")


@case("array", "submission-missing-folder-regression", InputError, r"sub\.csv: folder .* not exist")
def _(tmp):
    rle.write_submission({"a": square()}, tmp / "nowhere" / "sub.csv")


@case("array", "submission-not-a-mapping-regression", InputError, r"predictions must be a mapping")
def _(tmp):
    rle.write_submission([square()], tmp / "sub.csv")


@case("array", "measure-image-of-another-shape", InputError, r"image must be .* got shape \(4, 5\)")
def _(tmp):
    from nucleuseg import measure

    measure(np.zeros((4, 4), np.int32), np.zeros((4, 5)))


@case("array", "predict-zero-diameter", InputError, r"diameter must be a positive number of pixels")
def _(tmp):
    from nucleuseg.inference import predict_labels

    predict_labels(lambda b: b[..., :1], np.zeros((8, 8)), get_preset("default"), diameter=0)


@case("array", "predict-nan-image", InputError, r"image contains NaN or infinite", torch=True)
def _(tmp):
    torch_segmenter().predict(np.full((8, 8), np.nan))


@case(
    "array", "predict-2-channel-image", InputError, r"image must be \(H, W\), .* \(8, 8, 2\)", True
)
def _(tmp):
    torch_segmenter().predict(np.zeros((8, 8, 2), np.uint8))


@case("array", "predict-1d-image", InputError, r"image must be \(H, W\), .* got shape \(8,\)", True)
def _(tmp):
    torch_segmenter().predict(np.zeros(8, np.uint8))


@case("array", "predict-bool-image", InputError, r"image must be an integer or float .* bool", True)
def _(tmp):
    torch_segmenter().predict(np.zeros((8, 8), bool))


@case("array", "predict-empty-image", InputError, r"image is empty \(shape \(0, 8, 3\)\)", True)
def _(tmp):
    torch_segmenter().predict(np.zeros((0, 8, 3), np.uint8))


# --------------------------------------------------------------------------- models


@case("model", "pickle-payload-never-runs", CheckpointError, r"model\.pt: this is a Python pickle")
def _(tmp):
    marker = tmp / "executed.txt"
    path = write(tmp / "model.pt", pickle.dumps(_Payload(marker)))
    try:
        checkpoint.load_model(path)
    finally:
        assert not marker.exists(), "the pickle payload ran"


@case(
    "model", "pickle-named-safetensors", CheckpointError, r"m\.safetensors: this is a Python pick"
)
def _(tmp):
    marker = tmp / "executed.txt"
    path = write(tmp / "m.safetensors", pickle.dumps(_Payload(marker), protocol=2))
    try:
        Segmenter.load(path)
    finally:
        assert not marker.exists(), "the pickle payload ran"


@case("model", "torch-pt-zip", CheckpointError, r"model\.pt: this is a zip archive")
def _(tmp):
    checkpoint.load_model(write(tmp / "model.pt", b"PK\x03\x04" + bytes(60)))


@case("model", "keras-file", CheckpointError, r"model\.keras: this is a zip archive")
def _(tmp):
    checkpoint.load_model(write(tmp / "model.keras", b"PK\x03\x04" + bytes(60)))


@case("model", "hdf5-h5", CheckpointError, r"model\.h5: this is an HDF5 file")
def _(tmp):
    checkpoint.load_model(write(tmp / "model.h5", b"\x89HDF\r\n\x1a\n" + bytes(60)))


@case("model", "text-file", CheckpointError, r"notes\.safetensors: not a safetensors file")
def _(tmp):
    checkpoint.load_model(write(tmp / "notes.safetensors", "just some text, not weights"))


@case("model", "zero-byte", CheckpointError, r"empty\.safetensors: too short .* \(0 bytes\)")
def _(tmp):
    checkpoint.load_model(write(tmp / "empty.safetensors", b""))


@case("model", "missing-file", CheckpointError, r"absent\.safetensors: no such model file")
def _(tmp):
    checkpoint.load_model(tmp / "absent.safetensors")


@case("model", "folder-regression", CheckpointError, r"dir\.safetensors: a folder, not a model")
def _(tmp):
    (tmp / "dir.safetensors").mkdir()
    checkpoint.load_model(tmp / "dir.safetensors")


@case("model", "truncated-header", CheckpointError, r"model\.safetensors: truncated safetensors")
def _(tmp):
    path = model_file(tmp)
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    path.write_bytes(path.read_bytes()[: header_len // 2])
    checkpoint.load_model(path)


@case("model", "truncated-data", CheckpointError, r"model\.safetensors: unreadable safetensors")
def _(tmp):
    path = model_file(tmp)
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[: 8 + header_len + (len(data) - 8 - header_len) // 2])
    checkpoint.load_model(path)


@case("model", "header-length-past-the-end", CheckpointError, r"x\.safetensors: .*no valid header")
def _(tmp):
    checkpoint.load_model(write(tmp / "x.safetensors", struct.pack("<Q", 10**9) + b"{}"))


@case("model", "plain-safetensors", CheckpointError, r"bad\.safetensors: .*not a nucleuseg model")
def _(tmp):
    raw_safetensors(tmp / "bad.safetensors", {"w": np.zeros(3, np.float32)}, {"x": "y"})
    checkpoint.load_model(tmp / "bad.safetensors")


@case("model", "missing-weight", CheckpointError, r"bad\.safetensors: missing \['head\.bias'\]")
def _(tmp):
    weights = init_weights(tiny_preset().network, 0)
    del weights["head.bias"]
    checkpoint.load_model(model_with(tmp, weights))


@case("model", "extra-weight", CheckpointError, r"bad\.safetensors: unexpected \['extra\.kernel'")
def _(tmp):
    weights = init_weights(tiny_preset().network, 0)
    weights["extra.kernel"] = np.zeros(3, np.float32)
    checkpoint.load_model(model_with(tmp, weights))


@case("model", "misshapen-weight", CheckpointError, r"bad\.safetensors: misshapen \['head\.bias")
def _(tmp):
    weights = init_weights(tiny_preset().network, 0)
    weights["head.bias"] = np.zeros(7, np.float32)
    checkpoint.load_model(model_with(tmp, weights))


@case("model", "integer-weights-regression", CheckpointError, r"must be floating point, .*int32")
def _(tmp):
    weights = init_weights(tiny_preset().network, 0)
    weights["head.bias"] = weights["head.bias"].astype(np.int32)
    checkpoint.load_model(model_with(tmp, weights))


@case("model", "nan-weights", CheckpointError, r"bad\.safetensors: non-finite values in")
def _(tmp):
    weights = init_weights(tiny_preset().network, 0)
    weights["head.bias"] = np.full_like(weights["head.bias"], np.nan)
    checkpoint.load_model(model_with(tmp, weights))


@case("model", "newer-format-version", CheckpointError, r"newer nucleuseg \(format 2, .* up to 1")
def _(tmp):
    checkpoint.load_model(model_with(tmp, **{"nucleuseg.format": "2"}))


@case("model", "bad-format-version", CheckpointError, r"bad\.safetensors: bad format version 'v1'")
def _(tmp):
    checkpoint.load_model(model_with(tmp, **{"nucleuseg.format": "v1"}))


@case("model", "no-preset", CheckpointError, r"bad\.safetensors: metadata has no preset")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=None))


@case("model", "preset-not-json", CheckpointError, r"metadata 'preset' is not valid JSON")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset="{not json"))


@case("model", "preset-not-an-object", CheckpointError, r"preset must be a JSON object, got list")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset="[1, 2]"))


@case("model", "preset-section-a-list-regression", CheckpointError, r"preset\.network must be a")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=preset_with(None, "network", [1])))


@case("model", "preset-float-filters-regression", CheckpointError, r"base_filters is 2\.0, expec")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=preset_with("network", "base_filters", 2.0)))


@case("model", "preset-string-dropout-regression", CheckpointError, r"network\.dropout is 'x'")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=preset_with("network", "dropout", "x")))


@case("model", "preset-string-flag-regression", CheckpointError, r"inference\.tta is 'yes', exp")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=preset_with("inference", "tta", "yes")))


@case("model", "preset-unknown-activation", CheckpointError, r"invalid configuration: activation")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=preset_with("network", "activation", "swish")))


@case("model", "preset-unknown-field", CheckpointError, r"invalid configuration: .*unknown fields")
def _(tmp):
    checkpoint.load_model(model_with(tmp, preset=preset_with("training", "warp_speed", 9)))


@case("model", "history-not-an-object-regression", CheckpointError, r"history must be a JSON obj")
def _(tmp):
    Segmenter.load(model_with(tmp, history="[1, 2]"))


@case("model", "history-bad-epoch-regression", CheckpointError, r"history\.epochs\[0\] must be")
def _(tmp):
    Segmenter.load(model_with(tmp, history=json.dumps({"epochs": [3]})))


@case("model", "history-epoch-wrong-type-regression", CheckpointError, r"epochs\[0\]\.loss is 'l")
def _(tmp):
    epoch = {"epoch": 1, "loss": "low", "score": None, "learning_rate": 0.1, "seconds": 1.0}
    Segmenter.load(model_with(tmp, history=json.dumps({"epochs": [epoch]})))


@case("model", "training-state-not-a-model", CheckpointError, r"a training-state file, not a mod")
def _(tmp):
    checkpoint.load_model(model_with(tmp, kind="training-state"))


@case("model", "unregistered-backend", BackendUnavailable, r"'nope'")
def _(tmp):
    Segmenter("nope")


@case(
    "model",
    "model-file-names-unregistered-backend",
    BackendUnavailable,
    r"bad\.safetensors: saved by backend 'nope', .* pass backend=",
)
def _(tmp):
    Segmenter.load(model_with(tmp, backend="nope"))


@case("model", "load-into-unregistered-backend", BackendUnavailable, r"'nope'")
def _(tmp):
    Segmenter.load(model_file(tmp), backend="nope")


@case("model", "unknown-preset-name", ConfigError, r"unknown preset 'huge'")
def _(tmp):
    Segmenter("torch", preset="huge")


# --------------------------------------------------------------------------- command line


@case("cli", "train-missing-data-folder", DatasetError, r"nowhere: no such folder")
def _(tmp):
    return ["train", "--data", str(tmp / "nowhere"), "--out", str(tmp / "m.safetensors")]


@case("cli", "train-empty-data-folder", DatasetError, r"ds: empty dataset")
def _(tmp):
    (tmp / "ds").mkdir()
    return ["train", "--data", str(tmp / "ds"), "--out", str(tmp / "m.safetensors")]


@case("cli", "train-unregistered-backend", BackendUnavailable, r"'nope'")
def _(tmp):
    root = dsb_folder(tmp / "ds", ids=("a", "b", "c", "d"))
    return ["train", "--backend", "nope", "--data", str(root), "--out", str(tmp / "m.st")]


@case("cli", "predict-corrupt-model", CheckpointError, r"model\.safetensors: not a safetensors")
def _(tmp):
    write(tmp / "model.safetensors", "garbage, not weights")
    write_image(tmp / "x.png", np.zeros((8, 8), np.uint8))
    return ["predict", str(tmp / "model.safetensors"), str(tmp / "x.png"), "--out", str(tmp)]


@case("cli", "predict-pickle-model", CheckpointError, r"model\.pt: this is a Python pickle")
def _(tmp):
    write(tmp / "model.pt", pickle.dumps({"weights": [1, 2, 3]}))
    return ["predict", str(tmp / "model.pt"), str(tmp / "x.png"), "--out", str(tmp)]


@case("cli", "evaluate-model-of-newer-format", CheckpointError, r"newer nucleuseg")
def _(tmp):
    root = dsb_folder(tmp / "ds", ids=("a", "b", "c", "d"))
    path = model_with(tmp, **{"nucleuseg.format": "99"})
    return ["evaluate", str(path), "--data", str(root), "--split", "all"]


@case(
    "cli",
    "score-malformed-submission",
    CSVFormatError,
    r"sub\.csv:2: EncodedPixels .*'a': 3 numbers",
)
def _(tmp):
    write(tmp / "sol.csv", HEADER + "a,1 3,8,8\n")
    write(tmp / "sub.csv", "ImageId,EncodedPixels\na,1 3 5\n")
    return ["score", str(tmp / "sub.csv"), str(tmp / "sol.csv")]


@case("cli", "score-submission-outside-image-regression", RLEError, r"sub\.csv: image a: RLE 1: ")
def _(tmp):
    write(tmp / "sol.csv", HEADER + "a,1 3,8,8\n")
    write(tmp / "sub.csv", "ImageId,EncodedPixels\na,60 10\n")
    return ["score", str(tmp / "sub.csv"), str(tmp / "sol.csv")]


@case("cli", "score-solution-overlap-regression", MaskOverlapError, r"sol\.csv: image a: RLE 2 ov")
def _(tmp):
    write(tmp / "sol.csv", HEADER + "a,1 3,8,8\na,3 2,8,8\n")
    write(tmp / "sub.csv", "ImageId,EncodedPixels\na,1 3\n")
    return ["score", str(tmp / "sub.csv"), str(tmp / "sol.csv")]


@case("cli", "score-missing-submission-regression", CSVFormatError, r"absent\.csv: no such file")
def _(tmp):
    write(tmp / "sol.csv", HEADER + "a,1 3,8,8\n")
    return ["score", str(tmp / "absent.csv"), str(tmp / "sol.csv")]


@case("cli", "score-solution-without-shape", CSVFormatError, r"sol\.csv: no Height/Width for a")
def _(tmp):
    write(tmp / "sol.csv", "ImageId,EncodedPixels\na,1 3\n")
    write(tmp / "sub.csv", "ImageId,EncodedPixels\na,1 3\n")
    return ["score", str(tmp / "sub.csv"), str(tmp / "sol.csv")]


@case("cli", "score-extra-images", CSVFormatError, r"sub\.csv: images not in the solution: \['z")
def _(tmp):
    write(tmp / "sol.csv", HEADER + "a,1 3,8,8\n")
    write(tmp / "sub.csv", "ImageId,EncodedPixels\na,1 3\nz,1 1\n")
    return ["score", str(tmp / "sub.csv"), str(tmp / "sol.csv")]


@case("cli", "train-out-folder-missing", InputError, r"--out .*m\.safetensors: folder .* not exist")
def _(tmp):
    # Refused before loading the data or training, not after hours of training.
    root = dsb_folder(tmp / "ds")
    return ["train", "--data", str(root), "--out", str(tmp / "nowhere" / "m.safetensors")]


@case("cli", "train-figures-is-a-file", InputError, r"--figures .*fig: exists and is not a folder")
def _(tmp):
    write(tmp / "fig", "x")
    root = dsb_folder(tmp / "ds")
    return ["train", "--data", str(root), "--out", str(tmp / "m.st"), "--figures", str(tmp / "fig")]


@case("cli", "predict-out-is-a-file", InputError, r"--out .*labels: exists and is not a folder")
def _(tmp):
    write(tmp / "labels", "x")
    return ["predict", str(model_file(tmp)), str(tmp / "x.png"), "--out", str(tmp / "labels")]


@case("cli", "predict-blocks-with-overlay", InputError, r"--blocks does not take --overlay")
def _(tmp):
    return ["predict", "m.safetensors", "x.tif", "--out", str(tmp), "--blocks", "--overlay"]


@case("cli", "submit-out-is-a-folder", InputError, r"--out .*sub: is a folder; give a file name")
def _(tmp):
    (tmp / "sub").mkdir()
    root = dsb_folder(tmp / "ds", masks=False)
    return ["submit", str(model_file(tmp)), "--data", str(root), "--out", str(tmp / "sub")]


# --------------------------------------------------------------------------- the tests

COUNTS: dict[str, int] = dict(Counter(c.category for c in CASES))
"""Cases per category, as collected."""

MINIMUM: dict[str, int] = {
    "image": 33,
    "mask": 17,
    "layout": 23,
    "csv": 60,
    "array": 41,
    "model": 37,
    "cli": 17,
}
"""Cases per category when last counted; the corpus may grow, never shrink."""

LIBRARY_CASES = [c for c in CASES if c.category != "cli"]
CLI_CASES = [c for c in CASES if c.category == "cli"]


def _skip_without_torch(item: Case) -> None:
    if item.torch and not HAS_TORCH:
        pytest.skip("needs the torch backend (pip install 'nucleuseg[torch]')")


@pytest.mark.parametrize("item", LIBRARY_CASES, ids=[c.id for c in LIBRARY_CASES])
def test_bad_input_raises_a_named_error(item: Case, tmp_path, monkeypatch):
    _skip_without_torch(item)
    monkeypatch.setenv("NUCLEUSEG_CACHE", str(tmp_path / "default-cache"))
    with pytest.raises(NucleusegError) as info:
        item.run(tmp_path)
    assert isinstance(info.value, item.error), f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert _matches(item.match, message), f"message {message!r} does not match {item.match!r}"
    assert not (tmp_path / "default-cache").exists(), "the user's cache folder was written"


@pytest.mark.parametrize("item", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_input_on_the_command_line(item: Case, tmp_path, monkeypatch, capsys):
    _skip_without_torch(item)
    monkeypatch.setenv("NUCLEUSEG_CACHE", str(tmp_path / "cache"))
    argv = item.run(tmp_path)
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    prefix = f"nucleuseg {argv[0]}: error: "
    assert prefix in err, err
    message = err[err.index(prefix) + len(prefix) :]
    assert _matches(item.match, message), f"{message!r} does not match {item.match!r}"


def _matches(pattern: str, message: str) -> bool:
    return re.search(pattern, message) is not None


def test_corpus_only_grows():
    print("\nbad-input corpus:", ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())))
    print(f"total {len(CASES)}")
    shrunk = {k: (COUNTS.get(k, 0), n) for k, n in MINIMUM.items() if COUNTS.get(k, 0) < n}
    assert not shrunk, f"categories lost cases (now, before): {shrunk}"
    assert len(CASES) >= sum(MINIMUM.values())
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
