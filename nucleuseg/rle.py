"""Kaggle run-length encoding of masks and label images, and the DSB 2018 CSV files.

Kaggle numbers the pixels of an ``(H, W)`` image from 1, top to bottom then left to right
(column-major, ``order="F"``). A mask is written as space-separated pairs ``start length``:
starts ascending, runs non-overlapping. :func:`encode` always merges touching runs, so a mask has
exactly one encoding; :func:`decode` also accepts adjacent runs.

Two CSV layouts carry these strings, one row per nucleus:

- the submission ``ImageId,EncodedPixels``; an image with no nuclei has one row with an empty
  ``EncodedPixels``;
- the solution / labels file ``ImageId,EncodedPixels,Height,Width[,Usage]``.

:func:`read_rle_csv` reads both; :func:`write_submission` and :func:`write_solution` write them.

Examples
--------
>>> import numpy as np
>>> labels = np.array([[0, 1, 1],
...                    [2, 1, 0],
...                    [2, 0, 0]])
>>> encode_labels(labels)
{1: '4 2 7 1', 2: '2 2'}
>>> decode_labels(["4 2 7 1", "2 2"], (3, 3))
array([[0, 1, 1],
       [2, 1, 0],
       [2, 0, 0]], dtype=int32)
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nucleuseg._atomic import atomic_write
from nucleuseg.errors import CSVFormatError, InputError, MaskOverlapError, RLEError, clip
from nucleuseg.masks import check_labels

__all__ = [
    "MAX_PIXELS",
    "RLEImage",
    "decode",
    "decode_labels",
    "encode",
    "encode_labels",
    "labels_from_csv",
    "read_rle_csv",
    "write_solution",
    "write_submission",
]

RLEOverlapPolicy = Literal["error", "first", "last"]
"""How :func:`decode_labels` resolves encodings that share pixels: the policies of
:data:`nucleuseg.masks.MaskOverlapPolicy` that need no mask areas, with the same meanings."""
_OVERLAP_POLICIES = ("error", "first", "last")

_REQUIRED_COLUMNS = ("ImageId", "EncodedPixels")
_OPTIONAL_COLUMNS = ("Height", "Width", "Usage")
_VALID_RLE = re.compile(r"\s*(?:[+-]?[0-9]+(?:\s+[+-]?[0-9]+)*)?\s*", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_MAX_DIGITS = 18  # anything longer cannot be a pixel index of an image that fits in memory
MAX_PIXELS = 2**31 - 1
"""Largest ``H * W`` an encoding may describe: pixel indices and label ids stay in ``int32``."""


# --------------------------------------------------------------------------- single masks


def encode(mask: np.ndarray) -> str:
    """Run-length encode one binary mask the way Kaggle does.

    Parameters
    ----------
    mask : (H, W) array
        Boolean mask, or a numeric array holding only 0 and 1.

    Returns
    -------
    str
        Space-separated ``start length`` pairs, 1-based, column-major; ``""`` for an empty mask.

    Raises
    ------
    InputError
        If ``mask`` is not 2-D or holds values other than 0 and 1 (for a label image with several
        nuclei use :func:`encode_labels`).

    Examples
    --------
    >>> import numpy as np
    >>> encode(np.array([[1, 0, 1],
    ...                  [1, 0, 1],
    ...                  [0, 0, 1]], bool))
    '1 2 7 3'
    >>> encode(np.zeros((2, 2), bool))
    ''
    """
    mask = _check_mask(mask)
    flat = mask.ravel(order="F")
    padded = np.concatenate(([False], flat, [False])).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    starts, ends = change[0::2], change[1::2]
    return _join_runs(starts + 1, ends - starts)


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode one Kaggle run-length encoding into a boolean mask.

    Parameters
    ----------
    rle : str
        Space-separated ``start length`` pairs (1-based, column-major, starts ascending,
        non-overlapping). An empty or all-whitespace string is an empty mask.
    shape : (int, int)
        ``(H, W)`` of the image.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` boolean mask.

    Raises
    ------
    RLEError
        If a token is not an integer, the count of numbers is odd, a start or length is below 1,
        starts are not ascending, two runs overlap, or a run ends beyond ``H * W``.
    InputError
        If ``shape`` is not two non-negative integers or has more than :data:`MAX_PIXELS`
        pixels.

    Examples
    --------
    >>> decode("1 2 7 3", (3, 3)).astype(int)
    array([[1, 0, 1],
           [1, 0, 1],
           [0, 0, 1]])
    >>> decode("5 10", (3, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nucleuseg.errors.RLEError: run 1 (start 5, length 10) ends at pixel 14 beyond the 9 pixels ...
    """
    height, width = _check_shape(shape)
    starts, lengths = _parse_runs(rle, (height, width))
    flat = np.zeros(height * width, bool)
    flat[_expand_runs(starts, lengths)] = True
    return flat.reshape((height, width), order="F")


