"""Label images and per-nucleus masks: merge, split, relabel, boundaries and training targets.

A *label image* is an ``(H, W)`` ``int32`` array, 0 for background and one positive id per
nucleus. Kaggle ships one binary mask per nucleus; :func:`merge_masks` turns them into a label
image under an explicit overlap policy, :func:`split_labels` goes back.

The U-Net learns :func:`make_targets`: a foreground channel, the inner contour of every nucleus
and the *touching* channel that marks where two nuclei meet. Post-processing subtracts the last two
from the foreground to get one seed per nucleus and grows them back by watershed
(:mod:`nucleuseg.postprocess`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from nucleuseg.errors import InputError, MaskOverlapError

MaskOverlapPolicy = Literal["error", "first", "last", "smallest", "largest"]
"""How :func:`merge_masks` resolves masks that share pixels (see its ``overlap``)."""
OVERLAP_POLICIES: tuple[str, ...] = ("error", "first", "last", "smallest", "largest")
"""The values of :data:`MaskOverlapPolicy`."""

TARGET_CHANNELS: tuple[str, ...] = ("foreground", "contour", "touching")
"""Names of the channels :func:`make_targets` returns, in order."""


def check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Validate a label image and return it as ``int32``.

    Raises
    ------
    InputError
        If ``labels`` is not 2-D, not integer or boolean, negative, or too large for int32.

    Examples
    --------
    >>> check_labels(np.array([[0, 2], [2, 0]], np.uint8)).dtype
    dtype('int32')
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"{name} must be a 2-D label image, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.astype(np.int32)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError(f"{name} has negative labels (min {labels.min()}); 0 is background")
    if labels.size and labels.max() > np.iinfo(np.int32).max:
        raise InputError(f"{name} has labels beyond int32 (max {labels.max()})")
    return labels.astype(np.int32, copy=False)


def merge_masks(
    masks: Sequence[np.ndarray] | np.ndarray,
    overlap: MaskOverlapPolicy = "error",
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Merge per-nucleus binary masks into one label image.

    Mask ``k`` (0-based) becomes label ``k + 1``.

    Parameters
    ----------
    masks : sequence of (H, W) arrays or (N, H, W) array
        One binary mask per nucleus (any nonzero value is foreground).
    overlap : {"error", "first", "last", "smallest", "largest"}
        What to do where masks overlap. ``"error"`` raises :class:`MaskOverlapError`; the others
        give the shared pixels to the first / last mask in order, or to the smallest / largest
        mask by area (ties go to the earlier mask).
    shape : (int, int), optional
        Shape of the result when ``masks`` is empty.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` ``int32`` label image.

    Examples
    --------
    >>> a = np.array([[1, 1, 0], [0, 0, 0]], bool)
    >>> b = np.array([[0, 1, 1], [0, 0, 1]], bool)
    >>> merge_masks([a, b], overlap="first")
    array([[1, 1, 2],
           [0, 0, 2]], dtype=int32)
    """
    if overlap not in OVERLAP_POLICIES:
        raise InputError(f"overlap must be one of {OVERLAP_POLICIES}, got {overlap!r}")
    if len(masks) == 0:
        if shape is None:
            raise InputError("merge_masks needs `shape` when there are no masks")
        return np.zeros(shape, np.int32)
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InputError(f"masks must all be 2-D with one shape, got shapes {sorted(shapes)}")
    height, width = next(iter(shapes))
    flat = [np.flatnonzero(np.asarray(m)) for m in masks]
    order = np.arange(len(flat))
    if overlap == "last":
        order = order[::-1]
    elif overlap in ("smallest", "largest"):
        areas = np.array([f.size for f in flat])
        order = np.argsort(areas if overlap == "smallest" else -areas, kind="stable")
    labels = np.zeros(height * width, np.int32)
    for k in order:
        idx = flat[k]
        taken = labels[idx]
        if overlap == "error" and taken.any():
            other = int(taken[taken > 0][0])
            raise MaskOverlapError(
                f"mask {k} overlaps mask {other - 1} on {int((taken > 0).sum())} pixels "
                "(overlap policy 'error'; choose 'first', 'last', 'smallest' or 'largest')"
            )
        labels[idx[taken == 0]] = k + 1
    return labels.reshape(height, width)


