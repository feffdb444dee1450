"""The one inference path: images in, probabilities or instance labels out, for any network.

Whatever runs the network (a backend's :meth:`~nucleuseg.backends.base.Network.predict`, an
exported model, a test's stand-in), prediction is the same few steps, written once here and
shared by :class:`~nucleuseg.Segmenter`, batches of images and blocks of big images:

1. the image is validated and normalised (:func:`nucleuseg.transforms.normalize`);
2. a preset that trains on resized images (``training.resize``, as ``seed`` does) resizes it to
   that size;
3. it is mirror-padded to the network's multiple and predicted whole, or in overlapping tiles
   when a side exceeds ``inference.tile`` (:mod:`nucleuseg.tiling`); with ``inference.tta``
   every prediction is the mean over the four flips. Images that share a padded shape are
   stacked and predicted together, several per network call (:func:`predict_batch`);
4. resized predictions are resized back to the image; otherwise, with ``inference.auto_scale``,
   a first prediction at ``inference.scout_zoom`` (half size by default, a quarter of the cost)
   measures the median nucleus radius, and the image is predicted at the zoom that brings it to
   ``inference.target_radius`` (:func:`rescale_factor`: 1 when it is near already); the first
   prediction is kept when it was made at that zoom. Zoomed predictions are resized back;
5. :func:`nucleuseg.postprocess.to_instances` turns the probabilities into instance labels
   (:func:`predict_labels`). Given the nucleus ``diameter`` of an image, :func:`predict_labels`
   instead resizes it to the model's native diameter before step 3 and the labels back after.

The network is a :data:`~nucleuseg.tiling.PredictFn`: an NHWC ``float32`` batch in (sides
multiples of ``preset.network.multiple``), NHWC probabilities out. The module imports no
framework.

Examples
--------
>>> import numpy as np
>>> from nucleuseg.config import get_preset
>>> preset = get_preset("default")
>>> net = lambda batch: batch[..., :3]  # a stand-in: three "probability" channels
>>> image = np.zeros((40, 50), np.uint8); image[10:20, 10:20] = 200
>>> predict_probabilities(net, image, preset).shape
(40, 50, 3)
>>> [p.shape for p in predict_batch(net, [image, image[:30]], preset)]
[(40, 50, 3), (30, 50, 3)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nucleuseg.config import InferenceConfig, Preset
from nucleuseg.errors import InputError
from nucleuseg.masks import relabel_sequential
from nucleuseg.postprocess import to_instances
from nucleuseg.tiling import (
    TILES_PER_CALL,
    PredictFn,
    pad_to_multiple,
    padded_shape,
    predict_flips,
    predict_tiled,
    tile_size,
)
from nucleuseg.transforms import (
    NormalizationStats,
    as_rgb,
    median_radius,
    normalize,
    resize,
    zoom_to_radius,
)

BATCH_SIZE = 8
"""Most images per network call of :func:`predict_batch` by default.