# --------------------------------------------------------------------------- label images


def encode_labels(labels: np.ndarray) -> dict[int, str]:
    """Run-length encode every nucleus of a label image in one pass.

    Parameters
    ----------
    labels : (H, W) integer array
        0 is background, each positive id one nucleus (ids need not be sequential). A boolean
        array is one nucleus with id 1.

    Returns
    -------
    dict of int to str
        One encoding per nucleus, keyed and ordered by label id.

    Raises
    ------
    InputError
        If ``labels`` is not a 2-D non-negative integer (or boolean) array.

    Examples
    --------
    >>> import numpy as np
    >>> encode_labels(np.array([[7, 0], [7, 3]]))
    {3: '4 1', 7: '1 2'}
    """
    labels = check_labels(labels, "labels")
    if labels.size == 0:
        return {}
    # A run is a vertical stretch of one nucleus in Kaggle's column-major pixel order: it starts
    # at a nucleus pixel that differs from the one above it (at the top of a column: from the
    # bottom of the previous column) and ends at one that differs from the one below it. Both
    # masks are computed in the array's own row-major order and only their set pixels are read
    # (a transposed copy of the image would cost more than all the rest); sorting the starts and
    # the ends by (label, column-major index) pairs them up, each label's runs in pixel order.
    same = labels[1:] == labels[:-1]
    wrap = labels[0, 1:] == labels[-1, :-1]
    starts = labels != 0
    ends = starts.copy()
    starts[1:] &= ~same
    starts[0, 1:] &= ~wrap
    ends[:-1] &= ~same
    ends[-1, :-1] &= ~wrap
    first, last = np.flatnonzero(starts), np.flatnonzero(ends)
    if first.size == 0:
        return {}
    flat = labels.ravel()
    run_ids, run_starts = _by_label(flat[first], _column_major(first, labels.shape))
    _, run_ends = _by_label(flat[last], _column_major(last, labels.shape))
    run_lengths = run_ends - run_starts + 1
    run_starts += 1
    label_first = np.flatnonzero(np.concatenate(([True], run_ids[1:] != run_ids[:-1])))
    label_end = np.append(label_first[1:], run_ids.size)
    # All the numbers as one text, each followed by a space; a nucleus's encoding is the slice
    # from the end of the number before its first run to the end of its last run, less the space.
    text, number_ends = _decimal_text(np.stack([run_starts, run_lengths], axis=1).ravel())
    first_char = np.concatenate(([0], number_ends))[2 * label_first]
    last_char = number_ends[2 * label_end - 1] - 1
    return {
        label: text[a:b]
        for label, a, b in zip(
            run_ids[label_first].tolist(), first_char.tolist(), last_char.tolist(), strict=True
        )
    }


