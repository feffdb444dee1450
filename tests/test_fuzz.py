"""Fuzzing the edges: random and mutated input into the RLE decoder, the CSV reader, the image
loader and the model loader. Whatever comes in, only a NucleusegError may come out.

Each test calls the entry point inside ``reject_cleanly``: a NucleusegError is a pass, anything
else (a numpy, Pillow, tifffile, safetensors or Python exception) fails the test with the input
hypothesis found. Inputs that load must also load *correctly* (shapes, dtypes, round trips).
Every escape found here was fixed in the library and added to ``tests/test_bad_input_corpus.py``
(or, for inputs that should load, to the regression tests at the end of this file).

Set ``NUCLEUSEG_FUZZ_EXAMPLES`` (default 150) to fuzz longer, e.g. ``10000`` before a release.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nucleuseg import checkpoint, rle
from nucleuseg.backends.base import init_weights
from nucleuseg.config import get_preset
from nucleuseg.data import images
from nucleuseg.errors import NucleusegError

FUZZ = settings(
    max_examples=int(os.environ.get("NUCLEUSEG_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_counter = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fresh(workdir: Path, suffix: str, data: bytes) -> Path:
    """A new file holding ``data`` (one per example, so no reader sees a stale one)."""
    path = workdir / f"f{next(_counter)}{suffix}"
    path.write_bytes(data)
    return path


def reject_cleanly(call, *args, **kwargs):
    """Return ``call``'s result, or ``None`` if it raised a NucleusegError; anything else escapes
    and fails the test."""
    try:
        return call(*args, **kwargs)
    except NucleusegError as err:
        assert str(err), "an error must say what is wrong"
        return None


# --------------------------------------------------------------------------- RLE strings

TOKENS = st.one_of(
    st.integers(-3, 80).map(str),
    st.sampled_from(
        ["0", "+5", "-0", "1e3", "1.5", "0x10", "9" * 19, "9" * 40, "", "x", "\x00", "\u0661", "½"]
    ),
)
SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", ",", ""])


@st.composite
def rle_ish(draw) -> str:
    """Mostly plausible encodings: tokens joined by (sometimes odd) whitespace."""
    tokens = draw(st.lists(TOKENS, max_size=12))
    pieces = []
    for token in tokens:
        pieces += [token, draw(SEPARATORS)]
    return draw(st.sampled_from(["", " ", "\t"])) + "".join(pieces)


SHAPES = st.one_of(
    st.tuples(st.integers(0, 12), st.integers(0, 12)),
    st.sampled_from(
        [
            (3,),
            (2, 3, 4),
            (-1, 4),
            (2.5, 3),
            (float("inf"), 2),
            (float("nan"), 1),
            ("a", "b"),
            None,
            (10**7, 10**7),
            (2**70, 1),
            (True, 3),
        ]
    ),
)


@FUZZ
@given(text=st.one_of(rle_ish(), st.text(max_size=60), st.binary(max_size=30)), shape=SHAPES)
def test_decode_raises_only_nucleuseg_errors(text, shape):
    mask = reject_cleanly(rle.decode, text, shape)
    if mask is not None:
        assert mask.dtype == bool and mask.shape == tuple(int(s) for s in shape)
        np.testing.assert_array_equal(rle.decode(rle.encode(mask), shape), mask)


@FUZZ
@given(
    rles=st.one_of(st.lists(rle_ish(), max_size=5), rle_ish(), st.lists(st.integers(), max_size=2)),
    shape=SHAPES,
    overlap=st.sampled_from(["error", "first", "last", "union", None]),
)
def test_decode_labels_raises_only_nucleuseg_errors(rles, shape, overlap):
    labels = reject_cleanly(rle.decode_labels, rles, shape, overlap=overlap)
    if labels is not None:
        assert labels.dtype == np.int32 and labels.shape == tuple(int(s) for s in shape)
        assert labels.max(initial=0) <= len(rles)


# --------------------------------------------------------------------------- CSV files

HEADER_WORDS = st.sampled_from(
    [
        "ImageId",
        "EncodedPixels",
        "Height",
        "Width",
        "Usage",
        "imageid",
        "",
        " ImageId ",
        '"ImageId"',
        "Encoded Pixels",
        "Score",
        "ImageId\x00",
    ]
)
FIELDS = st.one_of(
    rle_ish(),
    st.integers(-2, 20).map(str),
    st.sampled_from(["a", "b", " ", '"', '"a,b"', '"un', "''", "\x00", "é", "9" * 25, "Public"]),
    st.text(max_size=8),
)


@st.composite
def csv_garbage(draw) -> bytes:
    """CSV-shaped text: a header from the vocabulary (duplicates allowed, or the usual one), rows
    of plausible and implausible fields, any line ending, maybe a BOM, maybe broken UTF-8."""
    if draw(st.booleans()):
        header = draw(st.lists(HEADER_WORDS, max_size=6))
    else:
        optional = draw(st.sampled_from([[], ["Height", "Width"], ["Height", "Width", "Usage"]]))
        header = ["ImageId", "EncodedPixels", *optional]
    n_fields = len(header)
    rows = draw(
        st.lists(st.lists(FIELDS, min_size=max(0, n_fields - 1), max_size=n_fields + 1), max_size=6)
    )
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(",".join(row) for row in [header, *rows])
    if draw(st.booleans()):
        text += newline
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            + data[at:]
        )
    return data


@FUZZ
@given(data=st.one_of(csv_garbage(), st.binary(max_size=80)))
def test_read_rle_csv_raises_only_nucleuseg_errors(workdir, data):
    table = reject_cleanly(rle.read_rle_csv, fresh(workdir, ".csv", data))
    if table is None:
        return
    for image_id, entry in table.items():
        assert image_id and image_id == image_id.strip()
        assert all(entry.rles)
        if entry.shape is not None:
            labels = reject_cleanly(rle.labels_from_csv, entry, overlap="first")
            if labels is not None:
                assert labels.shape == entry.shape


# --------------------------------------------------------------------------- image files


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buffer, array, **options)
    else:
        Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _valid_images() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    mask = np.zeros((12, 10), np.uint8)
    mask[3:7, 2:6] = 255
    return [
        (".png", _encode(colour, "PNG")),
        (".png", _encode(mask, "PNG")),
        (".png", _encode(np.dstack([colour, mask]), "PNG")),
        (".png", _encode(rng.integers(0, 65536, (12, 10), dtype=np.uint16), "PNG")),
        (".bmp", _encode(colour, "BMP")),
        (".jpg", _encode(colour, "JPEG")),
        (".tif", _encode(colour, "TIFF", photometric="rgb")),
        (".tif", _encode(mask, "TIFF", compression="zlib")),
        (".tif", _encode(rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16), "TIFF")),
        (".tif", _encode(rng.integers(0, 65536, (12, 10), dtype=np.uint16), "TIFF", byteorder=">")),
    ]


VALID_IMAGES = _valid_images()
MAGICS = [b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"BM", b"\xff\xd8\xff", b""]


@st.composite
def mutated(draw, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A valid file truncated, with bytes flipped or overwritten, or with bytes inserted."""
    suffix, data = draw(st.sampled_from(seeds))
    data = bytearray(data)
    how = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "header"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[at] ^= draw(st.integers(1, 255))
    elif how == "overwrite":
        at = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        data[at : at + len(patch)] = patch
    elif how == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    else:  # damage the first 64 bytes, where the headers are
        for at in draw(st.lists(st.integers(0, min(63, len(data) - 1)), min_size=1, max_size=4)):
            data[at] = draw(st.integers(0, 255))
    return suffix, bytes(data)


