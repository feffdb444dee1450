"""What the dock widget runs, without napari: the image plane of a layer, loading a model,
segmenting and measuring."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nucleuseg.errors import InputError

if TYPE_CHECKING:
    from nucleuseg.segmenter import Segmenter

_COLOURS = ("red", "green", "blue", "alpha")


def channel_choices(shape: tuple[int, ...], rgb: bool) -> list[tuple[str, int | None]]:
    """The channels a layer of this shape offers: ``(label, channel)``, ``None`` for all.

    Parameters
    ----------
    shape : tuple of int
        The layer's data shape: ``(H, W)``, ``(H, W, C)`` for an RGB(A) layer, or ``(C, H, W)``
        for a stack whose first axis holds the channels.
    rgb : bool
        Whether napari shows the layer as RGB(A) (its last axis is colour).

    Raises
    ------
    InputError
        If the layer is not one 2-D image, a colour image or a stack of 2-D channels.

    Examples
    --------
    >>> channel_choices((32, 32), rgb=False)
    [('gray', None)]
    >>> channel_choices((2, 32, 32), rgb=False)
    [('channel 0', 0), ('channel 1', 1)]
    """
    if len(shape) == 2:
        return [("gray", None)]
    if len(shape) == 3 and rgb:
        return [("all (colour)", None)] + [
            (f"{c} ({_COLOURS[c]})", c) for c in range(min(shape[-1], len(_COLOURS)))
        ]
    if len(shape) == 3:
        return [(f"channel {c}", c) for c in range(shape[0])]
    raise InputError(
        f"image layer of shape {tuple(shape)}: nucleuseg segments a 2-D image, a colour image or "
        "a stack of 2-D channels (C, H, W)"
    )


def image_plane(data: object, rgb: bool, channel: int | None) -> np.ndarray:
    """The 2-D image (gray or colour) that is segmented for a layer's data and a channel.

    Parameters
    ----------
    data : array-like
        The layer's data (numpy, dask, ...), shaped as :func:`channel_choices` accepts.
    rgb : bool
        Whether the last axis is colour.
    channel : int, optional
        The channel to keep (the nuclear stain); ``None`` keeps all colours of an RGB layer.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, as :meth:`Segmenter.predict
        <nucleuseg.segmenter.Segmenter.predict>` takes it.

    Raises
    ------
    InputError
        If the layer has another shape, or ``channel`` is not one of its channels.

    Examples
    --------
    >>> stack = np.zeros((2, 8, 9), np.uint16)
    >>> image_plane(stack, rgb=False, channel=1).shape
    (8, 9)
    >>> image_plane(np.zeros((8, 9, 3)), rgb=True, channel=None).shape
    (8, 9, 3)
    """
    shape = tuple(int(n) for n in np.shape(data))
    allowed = [c for _, c in channel_choices(shape, rgb)]
    if channel not in allowed:
        shown = ", ".join("all" if c is None else str(c) for c in allowed)
        raise InputError(f"channel {channel!r}: the image layer has channels {shown}")
    if len(shape) == 2:
        return np.asarray(data)
    if rgb:
        return np.asarray(data if channel is None else data[..., channel])
    return np.asarray(data[channel])


_CACHE: dict[tuple[str, str], Segmenter] = {}
_CACHE_LOCK = threading.Lock()


def load_segmenter(model: str | os.PathLike, backend: str | None = None) -> Segmenter:
    """A shipped model (by name) or a model file on a backend, kept for the next call.

    The model is loaded once per ``(model, backend)``, so that segmenting again is quick;
    a model file is loaded again once it changes on disk.

    Parameters
    ----------
    model : str or os.PathLike
        A shipped model's name (:func:`nucleuseg.models.list_models`) or a model file.
    backend : str, optional
        The backend to run it on; by default the first installed one.

    Raises
    ------
    CheckpointError
        If ``model`` is neither a model file nor a shipped model's name.
    BackendUnavailable
        If the backend is not installed.
    """
    from nucleuseg.backends import default_backend
    from nucleuseg.models import resolve_model
    from nucleuseg.segmenter import Segmenter

    path = resolve_model(model)
    backend = backend or default_backend()
    stamp = path.stat().st_mtime_ns
    key = (f"{Path(path).resolve()}@{stamp}", backend)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one model at a time: a U-Net's weights are not small
            _CACHE[key] = Segmenter.load(path, backend=backend)
        return _CACHE[key]


@dataclass(frozen=True)
class Segmentation:
    """What :func:`segment` found in one image.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(H, W)`` ``int32`` label image, 0 = background.
    features : dict of str to numpy.ndarray
        The measurements of :func:`nucleuseg.measure`, one row per nucleus, with an ``index``
        column (the label) that napari's Labels layer matches its rows by.
    seconds : float
        Time spent segmenting and measuring.
    """

    labels: np.ndarray
    features: dict[str, np.ndarray] = field(repr=False)
    seconds: float

    @property
    def count(self) -> int:
        """The number of nuclei."""
        return len(self.features["index"])


def segment(segmenter: Segmenter, image: np.ndarray, diameter: float | None = None) -> Segmentation:
    """Segment ``image`` and measure every nucleus (on ``image``'s intensities).

    Parameters
    ----------
    segmenter : Segmenter
        The model (:func:`load_segmenter`).
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` (:func:`image_plane`).
    diameter : float, optional
        The typical nucleus diameter in pixels, for nuclei of another size than the model's;
        ``None`` or 0 leaves the image at its scale.

    Examples
    --------
    >>> from nucleuseg import Segmenter
    >>> from nucleuseg.data import synthetic_sample
    >>> seg = Segmenter("torch", preset="seed")  # doctest: +SKIP
    >>> found = segment(seg, synthetic_sample(0, size=64).image)  # doctest: +SKIP
    >>> found.labels.shape, sorted(found.features)[:2]  # doctest: +SKIP
    ((64, 64), ['area', 'bbox_x0'])
    """
    from nucleuseg.measurements import measure

    start = time.perf_counter()
    labels = segmenter.predict(image, diameter=diameter or None)
    table = measure(labels, image)
    features = {"index": table["label"].copy(), **table}
    return Segmentation(labels, features, time.perf_counter() - start)