def _column_major(indices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Row-major flat indices of an ``shape`` array as column-major ones."""
    rows, columns = np.divmod(indices, shape[1])
    return columns * shape[0] + rows


def _by_label(ids: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` and ``positions`` (non-negative) sorted by id, then by position."""
    if int(ids.max()) < 2**31 and int(positions.max()) < 2**32:  # one sort of combined keys
        keys = np.sort(ids.astype(np.int64) << 32 | positions)
        return keys >> 32, keys & 0xFFFFFFFF
    order = np.lexsort((positions, ids))
    return ids[order].astype(np.int64), positions[order]


def _decimal_text(values: np.ndarray) -> tuple[str, np.ndarray]:
    """Non-negative integers as one ASCII text, each followed by a space, and where each ends.

    Formats the digits with array operations rather than one ``str`` per number: the encodings
    of a label image hold tens of thousands of numbers.

    Examples
    --------
    >>> _decimal_text(np.array([7, 120, 0, 45]))
    ('7 120 0 45 ', array([ 2,  6,  8, 11]))
    """
    values = np.asarray(values)
    if values.size == 0:
        return "", np.zeros(0, np.int64)
    largest = int(values.max())
    values = values.astype(np.uint32 if largest < 2**32 else np.uint64)  # 32-bit divides faster
    width = len(str(largest))
    chars = np.empty((values.size, width + 1), np.uint8)
    chars[:, width] = ord(" ")
    rest = values.copy()
    for column in range(width - 1, -1, -1):  # the last digit first
        quotient = rest // 10
        chars[:, column] = rest - quotient * 10 + ord("0")
        rest = quotient
    digits = np.ones(values.size, np.int64)
    for power in range(1, width):
        digits += values >= 10**power
    keep = np.arange(width + 1) >= (width - digits)[:, None]  # no leading zeros; the space
    text = chars[keep].tobytes().decode("ascii")
    return text, np.cumsum(digits + 1)


def decode_labels(
    rles: Sequence[str],
    shape: tuple[int, int],
    overlap: RLEOverlapPolicy = "error",
) -> np.ndarray:
    """Decode a list of per-nucleus encodings into one label image.

    Encoding ``k`` (0-based) becomes label ``k + 1``.

    Parameters
    ----------
    rles : sequence of str
        One non-empty encoding per nucleus.
    shape : (int, int)
        ``(H, W)`` of the image.
    overlap : {"error", "first", "last"}
        Where two encodings share pixels: raise :class:`~nucleuseg.errors.MaskOverlapError`, or
        give the pixels to the first / last of them in list order.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` ``int32`` label image.

    Raises
    ------
    RLEError
        If an encoding is malformed, empty or does not fit ``shape``.
    MaskOverlapError
        If two encodings overlap and ``overlap="error"``.

    Examples
    --------
    >>> decode_labels(["1 3", "3 2"], (2, 2), overlap="last")
    array([[1, 2],
           [1, 2]], dtype=int32)
    >>> decode_labels(["1 3", "3 2"], (2, 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nucleuseg.errors.MaskOverlapError: RLE 2 overlaps RLE 1 on 1 pixel(s), first at pixel 3 ...
    """
    if overlap not in _OVERLAP_POLICIES:
        raise InputError(f"overlap must be one of {_OVERLAP_POLICIES}, got {overlap!r}")
    if isinstance(rles, str):
        raise InputError("rles must be a sequence of strings, one per nucleus, not one string")
    height, width = _check_shape(shape)
    pixels, owners = [], []
    for k, rle in enumerate(rles):
        if not isinstance(rle, str):
            raise InputError(f"rles[{k}] must be a string, got {type(rle).__name__}")
        try:
            starts, lengths = _parse_runs(rle, (height, width))
        except RLEError as err:
            raise RLEError(f"RLE {k + 1}: {err}") from None
        if starts.size == 0:
            raise RLEError(f"RLE {k + 1} is empty; each encoding must describe one nucleus")
        idx = _expand_runs(starts, lengths)
        pixels.append(idx)
        owners.append(np.full(idx.size, k + 1, np.int32))
    flat = np.zeros(height * width, np.int32)
    if pixels:
        pix = np.concatenate(pixels)
        own = np.concatenate(owners)
        if overlap == "last":
            pix, own = pix[::-1], own[::-1]
        # np.unique gives each pixel's first occurrence: its first (or, reversed, last) owner.
        unique, first = np.unique(pix, return_index=True)
        if overlap == "error" and unique.size != pix.size:
            _raise_overlap(pix, own)
        flat[unique] = own[first]
    return flat.reshape((height, width), order="F")


def _raise_overlap(pixels: np.ndarray, owners: np.ndarray) -> None:
    """Raise MaskOverlapError naming the first overlapping pair of encodings."""
    order = np.argsort(pixels, kind="stable")
    pix, own = pixels[order], owners[order]
    dup = np.flatnonzero(pix[1:] == pix[:-1])
    pairs = np.stack([own[dup], own[dup + 1]], axis=1)
    # Report the pair whose later encoding comes first; count its shared pixels.
    first = np.lexsort((pairs[:, 0], pairs[:, 1]))[0]
    a, b = pairs[first]
    same = (pairs[:, 0] == a) & (pairs[:, 1] == b)
    where = int(pix[dup[same]].min()) + 1
    raise MaskOverlapError(
        f"RLE {b} overlaps RLE {a} on {int(same.sum())} pixel(s), first at pixel {where} "
        "(overlap policy 'error'; choose 'first' or 'last')"
    )


# --------------------------------------------------------------------------- CSV files


@dataclass(frozen=True)
class RLEImage:
    """The encodings of one image read from a CSV.

    Attributes
    ----------
    rles : tuple of str
        One encoding per nucleus, in file order; empty for an image listed with no nuclei.
    shape : (int, int) or None
        ``(Height, Width)`` when the file gives them, else ``None``.
    """

    rles: tuple[str, ...]
    shape: tuple[int, int] | None = None


def read_rle_csv(path: str | os.PathLike) -> dict[str, RLEImage]:
    """Read a submission or solution CSV.

    Accepts ``ImageId,EncodedPixels`` with the optional columns ``Height``, ``Width`` (both or
    neither) and ``Usage`` (ignored), in any order. A UTF-8 byte-order mark and CRLF line ends are
    fine. A row with an empty ``EncodedPixels`` lists an image with no nuclei. Every encoding is
    checked when read: syntax, ascending starts and non-overlapping runs, and whether it fits the
    image when ``Height`` and ``Width`` are given. Overlaps between different rows of one image
    are left to :func:`decode_labels`.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.

    Returns
    -------
    dict of str to RLEImage
        Images in order of first appearance.

    Raises
    ------
    CSVFormatError
        If the file is missing or unreadable, not UTF-8 or not CSV; and naming the line: a
        missing, unknown or repeated column; a row with the wrong number of fields; an empty
        ImageId; a Height/Width that is not a positive integer, too large, or differs between
        rows of one image; a malformed encoding.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sub.csv"
    >>> _ = path.write_text("ImageId,EncodedPixels\\na,1 2 7 3\\na,4 2\\nb,\\n")
    >>> read_rle_csv(path)
    {'a': RLEImage(rles=('1 2 7 3', '4 2'), shape=None), 'b': RLEImage(rles=(), shape=None)}
    """
    path = Path(path)
    images: dict[str, list[str]] = {}
    shapes: dict[str, tuple[tuple[int, int], int]] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if header is None:
                raise CSVFormatError(f"{path}: the file is empty; expected a header row")
            columns = _check_header(header, path)
            n_fields = len(header)
            image_col, rle_col = columns["ImageId"], columns["EncodedPixels"]
            height_col, width_col = columns.get("Height"), columns.get("Width")
            for row in reader:
                line = reader.line_num
                if all(not field.strip() for field in row):
                    continue
                if len(row) != n_fields:
                    raise CSVFormatError(
                        f"{path}:{line}: expected {n_fields} fields like the header, got {len(row)}"
                    )
                image_id = row[image_col].strip()
                if not image_id:
                    raise CSVFormatError(f"{path}:{line}: empty ImageId")
                shape = None
                if height_col is not None and width_col is not None:
                    shape = (
                        _positive_int(row[height_col], "Height", path, line),
                        _positive_int(row[width_col], "Width", path, line),
                    )
                    if shape[0] * shape[1] > MAX_PIXELS:
                        raise CSVFormatError(
                            f"{path}:{line}: Height,Width {shape[0]},{shape[1]} give more than "
                            f"{MAX_PIXELS} pixels"
                        )
                    seen = shapes.setdefault(image_id, (shape, line))
                    if seen[0] != shape:
                        raise CSVFormatError(
                            f"{path}:{line}: image {image_id!r} has Height,Width {shape[0]},"
                            f"{shape[1]} but {seen[0][0]},{seen[0][1]} on line {seen[1]}"
                        )
                rle = " ".join(row[rle_col].split())
                rles = images.setdefault(image_id, [])
                if rle:
                    try:
                        _parse_runs(rle, shape)
                    except RLEError as err:
                        raise CSVFormatError(
                            f"{path}:{line}: EncodedPixels of image {image_id!r}: {err}"
                        ) from None
                    rles.append(rle)
    except UnicodeDecodeError as err:
        raise CSVFormatError(f"{path}: not valid UTF-8 text ({err})") from None
    except csv.Error as err:
        raise CSVFormatError(f"{path}: malformed CSV ({err})") from None
    except FileNotFoundError:
        raise CSVFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CSVFormatError(f"{path}: a folder, not a CSV file") from None
    except OSError as err:
        raise CSVFormatError(f"{path}: cannot read the file ({err.strerror or err})") from None
    return {
        image_id: RLEImage(tuple(rles), shapes[image_id][0] if image_id in shapes else None)
        for image_id, rles in images.items()
    }


def write_submission(predictions: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write predicted label images as a Kaggle submission ``ImageId,EncodedPixels``.

    One row per nucleus, ordered by label id; an image with no nuclei gets one row with an empty
    ``EncodedPixels``. Image ids are sorted. The file is written atomically.

    Parameters
    ----------
    predictions : mapping of str to (H, W) integer array
        Label image per image id.
    path : str or os.PathLike
        The CSV to write.

    Raises
    ------
    InputError
        If ``predictions`` is not a mapping, an id is not a non-empty string, a label image is
        invalid, or the folder of ``path`` does not exist.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "submission.csv"
    >>> write_submission({"b": np.zeros((2, 2), int), "a": np.array([[1, 0], [2, 2]])}, path)
    >>> print(path.read_text(), end="")
    ImageId,EncodedPixels
    a,1 1
    a,2 1 4 1
    b,
    """
    _write_csv(predictions, path, with_shape=False, argument="predictions")


def write_solution(labels: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write ground-truth label images as a solution CSV ``ImageId,EncodedPixels,Height,Width``.

    The same rows as :func:`write_submission`, with each image's shape added, so the file can be
    decoded without the images.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "solution.csv"
    >>> write_solution({"a": np.array([[0, 1, 1]])}, path)
    >>> read_rle_csv(path)
    {'a': RLEImage(rles=('2 2',), shape=(1, 3))}
    """
    _write_csv(labels, path, with_shape=True, argument="labels")


def labels_from_csv(
    entry: RLEImage,
    shape: tuple[int, int] | None = None,
    overlap: RLEOverlapPolicy = "error",
) -> np.ndarray:
    """Decode one image of :func:`read_rle_csv` into a label image.

    Parameters
    ----------
    entry : RLEImage
        The image's encodings.
    shape : (int, int), optional
        ``(H, W)``; taken from ``entry.shape`` when not given. Required for submission files,
        which carry no shape.
    overlap : {"error", "first", "last"}
        See :func:`decode_labels`.

    Raises
    ------
    InputError
        If neither ``shape`` nor ``entry.shape`` is known, or they disagree.

    Examples
    --------
    >>> labels_from_csv(RLEImage(("1 1", "4 1"), (2, 2)))
    array([[1, 0],
           [0, 2]], dtype=int32)
    """
    if shape is None:
        if entry.shape is None:
            raise InputError("shape is required: this entry (from a submission CSV) has none")
        shape = entry.shape
    elif entry.shape is not None and tuple(shape) != tuple(entry.shape):
        raise InputError(f"shape {tuple(shape)} differs from the CSV's Height,Width {entry.shape}")
    return decode_labels(entry.rles, shape, overlap=overlap)


# --------------------------------------------------------------------------- helpers


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"mask must be a 2-D array, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise InputError(f"mask must be boolean or numeric, got dtype {mask.dtype}")
    outside = (mask != 0) & (mask != 1)
    if outside.any():
        bad = mask[outside].flat[0]
        raise InputError(
            f"mask must hold only 0 and 1, found {bad}; "
            "use encode_labels for a label image with several nuclei"
        )
    return mask.astype(bool)


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in shape)
        valid = all(int(s) == s for s in shape) and height >= 0 and width >= 0
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise InputError(f"shape must be two non-negative integers (H, W), got {shape!r}")
    if height * width > MAX_PIXELS:
        raise InputError(
            f"shape {height}x{width} has {height * width} pixels, more than an RLE can address "
            f"(MAX_PIXELS={MAX_PIXELS})"
        )
    return height, width


def _parse_runs(rle: str, shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an encoding; return 0-based starts and lengths (int64).

    Runs are numbered from 1 and tokens from 1 in the messages. ``shape=None`` skips the range
    check.
    """
    if not isinstance(rle, str):
        raise RLEError(f"an RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if not tokens:
        empty = np.zeros(0, np.int64)
        return empty, empty
    if not _VALID_RLE.fullmatch(rle) or any(len(t) > _MAX_DIGITS for t in tokens):
        for i, token in enumerate(tokens):
            if not _INTEGER.fullmatch(token):
                raise RLEError(f"token {i + 1} ({clip(token)!r}) is not an integer")
            if len(token) > _MAX_DIGITS:
                raise RLEError(f"token {i + 1} ({clip(token)}) is too large for a pixel index")
    if len(tokens) % 2:
        raise RLEError(
            f"{len(tokens)} numbers: an RLE is start/length pairs, so the count must be even"
        )
    values = np.array(tokens).astype(np.int64).reshape(-1, 2)
    starts, lengths = values[:, 0], values[:, 1]

    def run(i: int) -> str:
        return f"run {i + 1} (start {starts[i]}, length {lengths[i]})"

    bad = np.flatnonzero(starts < 1)
    if bad.size:
        raise RLEError(f"{run(bad[0])}: starts are 1-based, so a start must be at least 1")
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        raise RLEError(f"{run(bad[0])}: a length must be at least 1")
    ends = starts + lengths - 1  # last pixel of each run, 1-based
    bad = np.flatnonzero(starts[1:] < starts[:-1])
    if bad.size:
        i = bad[0] + 1
        raise RLEError(f"{run(i)} starts before {run(i - 1)}: starts must be ascending")
    bad = np.flatnonzero(starts[1:] <= ends[:-1])
    if bad.size:
        i = bad[0] + 1
        raise RLEError(f"{run(i)} overlaps {run(i - 1)}, which ends at pixel {ends[i - 1]}")
    if shape is not None:
        n_pixels = shape[0] * shape[1]
        bad = np.flatnonzero(ends > n_pixels)
        if bad.size:
            i = bad[0]
            raise RLEError(
                f"{run(i)} ends at pixel {ends[i]} beyond the {n_pixels} pixels "
                f"of a {shape[0]}x{shape[1]} image"
            )
    return starts - 1, lengths


def _expand_runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat 0-based pixel indices covered by runs (``starts`` 0-based)."""
    if starts.size == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths  # position of each run's first pixel in the output
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


def _join_runs(starts: np.ndarray, lengths: np.ndarray) -> str:
    text, _ = _decimal_text(np.stack([starts, lengths], axis=1).ravel())
    return text[:-1]  # less the space after the last number


def _check_header(header: list[str], path: Path) -> dict[str, int]:
    names = [name.strip() for name in header]
    columns: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in columns:
            raise CSVFormatError(f"{path}:1: column {name!r} appears twice in the header")
        if name not in _REQUIRED_COLUMNS + _OPTIONAL_COLUMNS:
            raise CSVFormatError(
                f"{path}:1: unknown column {name!r}; expected ImageId,EncodedPixels "
                "and optionally Height,Width,Usage"
            )
        columns[name] = i
    missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise CSVFormatError(
            f"{path}:1: missing column(s) {', '.join(missing)}; header is {','.join(names)}"
        )
    if ("Height" in columns) != ("Width" in columns):
        have, lack = ("Height", "Width") if "Height" in columns else ("Width", "Height")
        raise CSVFormatError(f"{path}:1: column {have} without {lack}; give both or neither")
    return columns


def _positive_int(field: str, name: str, path: Path, line: int) -> int:
    text = field.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS or int(text) < 1:
        raise CSVFormatError(
            f"{path}:{line}: {name} must be a positive integer, got {clip(field)!r}"
        )
    return int(text)


def _write_csv(
    images: Mapping[str, np.ndarray], path: str | os.PathLike, *, with_shape: bool, argument: str
) -> None:
    if not isinstance(images, Mapping):
        raise InputError(
            f"{argument} must be a mapping of image id to label image, got {type(images).__name__}"
        )
    folder = Path(path).parent
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist")
    rows: list[list[str]] = []
    for image_id in _sorted_ids(images, argument):
        labels = check_labels(images[image_id], f"{argument}[{image_id!r}]")
        extra = [str(labels.shape[0]), str(labels.shape[1])] if with_shape else []
        rles = encode_labels(labels)
        if not rles:
            rows.append([image_id, "", *extra])
        rows.extend([image_id, rle, *extra] for rle in rles.values())
    header = ["ImageId", "EncodedPixels"] + (["Height", "Width"] if with_shape else [])
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _sorted_ids(images: Mapping[str, np.ndarray], argument: str) -> list[str]:
    for image_id in images:
        if not isinstance(image_id, str) or not image_id.strip() or image_id != image_id.strip():
            raise InputError(
                f"{argument} keys must be non-empty image ids without surrounding spaces, "
                f"got {image_id!r}"
            )
    return sorted(images)