Whether batching pays depends on the device: where a network call has much fixed cost (a GPU) it
does; on the 2-core CPU measured on the accuracy page it did not (``benchmarks/batch_inference.py``),
so :class:`~nucleuseg.Segmenter` predicts one image per call unless asked otherwise.
"""


def predict_probabilities(
    predict: PredictFn,
    image: np.ndarray,
    preset: Preset,
    *,
    stats: NormalizationStats | None = None,
) -> np.ndarray:
    """Per-pixel probabilities ``(H, W, C)`` (foreground first) for one image of any size.

    Parameters
    ----------
    predict : callable
        NHWC ``float32`` batch -> NHWC probabilities (:data:`~nucleuseg.tiling.PredictFn`).
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, any integer or float dtype.
    preset : Preset
        The network's size multiple, the training resize and the inference settings.
    stats : NormalizationStats, optional
        Normalise with these instead of the image's own statistics (for a block of a larger
        image, so that every block is normalised alike).

    Returns
    -------
    numpy.ndarray
        ``(H, W, C)`` ``float32`` in ``[0, 1]``.

    Raises
    ------
    InputError
        If ``image`` is not an image (see :func:`nucleuseg.transforms.as_rgb`).

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> net = lambda batch: batch[..., :1]
    >>> predict_probabilities(net, np.ones((5, 7), np.uint8), get_preset("seed")).shape
    (5, 7, 1)
    """
    x = normalize(as_rgb(image), stats)
    return _predict_normalised(predict, [x], preset, 1)[0]


def predict_labels(
    predict: PredictFn,
    image: np.ndarray,
    preset: Preset,
    *,
    stats: NormalizationStats | None = None,
    diameter: float | None = None,
) -> np.ndarray:
    """Instance labels ``(H, W)`` ``int32`` (0 = background) for one image of any size.

    :func:`predict_probabilities` followed by :func:`nucleuseg.postprocess.to_instances` under
    ``preset.inference``; the other arguments are those of :func:`predict_probabilities`.

    With ``diameter`` (the typical nucleus diameter of the image, in pixels), the normalised
    image is resized by :func:`diameter_factor` so that its nuclei have the model's native
    diameter, ``2 * inference.target_radius``; labels are found at that scale and resized back
    (nearest) to the image's shape. ``inference.auto_scale`` is then not applied: the diameter
    given replaces the guess.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> image = np.zeros((30, 30), np.uint8); image[5:12, 5:12] = 200; image[18:26, 15:25] = 200
    >>> labels = predict_labels(lambda batch: batch[..., :3], image, get_preset("default"))
    >>> labels.dtype, int(labels.max())
    (dtype('int32'), 2)
    >>> predict_labels(lambda batch: batch[..., :3], image, get_preset("default"), diameter=5).shape
    (30, 30)
    """
    if diameter is None:
        return _labels_normalised(predict, [normalize(as_rgb(image), stats)], preset, 1)[0]
    factor = diameter_factor(diameter, preset.inference)
    x = normalize(as_rgb(image), stats)
    scaled = resize(x, _scaled_shape(x, factor), order=1) if factor != 1.0 else x
    fixed = preset.replace(inference=preset.inference.replace(auto_scale=False))
    labels = to_instances(_predict_normalised(predict, [scaled], fixed, 1)[0], preset.inference)
    if factor == 1.0:
        return labels
    return relabel_sequential(resize(labels, x.shape[:2], order=0))


MAX_DIAMETER_ZOOM = 8.0
"""Largest zoom (either way) that :func:`diameter_factor` allows."""


def diameter_factor(diameter: float, inference: InferenceConfig) -> float:
    """The zoom that brings nuclei of ``diameter`` pixels to the model's native diameter.

    The native diameter is ``2 * inference.target_radius`` pixels (the size of the nuclei the
    model was trained on); the zoom is ``native / diameter``.

    Raises
    ------
    InputError
        If ``diameter`` is not a positive finite number, or the zoom would exceed
        :data:`MAX_DIAMETER_ZOOM` either way.

    Examples
    --------
    >>> from nucleuseg.config import InferenceConfig
    >>> diameter_factor(40, InferenceConfig(target_radius=10.0))  # big nuclei: shrink by half
    0.5
    """
    if isinstance(diameter, bool) or not isinstance(diameter, int | float | np.number):
        raise InputError(f"diameter must be a number of pixels, got {diameter!r}")
    if not (np.isfinite(diameter) and diameter > 0):
        raise InputError(f"diameter must be a positive number of pixels, got {diameter}")
    native = 2.0 * inference.target_radius
    factor = native / float(diameter)
    if not 1.0 / MAX_DIAMETER_ZOOM <= factor <= MAX_DIAMETER_ZOOM:
        raise InputError(
            f"diameter {diameter} is too far from the model's native nucleus diameter "
            f"{native:g} pixels (a zoom of {factor:.3g}; at most {MAX_DIAMETER_ZOOM:g} times "
            "either way)"
        )
    return factor


def predict_batch(
    predict: PredictFn,
    images: Sequence[np.ndarray],
    preset: Preset,
    *,
    batch_size: int = BATCH_SIZE,
) -> list[np.ndarray]:
    """Probabilities for several images, predicting those that share a shape together.

    Each result is what :func:`predict_probabilities` gives for that image alone (to float32
    round-off of the network): images are grouped by their padded shape and each group is
    predicted up to ``batch_size`` images per network call, fewer where the call would exceed
    the pixels of :data:`~nucleuseg.tiling.TILES_PER_CALL` full tiles. Images larger than
    ``inference.tile`` are predicted alone, their tiles batched as
    :func:`~nucleuseg.tiling.predict_tiled` does.

    Parameters
    ----------
    predict : callable
        NHWC ``float32`` batch -> NHWC probabilities.
    images : sequence of numpy.ndarray
        Images as :func:`predict_probabilities` takes them, of any sizes.
    preset : Preset
        The network's size multiple, the training resize and the inference settings.
    batch_size : int
        Most images per network call.

    Returns
    -------
    list of numpy.ndarray
        ``(H, W, C)`` ``float32`` probabilities, in the order of ``images``.

    Raises
    ------
    InputError
        If ``batch_size`` is not a positive integer, or an image is not an image (the message
        names ``images[i]``).

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> calls = []
    >>> def net(batch):
    ...     calls.append(len(batch))
    ...     return batch[..., :3]
    >>> images = [np.zeros((60, 60)), np.ones((64, 50)), np.zeros((20, 30))]
    >>> [p.shape[:2] for p in predict_batch(net, images, get_preset("default"), batch_size=8)]
    [(60, 60), (64, 50), (20, 30)]
    >>> calls  # the two images padded to 64 x 64 went in one call
    [2, 1]
    """
    batch_size = check_batch_size(batch_size)
    xs = [normalize(as_rgb(image, f"images[{i}]")) for i, image in enumerate(images)]
    return _predict_normalised(predict, xs, preset, batch_size)


def predict_labels_batch(
    predict: PredictFn,
    images: Sequence[np.ndarray],
    preset: Preset,
    *,
    batch_size: int = BATCH_SIZE,
) -> list[np.ndarray]:
    """Instance labels for several images: :func:`predict_batch`, then post-processing.

    Each result is what :func:`predict_labels` gives for that image alone. With
    ``inference.auto_scale``, an image that is not predicted a second time keeps the labels
    its first prediction was measured with instead of post-processing it again.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> image = np.zeros((30, 30), np.uint8); image[5:12, 5:12] = 200
    >>> [int(labels.max()) for labels in predict_labels_batch(
    ...     lambda batch: batch[..., :3], [image, image.T], get_preset("default"))]
    [1, 1]
    """
    batch_size = check_batch_size(batch_size)
    xs = [normalize(as_rgb(image, f"images[{i}]")) for i, image in enumerate(images)]
    return _labels_normalised(predict, xs, preset, batch_size)


def check_batch_size(batch_size: int, name: str = "batch_size") -> int:
    """``batch_size`` as an ``int`` when it is a positive integer.

    Raises
    ------
    InputError
        Otherwise (booleans and floats included), naming the argument.

    Examples
    --------
    >>> check_batch_size(np.int64(4))
    4
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise InputError(f"{name} must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise InputError(f"{name} must be a positive integer, got {batch_size}")
    return int(batch_size)


def rescale_factor(probs: np.ndarray, inference: InferenceConfig) -> float:
    """The zoom that brings the median nucleus of ``probs`` to ``inference.target_radius``.

    1.0 when ``inference.auto_scale`` is off, when nothing is found, or when the median radius
    already lies within ``target_radius / 1.5 .. target_radius * 1.5``; otherwise
    ``target_radius / radius`` kept within ``0.5 .. 2``.

    Examples
    --------
    >>> from nucleuseg.config import InferenceConfig
    >>> probs = np.zeros((64, 64, 1), np.float32); probs[10:16, 10:16] = 0.9  # a 6 x 6 nucleus
    >>> rescale_factor(probs, InferenceConfig(auto_scale=True, target_radius=10.0, min_size=0))
    2.0
    >>> rescale_factor(probs, InferenceConfig(auto_scale=False))
    1.0
    """
    if not inference.auto_scale:
        return 1.0
    return _scout_factor(to_instances(probs, inference), 1.0, inference)


def _predict_normalised(
    predict: PredictFn, xs: list[np.ndarray], preset: Preset, batch_size: int
) -> list[np.ndarray]:
    """Steps 2 to 4 of the module docstring for normalised ``(H, W, 3)`` images."""
    return [probs for probs, _ in _predict_with_labels(predict, xs, preset, batch_size)]


def _labels_normalised(
    predict: PredictFn, xs: list[np.ndarray], preset: Preset, batch_size: int
) -> list[np.ndarray]:
    """Steps 2 to 5 for normalised ``(H, W, 3)`` images: their instance labels."""
    return [
        to_instances(probs, preset.inference) if labels is None else labels
        for probs, labels in _predict_with_labels(predict, xs, preset, batch_size)
    ]


def _predict_with_labels(
    predict: PredictFn, xs: list[np.ndarray], preset: Preset, batch_size: int
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Steps 2 to 4, each image's probabilities with its labels where step 4 already found them.

    Auto-scale post-processes the predictions it measures nuclei on; where a full-size one is
    kept (no other zoom), its labels are those of step 5 and are returned, so that they are not
    computed twice. Elsewhere the labels are ``None``.
    """
    size = preset.training.resize
    if size:
        small = [resize(x, (size, size), order=1) for x in xs]
        probs = _predict_arrays(predict, small, preset, batch_size)
        return [(_resize_back(p, x.shape[:2]), None) for p, x in zip(probs, xs, strict=True)]
    inference = preset.inference
    if not inference.auto_scale:
        return [(p, None) for p in _predict_arrays(predict, xs, preset, batch_size)]
    scout = inference.scout_zoom
    if scout == 1.0:
        return _measured_at_full_size(predict, xs, preset, batch_size)
    small = [resize(x, _scaled_shape(x, scout), order=1) for x in xs]
    scouted = _predict_arrays(predict, small, preset, batch_size)
    factors = [_scout_factor(to_instances(p, inference), scout, inference) for p in scouted]
    out: list[tuple[np.ndarray, np.ndarray | None] | None] = [None] * len(xs)
    for i, (probs, factor) in enumerate(zip(scouted, factors, strict=True)):
        if factor == scout:  # the scout was made at the zoom wanted
            out[i] = (_resize_back(probs, xs[i].shape[:2]), None)
    # Small nuclei blur together at the scout's zoom, so only a zoom below 1 is taken from it;
    # the other images are measured again on a full-size prediction.
    shrink = [i for i, factor in enumerate(factors) if factor < 1.0 and factor != scout]
    zoomed = _predict_zoomed(
        predict, [xs[i] for i in shrink], [factors[i] for i in shrink], preset, batch_size
    )
    full = [i for i, factor in enumerate(factors) if factor >= 1.0]
    measured = _measured_at_full_size(predict, [xs[i] for i in full], preset, batch_size)
    for i, probs in zip(shrink, zoomed, strict=True):
        out[i] = (probs, None)
    for i, pair in zip(full, measured, strict=True):
        out[i] = pair
    return out  # type: ignore[return-value]


def _measured_at_full_size(
    predict: PredictFn, xs: list[np.ndarray], preset: Preset, batch_size: int
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Auto-scale measuring on the full-size prediction, kept (with its labels) at zoom 1."""
    probs = _predict_arrays(predict, xs, preset, batch_size)
    labels: list[np.ndarray | None] = [to_instances(p, preset.inference) for p in probs]
    factors = [_scout_factor(lab, 1.0, preset.inference) for lab in labels]  # type: ignore[arg-type]
    again = [i for i, factor in enumerate(factors) if factor != 1.0]
    zoomed = _predict_zoomed(
        predict, [xs[i] for i in again], [factors[i] for i in again], preset, batch_size
    )
    for i, p in zip(again, zoomed, strict=True):
        probs[i], labels[i] = p, None
    return list(zip(probs, labels, strict=True))


def _predict_zoomed(
    predict: PredictFn,
    xs: list[np.ndarray],
    factors: list[float],
    preset: Preset,
    batch_size: int,
) -> list[np.ndarray]:
    """Each image predicted at its zoom (or its own size at 1), resized back to its shape."""
    scaled = [
        x if factor == 1.0 else resize(x, _scaled_shape(x, factor), order=1)
        for x, factor in zip(xs, factors, strict=True)
    ]
    return [
        p if factor == 1.0 else _resize_back(p, x.shape[:2])
        for p, x, factor in zip(
            _predict_arrays(predict, scaled, preset, batch_size), xs, factors, strict=True
        )
    ]


def _scout_factor(labels: np.ndarray, scout: float, inference: InferenceConfig) -> float:
    """The zoom to predict at, from the labels of a prediction made at zoom ``scout``.

    The median radius found at the scout's zoom, brought back to the image's scale, gives the
    zoom by the rule of :func:`rescale_factor` (1 when nothing is found).
    """
    radius = median_radius(labels)
    return zoom_to_radius(None if radius is None else radius / scout, inference.target_radius)


def _predict_arrays(
    predict: PredictFn, xs: list[np.ndarray], preset: Preset, batch_size: int
) -> list[np.ndarray]:
    """Probabilities at the arrays' own size: same-shape groups batched, large ones tiled."""
    multiple = preset.network.multiple
    inference = preset.inference
    whole = tile_size(inference.tile, multiple)  # padded sides up to this: one window
    out: list[np.ndarray | None] = [None] * len(xs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(xs):
        shape = padded_shape(x.shape[0], x.shape[1], multiple)
        if max(shape) <= whole:
            groups.setdefault(shape, []).append(i)
        else:
            out[i] = predict_tiled(
                predict, x, multiple, inference.tile, inference.overlap, inference.tta
            )
    for (height, width), members in groups.items():
        per_call = max(1, min(batch_size, TILES_PER_CALL * whole * whole // (height * width)))
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            batch = np.stack([pad_to_multiple(xs[i], multiple)[0] for i in chunk])
            probs = predict_flips(predict, batch, inference.tta)
            for i, p in zip(chunk, probs, strict=True):
                out[i] = p[: xs[i].shape[0], : xs[i].shape[1]].astype(np.float32)
    return out  # type: ignore[return-value]


def _scaled_shape(x: np.ndarray, factor: float) -> tuple[int, int]:
    return max(1, round(x.shape[0] * factor)), max(1, round(x.shape[1] * factor))


def _resize_back(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.clip(resize(probs, shape, order=1), 0.0, 1.0)