@st.composite
def random_files(draw) -> tuple[str, bytes]:
    magic = draw(st.sampled_from(MAGICS))
    suffix = draw(st.sampled_from([".png", ".tif", ".jpg", ".bmp", ".PNG"]))
    return suffix, magic + draw(st.binary(max_size=120))


def _read_every_way(path: Path) -> None:
    image = reject_cleanly(images.read_image, path, max_pixels=100_000)
    if image is not None:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype in (np.uint8, np.uint16)
    mask = reject_cleanly(images.read_mask, path)
    if mask is not None:
        assert mask.dtype == bool and mask.ndim == 2 and mask.any() and not mask.all()
    reject_cleanly(images.read_mask, path, shape=(12, 10))
    labels = reject_cleanly(images.read_labels, path, max_pixels=100_000)
    if labels is not None:
        assert labels.dtype == np.int32 and labels.ndim == 2 and labels.min(initial=0) >= 0
    shape = reject_cleanly(images.image_shape, path)
    if shape is not None and image is not None:
        assert shape == image.shape[:2]


@FUZZ
@given(file=st.one_of(mutated(VALID_IMAGES), random_files()))
def test_image_readers_raise_only_nucleuseg_errors(workdir, file):
    suffix, data = file
    # read_mask has no size argument: a header mutated to claim millions of pixels must be
    # refused by size, not decoded, to keep the test fast.
    with mock.patch.object(images, "DEFAULT_MAX_PIXELS", 100_000):
        _read_every_way(fresh(workdir, suffix, data))


def test_every_seed_image_reads(workdir):
    """The mutations start from files that read."""
    for suffix, data in VALID_IMAGES:
        assert images.read_image(fresh(workdir, suffix, data)).shape == (12, 10, 3)


# --------------------------------------------------------------------------- model files