def split_labels(labels: np.ndarray) -> np.ndarray:
    """Split a label image into one boolean mask per nucleus, ordered by label id.

    Examples
    --------
    >>> split_labels(np.array([[0, 5], [3, 5]])).astype(int)
    array([[[0, 0],
            [1, 0]],
    <BLANKLINE>
           [[0, 1],
            [0, 1]]])
    """
    labels = check_labels(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    return labels[None, :, :] == ids[:, None, None]


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber a label image to ``1..N`` keeping the order of the original ids.

    Examples
    --------
    >>> relabel_sequential(np.array([[0, 7], [7, 3]]))
    array([[0, 2],
           [2, 1]], dtype=int32)
    """
    labels = check_labels(labels)
    if labels.size == 0:
        return labels.copy()
    top = int(labels.max())
    if top > 4 * labels.size:  # sparse ids: a lookup table would dwarf the image
        ids, inverse = np.unique(labels, return_inverse=True)
        offset = 0 if ids[0] == 0 else 1
        return (inverse.reshape(labels.shape) + offset).astype(np.int32)
    # A lookup table over 0..max: linear in the pixels, where sorting them is not.
    present = np.zeros(top + 1, bool)
    present[labels] = True
    present[0] = False
    lookup = np.cumsum(present, dtype=np.int32)
    return lookup[labels]


def boundaries(
    labels: np.ndarray, mode: Literal["inner", "outer", "thick"] = "inner"
) -> np.ndarray:
    """Boolean map of the pixels on the boundary of a nucleus.

    ``"inner"`` marks nucleus pixels with a 4-neighbour of another label (or background);
    ``"outer"`` marks the pixels just outside; ``"thick"`` marks both.

    Examples
    --------
    >>> boundaries(np.pad(np.ones((3, 3), int), 1)).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 0, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """
    labels = check_labels(labels)
    padded = np.pad(labels, 1, mode="edge")
    center = padded[1:-1, 1:-1]
    differs = np.zeros(labels.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] != center
    inner = differs & (labels > 0)
    if mode == "inner":
        return inner
    grown = ndi.binary_dilation(inner)
    outer = grown & ~(labels > 0) | (differs & (labels == 0))
    if mode == "outer":
        return outer
    if mode == "thick":
        return inner | outer
    raise InputError(f"mode must be 'inner', 'outer' or 'thick', got {mode!r}")


def touching(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of two different nuclei: contacts and narrow gaps.

    These are the pixels a foreground threshold cannot split; the U-Net learns them so that
    post-processing can cut touching nuclei apart.

    Examples
    --------
    >>> lab = np.zeros((5, 8), int); lab[1:4, 1:4] = 1; lab[1:4, 4:7] = 2
    >>> touching(lab, radius=1)[2].astype(int)
    array([0, 0, 0, 1, 1, 0, 0, 0])
    """
    labels = check_labels(labels)
    size = 2 * radius + 1
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    footprint = (yy**2 + xx**2) <= radius**2 + radius  # a disk, a little fuller than Euclidean
    assert footprint.shape == (size, size)
    big = np.iinfo(np.int32).max
    highest = ndi.maximum_filter(labels, footprint=footprint, mode="constant", cval=0)
    lowest = ndi.minimum_filter(
        np.where(labels > 0, labels, big), footprint=footprint, mode="constant", cval=big
    )
    return (highest > 0) & (lowest < big) & (highest != lowest)


def make_targets(labels: np.ndarray, channels: int = 3, touch_radius: int = 2) -> np.ndarray:
    """The U-Net's training targets for one label image, ``(H, W, channels)`` ``float32``.

    Channel 0 is the foreground. With ``channels=3`` channel 1 is the inner contour of every
    nucleus and channel 2 the touching map (:func:`touching`), see :data:`TARGET_CHANNELS`.

    Examples
    --------
    >>> lab = np.zeros((6, 6), int); lab[1:5, 1:3] = 1; lab[1:5, 3:5] = 2
    >>> t = make_targets(lab)
    >>> t.shape, t.dtype, int(t[..., 0].sum()), bool(t[2, 2, 2])
    ((6, 6, 3), dtype('float32'), 16, True)
    """
    labels = check_labels(labels)
    if channels not in (1, 3):
        raise InputError(
            f"channels must be 1 (foreground) or 3 (with contour, touching), got {channels}"
        )
    foreground = labels > 0
    if channels == 1:
        return foreground[..., None].astype(np.float32)
    return np.stack(
        [foreground, boundaries(labels, "inner"), touching(labels, touch_radius)], axis=-1
    ).astype(np.float32)
