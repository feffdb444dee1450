"""The writer: a labels layer as a label image file (:func:`nucleuseg.data.write_labels`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def write_labels(path: str | os.PathLike, data: Any, meta: dict | None = None) -> list[str]:
    """Write a labels layer's data as a 16-bit PNG (or a 32-bit TIFF for labels beyond 65,535).

    What napari calls to save a labels layer as ``.png``, ``.tif`` or ``.tiff``; the file is
    written atomically, and the reader opens it again when its name ends in ``_labels`` or
    ``_masks``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    data : array-like
        The layer's ``(H, W)`` label image.
    meta : dict, optional
        The layer's metadata (unused).

    Returns
    -------
    list of str
        The file written.

    Raises
    ------
    InputError
        If ``data`` is not a 2-D label image, or its labels do not fit the file's format.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> [pathlib.Path(p).name for p in write_labels(folder / "n_labels.png", np.eye(4, dtype=int))]
    ['n_labels.png']
    """
    from nucleuseg.data import write_labels as write

    return [str(write(path, np.asarray(data)))]