def _tiny_model(history_padding: int = 0) -> bytes:
    """The bytes of a valid model file; ``history_padding`` lengthens its JSON header."""
    preset = get_preset("default")
    preset = preset.replace(network=preset.network.replace(depth=2, base_filters=2))
    history = {"epochs": [], "stopped": "x" * history_padding}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        checkpoint.save_model(path, init_weights(preset.network, 0), preset, "torch", history)
        return path.read_bytes()


VALID_MODEL = _tiny_model()

JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated_metadata(draw) -> bytes:
    """The valid model with its JSON metadata changed: a value replaced by random JSON, a key
    dropped or added, a nested preset field retyped."""
    (length,) = struct.unpack("<Q", VALID_MODEL[:8])
    header = json.loads(VALID_MODEL[8 : 8 + length])
    metadata = dict(header["__metadata__"])
    key = draw(st.sampled_from([*sorted(metadata), "extra"]))
    how = draw(st.sampled_from(["replace", "drop", "preset-field"]))
    if how == "drop":
        metadata.pop(key, None)
    elif how == "replace":
        metadata[key] = json.dumps(draw(JSON_VALUES))
    else:
        preset = json.loads(metadata["preset"])
        section = draw(st.sampled_from(["network", "training", "inference"]))
        field = draw(st.sampled_from([*sorted(preset[section]), "bogus"]))
        preset[section][field] = draw(JSON_VALUES)
        metadata["preset"] = json.dumps(preset)
    header["__metadata__"] = metadata
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body + VALID_MODEL[8 + length :]


@FUZZ
@given(
    data=st.one_of(
        mutated([(".safetensors", VALID_MODEL)]).map(lambda f: f[1]),
        mutated_metadata(),
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: struct.pack("<Q", len(b)) + b),
    )
)
def test_load_model_raises_only_nucleuseg_errors(workdir, data):
    model = reject_cleanly(checkpoint.load_model, fresh(workdir, ".safetensors", data))
    if model is not None:
        from nucleuseg.training import History

        assert all(w.dtype.kind == "f" for w in model.weights.values())
        if model.history is not None:
            History.from_dict(model.history)


@settings(max_examples=40, deadline=None)
@given(padding=st.integers(0, 400))
def test_every_saved_model_loads(workdir, padding):
    """Whatever its header length (one of 32 starts with the byte 0x80, a pickle's first byte),
    a file save_model writes loads back."""
    path = fresh(workdir, ".safetensors", _tiny_model(padding))
    assert checkpoint.load_model(path).history["stopped"] == "x" * padding


def test_header_length_starting_like_a_pickle_loads(workdir):
    for padding in range(400):
        data = _tiny_model(padding)
        if data[0] == 0x80:
            break
    else:  # pragma: no cover
        pytest.fail("no padding gives a header length whose first byte is 0x80")
    model = checkpoint.load_model(fresh(workdir, ".safetensors", data))
    assert model.history["stopped"] == "x" * padding


# --------------------------------------------------------------------------- found by fuzzing


def test_single_sample_planar_tiff_reads_as_a_2d_image(tmp_path):
    """A one-sample TIFF whose page keeps its samples axis, (H, W, 1), used to come back as an
    (H, W, 3, 1) image and an (H, W, 1) mask."""
    gray = np.zeros((12, 10, 1), np.uint16)
    gray[2:5, 2:5] = 7
    tifffile.imwrite(tmp_path / "s.tif", gray, photometric="minisblack", planarconfig="separate")
    image = images.read_image(tmp_path / "s.tif")
    assert image.shape == (12, 10, 3) and image.dtype == np.uint16
    np.testing.assert_array_equal(image[..., 1], gray[..., 0])
    np.testing.assert_array_equal(images.read_mask(tmp_path / "s.tif"), gray[..., 0] > 0)
    assert images.read_labels(tmp_path / "s.tif").shape == (12, 10)


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="uses RLIMIT_AS")
def test_a_chunk_length_of_gigabytes_asks_for_no_memory(tmp_path):
    """A PNG whose IDAT chunk claims 3.7 GB used to make Pillow read that much in one call: a
    MemoryError under a memory limit (ulimit -v), a raw exception instead of a clean result."""
    data = bytearray(_encode(np.zeros((12, 10, 3), np.uint8), "PNG"))
    idat = data.index(b"IDAT")
    data[idat - 4 : idat] = struct.pack(">I", 3_690_987_903)
    path = tmp_path / "chunk.png"
    path.write_bytes(bytes(data))
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))\n"
        "from nucleuseg.data.images import read_image\n"
        "from nucleuseg.errors import NucleusegError\n"
        "try:\n"
        "    read_image(sys.argv[1])\n"
        "except NucleusegError:\n"
        "    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
