"""Predict any image size: pad to the network's multiple, tile large images, flip TTA.

The network is any callable ``predict(batch) -> probabilities`` on NHWC ``float32`` arrays
(a backend's :meth:`~nucleuseg.backends.base.Network.predict`). Images up to ``tile`` pixels on a
side are predicted whole; larger ones in overlapping tiles whose outputs are blended with weights
that fall off towards each tile's edge, so no seam shows. The tiles are no larger than the
image needs (:func:`fitted_tile`): an image a little over ``tile`` on a side is cut into tiles
of about half its side, not into full tiles that compute most of it twice. The pipeline around
this (normalisation, resizing, auto-scale, batches of images, post-processing) is
:mod:`nucleuseg.inference`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]

FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (False, True), (True, False), (True, True))

TILES_PER_CALL = 4
"""Tiles per network call in :func:`predict_tiled` (and the pixels of that many full tiles bound
the images per call of :func:`nucleuseg.inference.predict_batch`)."""


def padded_shape(height: int, width: int, multiple: int, minimum: int = 0) -> tuple[int, int]:
    """The ``(H, W)`` that :func:`pad_to_multiple` pads an ``height x width`` image to.

    Examples
    --------
    >>> padded_shape(5, 17, 16)
    (16, 32)
    """
    return (
        max(minimum, -(-height // multiple) * multiple),
        max(minimum, -(-width // multiple) * multiple),
    )


def pad_to_multiple(
    x: np.ndarray, multiple: int, minimum: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """Mirror-pad an ``(H, W, C)`` array on the bottom and right to a multiple of ``multiple``.

    Returns the padded array and the original ``(H, W)`` to crop back to.

    Examples
    --------
    >>> padded, shape = pad_to_multiple(np.zeros((5, 17, 3)), 16)
    >>> padded.shape, shape
    ((16, 32, 3), (5, 17))
    """
    height, width = x.shape[:2]
    target_h, target_w = padded_shape(height, width, multiple, minimum)
    padded = x
    # "symmetric" works for any size; repeat while the padding exceeds the image.
    while padded.shape[0] < target_h or padded.shape[1] < target_w:
        pad_h = min(target_h - padded.shape[0], padded.shape[0])
        pad_w = min(target_w - padded.shape[1], padded.shape[1])
        padded = np.pad(padded, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    return padded, (height, width)


def _stride(tile: int, overlap: int, multiple: int) -> int:
    """The longest step between tile starts, snapped to ``multiple``, that keeps ``overlap``."""
    return max(multiple, (tile - overlap) // multiple * multiple)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of the fewest tiles of size ``tile`` that cover ``length`` with at least
    ``overlap`` pixels shared by neighbours, spread evenly and snapped to ``multiple``.

    The overlap holds when ``length`` and ``tile`` are multiples of ``multiple`` (as they are in
    :func:`predict_tiled`, which pads the image first).

    Examples
    --------
    >>> tile_starts(1040, 512, 64, 16)
    [0, 256, 528]
    >>> tile_starts(300, 512, 64)
    [0]
    """
    if length <= tile:
        return [0]
    last = length - tile
    count = -(-last // _stride(tile, overlap, multiple)) + 1
    starts = [round(k * last / (count - 1)) // multiple * multiple for k in range(count - 1)]
    return [*starts, last]


def fitted_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The smallest tile side, a multiple of ``multiple`` and at most ``tile``, that covers
    ``length`` with as few tiles as ``tile`` itself needs (:func:`tile_starts`).

    A side a little longer than ``tile`` needs two tiles; two full tiles would compute almost
    twice its pixels, two fitted ones only the side plus the overlap. ``tile`` is assumed to be
    a multiple of ``multiple``.

    Examples
    --------
    >>> fitted_tile(1040, 1024, 64, 16)  # two tiles of 560, not two of 1024
    560
    >>> fitted_tile(600, 1024, 64, 16), fitted_tile(2048, 1024, 64, 16)
    (1024, 736)
    """
    if length <= tile:
        return tile
    count = len(tile_starts(length, tile, overlap, multiple))
    side = -(-length // count // multiple) * multiple
    while side < tile and side + (count - 1) * _stride(side, overlap, multiple) < length:
        side += multiple
    return min(side, tile)


def _blend_window(height: int, width: int, overlap: int) -> np.ndarray:
    def ramp(n: int) -> np.ndarray:
        r = np.ones(n, np.float32)
        if overlap:
            edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
            r[:overlap] = np.minimum(r[:overlap], edge)
            r[-overlap:] = np.minimum(r[-overlap:], edge[::-1])
        return r

    return np.outer(ramp(height), ramp(width))[..., None]


def tile_size(tile: int, multiple: int) -> int:
    """The tile side actually used: ``tile`` rounded down to a multiple of ``multiple``.

    An image whose padded sides are both at most this is predicted whole, in one window.

    Examples
    --------
    >>> tile_size(1000, 16), tile_size(8, 16)
    (992, 16)
    """
    return max(multiple, tile // multiple * multiple)


def predict_flips(predict: PredictFn, batch: np.ndarray, tta: bool = False) -> np.ndarray:
    """``predict(batch)``, or with ``tta`` the mean over the four flips of the batch.

    Each flipped prediction is flipped back before averaging, so the result lines up with
    ``batch``.

    Examples
    --------
    >>> net = lambda b: b[..., :1] * np.arange(b.shape[2])[None, None, :, None]  # a ramp
    >>> batch = np.ones((1, 2, 3, 3), np.float32)
    >>> predict_flips(net, batch)[0, 0, :, 0].tolist()
    [0.0, 1.0, 2.0]
    >>> predict_flips(net, batch, tta=True)[0, 0, :, 0].tolist()  # the flips average it away
    [1.0, 1.0, 1.0]
    """
    flips = FLIPS if tta else FLIPS[:1]
    probs = None
    for flip_y, flip_x in flips:
        axes = tuple(a for a, f in ((1, flip_y), (2, flip_x)) if f)
        flipped = np.flip(batch, axes) if axes else batch
        p = predict(np.ascontiguousarray(flipped))
        p = np.flip(p, axes) if axes else p
        probs = p if probs is None else probs + p
    return probs / len(flips)


def predict_tiled(
    predict: PredictFn,
    x: np.ndarray,
    multiple: int,
    tile: int = 512,
    overlap: int = 64,
    tta: bool = False,
    batch_size: int = TILES_PER_CALL,
) -> np.ndarray:
    """Probabilities for one normalised ``(H, W, C)`` image of any size.

    Parameters
    ----------
    predict : callable
        NHWC batch -> NHWC probabilities, for inputs whose sides are multiples of ``multiple``.
    x : numpy.ndarray
        ``(H, W, C)`` ``float32`` image.
    multiple : int
        The network's size multiple (``2 ** (depth - 1)``).
    tile, overlap : int
        Tile side and overlap for images larger than ``tile``; ``tile`` is rounded down to a
        multiple of ``multiple``.
    tta : bool
        Average over the four flips.
    batch_size : int
        Tiles per network call.

    Examples
    --------
    >>> identity = lambda batch: batch[..., :1]
    >>> out = predict_tiled(identity, np.random.rand(70, 45, 3).astype(np.float32), 16, tile=32, overlap=8)
    >>> out.shape
    (70, 45, 1)
    """
    tile = tile_size(tile, multiple)
    padded, (height, width) = pad_to_multiple(x, multiple)
    ph, pw = padded.shape[:2]
    tile_h = min(ph, fitted_tile(ph, tile, overlap, multiple))
    tile_w = min(pw, fitted_tile(pw, tile, overlap, multiple))
    ys = tile_starts(ph, tile_h, overlap, multiple)
    xs = tile_starts(pw, tile_w, overlap, multiple)
    windows = [(y, x0) for y in ys for x0 in xs]
    if len(windows) == 1:
        weight = np.ones((tile_h, tile_w, 1), np.float32)
    else:
        weight = _blend_window(tile_h, tile_w, overlap)

    out = None
    total = np.zeros((ph, pw, 1), np.float32)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        batch = np.stack([padded[y : y + tile_h, x0 : x0 + tile_w] for y, x0 in chunk])
        probs = predict_flips(predict, batch, tta)
        if out is None:
            out = np.zeros((ph, pw, probs.shape[-1]), np.float32)
        for (y, x0), p in zip(chunk, probs, strict=True):
            out[y : y + tile_h, x0 : x0 + tile_w] += p * weight
            total[y : y + tile_h, x0 : x0 + tile_w] += weight
    return (out / total)[:height, :width]
