"""Per-nucleus measurements of a label image: one row per nucleus, for users' tables.

:func:`measure` (also ``nucleuseg.measure``) is a thin layer over
:func:`skimage.measure.regionprops_table`: it picks the properties people tabulate for nuclei,
names the columns as the rest of nucleuseg does (the block-wise ``nuclei.csv`` of
:mod:`nucleuseg.large` uses the same names for the columns it shares), and returns plain numpy
arrays, or a pandas ``DataFrame`` where pandas is installed (extra ``pandas``).

Columns (:data:`COLUMNS`), all in pixels of the label image:

- ``label``: the nucleus' value in the label image;
- ``centroid_y``, ``centroid_x``: its centre (row, column);
- ``area``: pixels; ``perimeter``: length of its outline (scikit-image's 4-connected estimate);
- ``equivalent_diameter``: diameter of the disc of the same area;
- ``eccentricity``: 0 for a disc, towards 1 for elongated nuclei;
- ``solidity``: area over the area of its convex hull;
- ``bbox_y0``, ``bbox_x0``, ``bbox_y1``, ``bbox_x1``: bounding box, half-open (``y1`` and ``x1``
  one past the last row and column), as in scikit-image;
- with an image: ``mean_intensity`` and ``integrated_intensity`` (the sum over the nucleus,
  ``mean_intensity * area``).

Intensities are measured on a single-channel image as it is. On a multi-channel image
``(H, W, C)`` they are measured on its gray mean (the mean over channels); to measure one channel,
pass that channel (``image[..., c]``). The command line measures the image the model saw: the
chosen ``--channel``, or the gray mean of a colour image.

Examples
--------
>>> import numpy as np
>>> labels = np.zeros((8, 8), np.int32); labels[1:4, 1:4] = 1; labels[5:7, 2:8] = 2
>>> table = measure(labels, image=np.full((8, 8), 10, np.uint8))
>>> table["label"].tolist(), table["area"].tolist(), table["integrated_intensity"].tolist()
([1, 2], [9.0, 12.0], [90.0, 120.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nucleuseg.errors import InputError
from nucleuseg.masks import check_labels

SHAPE_COLUMNS: tuple[str, ...] = (
    "label",
    "centroid_y",
    "centroid_x",
    "area",
    "perimeter",
    "equivalent_diameter",
    "eccentricity",
    "solidity",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
)
"""The columns :func:`measure` returns for every label image."""

INTENSITY_COLUMNS: tuple[str, ...] = ("mean_intensity", "integrated_intensity")
"""The columns :func:`measure` adds when it is given an image."""

COLUMNS: tuple[str, ...] = SHAPE_COLUMNS + INTENSITY_COLUMNS
"""Every column of :func:`measure`, in order."""

# Our column name -> the key regionprops_table gives it.
_REGIONPROPS = {
    "label": "label",
    "centroid_y": "centroid-0",
    "centroid_x": "centroid-1",
    "area": "area",
    "perimeter": "perimeter",
    "equivalent_diameter": "equivalent_diameter_area",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "bbox_y0": "bbox-0",
    "bbox_x0": "bbox-1",
    "bbox_y1": "bbox-2",
    "bbox_x1": "bbox-3",
    "mean_intensity": "intensity_mean",
}
_PROPERTIES = (
    "label",
    "centroid",
    "area",
    "perimeter",
    "equivalent_diameter_area",
    "eccentricity",
    "solidity",
    "bbox",
)


def measure(
    labels: np.ndarray, image: np.ndarray | None = None, *, as_frame: bool = False
) -> dict[str, np.ndarray] | Any:
    """Measure every nucleus of a label image: one row per nucleus, in label order.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer label image, 0 = background (labels need not be consecutive).
    image : numpy.ndarray, optional
        ``(H, W)`` or ``(H, W, C)`` image of the same height and width, any integer or float
        dtype; adds ``mean_intensity`` and ``integrated_intensity``, measured on the gray mean
        of a multi-channel image (see the module docstring).
    as_frame : bool
        Return a :class:`pandas.DataFrame` instead of a dict (needs pandas: the ``pandas``
        extra).

    Returns
    -------
    dict of str to numpy.ndarray, or pandas.DataFrame
        The columns of :data:`SHAPE_COLUMNS` (and :data:`INTENSITY_COLUMNS` with an image), each
        an array with one value per nucleus: ``int64`` for ``label`` and the bounding box,
        ``float64`` otherwise. An image without nuclei gives empty columns.

    Raises
    ------
    InputError
        If ``labels`` is not a 2-D non-negative integer image, or ``image`` is not an image of
        its height and width.
    ExtraMissing
        If ``as_frame`` and pandas is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((6, 6), np.int32); labels[1:5, 2:4] = 3
    >>> table = measure(labels)
    >>> table["label"].tolist(), table["centroid_y"].tolist(), table["bbox_y1"].tolist()
    ([3], [2.5], [5])
    """
    labels = check_labels(labels)
    intensity = None if image is None else _gray(image, labels.shape)
    from skimage.measure import regionprops_table

    properties = _PROPERTIES if intensity is None else (*_PROPERTIES, "intensity_mean")
    props = regionprops_table(labels, intensity_image=intensity, properties=properties)
    columns = SHAPE_COLUMNS if intensity is None else COLUMNS
    table: dict[str, np.ndarray] = {}
    for name in columns:
        if name == "integrated_intensity":
            table[name] = table["mean_intensity"] * table["area"]
            continue
        values = np.asarray(props[_REGIONPROPS[name]])
        integer = name == "label" or name.startswith("bbox")
        table[name] = values.astype(np.int64 if integer else np.float64)
    if as_frame:
        from nucleuseg._extras import require

        pandas = require("pandas", "pandas", "measure(..., as_frame=True)")
        return pandas.DataFrame(table)
    return table


def _gray(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` as one ``float64`` channel of ``shape``: as it is, or its mean over channels."""
    image = np.asarray(image)
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise InputError(f"image must be an integer or float array, got dtype {image.dtype}")
    if image.ndim not in (2, 3) or image.shape[:2] != shape:
        raise InputError(
            f"image must be (H, W) or (H, W, C) with the labels' H, W = {shape}, got shape "
            f"{image.shape}"
        )
    gray = image.astype(np.float64) if image.ndim == 2 else image.mean(axis=2, dtype=np.float64)
    if not np.all(np.isfinite(gray)):
        raise InputError("image contains NaN or infinite values")
    return gray
