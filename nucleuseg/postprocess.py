"""From probability maps to instance labels.

Two strategies, chosen by :attr:`nucleuseg.config.InferenceConfig.postprocess`:

``"components"``
    Threshold the foreground and label connected components (the starter recipe). Touching
    nuclei merge into one object.
``"watershed"``
    Markers are the connected components of ``foreground - contour - touching`` above
    ``seed_threshold``: the cores of the nuclei, cut apart where the network saw a boundary.
    They are grown back over the thresholded foreground by watershed on the foreground
    probability. Foreground regions the markers missed keep a label of their own.

Both remove objects smaller than ``min_size`` and fill holes inside nuclei.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from nucleuseg.config import InferenceConfig
from nucleuseg.errors import InputError
from nucleuseg.masks import relabel_sequential


def check_probabilities(probs: np.ndarray, name: str = "probabilities") -> np.ndarray:
    """Validate an ``(H, W)`` or ``(H, W, C)`` probability map; return it as ``(H, W, C)`` float32.

    Raises
    ------
    InputError
        On a wrong ndim, a non-float dtype, NaN/inf, or values outside ``[0, 1]``.
    """
    probs = np.asarray(probs)
    if probs.ndim == 2:
        probs = probs[..., None]
    if probs.ndim != 3:
        raise InputError(f"{name} must be (H, W) or (H, W, C), got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise InputError(f"{name} must be floating point, got {probs.dtype}")
    if not np.all(np.isfinite(probs)):
        raise InputError(f"{name} contains NaN or infinite values")
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise InputError(f"{name} must lie in [0, 1], got [{probs.min():.3g}, {probs.max():.3g}]")
    return probs.astype(np.float32, copy=False)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to background and relabel ``1..N``.

    Examples
    --------
    >>> remove_small(np.array([[1, 1, 0, 2]]), 2)
    array([[1, 1, 0, 0]], dtype=int32)
    """
    if min_size > 0 and labels.max() > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes fully enclosed by a single nucleus, in one pass over the image."""
    holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    # Each hole takes the label of its nearest labelled pixel (all of them, for a hole inside one
    # nucleus).
    _, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    filled = labels.copy()
    filled[holes] = labels[iy[holes], ix[holes]]
    return filled


def components(foreground: np.ndarray, threshold: float = 0.5, min_size: int = 0) -> np.ndarray:
    """Connected components (4-connectivity) of ``foreground > threshold``.

    Examples
    --------
    >>> p = np.array([[0.9, 0.9, 0.1, 0.8]])
    >>> components(p)
    array([[1, 1, 0, 2]], dtype=int32)
    """
    labels, _ = ndi.label(foreground > threshold)
    return remove_small(fill_holes(labels.astype(np.int32)), min_size)


def watershed_split(
    probs: np.ndarray,
    threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    min_seed_size: int = 3,
) -> np.ndarray:
    """Marker-controlled watershed on ``(H, W, 3)`` foreground / contour / touching probabilities.

    Examples
    --------
    >>> fg = np.zeros((5, 9)); fg[1:4, 1:8] = 1.0
    >>> touch = np.zeros((5, 9)); touch[:, 4] = 1.0
    >>> lab = watershed_split(np.stack([fg, np.zeros_like(fg), touch], -1), min_seed_size=1)
    >>> lab[2]
    array([0, 1, 1, 1, 2, 2, 2, 2, 0], dtype=int32)
    """
    foreground = probs[..., 0]
    mask = foreground > threshold
    core = foreground - probs[..., 1:].sum(axis=-1)
    seeds, n_seeds = ndi.label(core > seed_threshold)
    if n_seeds:
        sizes = np.bincount(seeds.ravel())
        seeds = np.where(sizes[seeds] < min_seed_size, 0, seeds)
    labels = watershed(-foreground, seeds, mask=mask)
    # Foreground that no marker reached becomes objects of its own.
    orphans, n_orphans = ndi.label(mask & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return remove_small(fill_holes(labels.astype(np.int32)), min_size)


def to_instances(probs: np.ndarray, config: InferenceConfig | None = None) -> np.ndarray:
    """Instance labels from a probability map under an :class:`InferenceConfig`.

    ``"watershed"`` needs three channels; with one it falls back to connected components.
    """
    config = config or InferenceConfig()
    probs = check_probabilities(probs)
    if config.postprocess == "watershed" and probs.shape[2] >= 3:
        return watershed_split(probs, config.threshold, config.seed_threshold, config.min_size)
    return components(probs[..., 0], config.threshold, config.min_size)
