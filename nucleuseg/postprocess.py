"""From probability maps to instance labels, by post-processing methods registered by name.

:attr:`nucleuseg.config.InferenceConfig.postprocess` names the method; two are built in:

``"components"``
    Threshold the foreground and label connected components (the starter recipe). Touching
    nuclei merge into one object. Reads ``threshold`` and ``min_size``.
``"watershed"``
    Markers are the connected components of ``foreground - contour - touching`` above
    ``seed_threshold``: the cores of the nuclei, cut apart where the network saw a boundary.
    They are grown back over the thresholded foreground by watershed on the foreground
    probability. Foreground regions the markers missed keep a label of their own. Needs the
    three channels of the ``default`` preset; on a one-channel map it falls back to
    ``"components"``. Reads ``threshold``, ``seed_threshold`` and ``min_size``.

Both remove objects smaller than ``min_size`` and fill holes inside nuclei.

A new method is one function from ``(H, W, C)`` ``float32`` probabilities and an
:class:`~nucleuseg.config.InferenceConfig` to an ``(H, W)`` label image, and one line that
registers it with :func:`register_postprocess`. From then on ``InferenceConfig(postprocess=name)``
accepts the name, :func:`to_instances` (so every prediction) calls the function, and
:func:`nucleuseg.tuning.tune_postprocessing` varies the parameters it declares.
:func:`list_postprocessing` lists the names.

Examples
--------
>>> from nucleuseg.config import InferenceConfig
>>> @register_postprocess("largest-only", parameters=("threshold",))
... def largest_only(probs, config):
...     labels = components(probs[..., 0], config.threshold)
...     sizes = np.bincount(labels.ravel())[1:]
...     return (labels == sizes.argmax() + 1).astype(np.int32) if sizes.size else labels
>>> probs = np.array([[0.9, 0.9, 0.1, 0.8]], np.float32)
>>> to_instances(probs, InferenceConfig(postprocess="largest-only"))
array([[1, 1, 0, 0]], dtype=int32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from nucleuseg.errors import ConfigError, InputError
from nucleuseg.masks import relabel_sequential

if TYPE_CHECKING:
    # config.py looks this module's registry up when it checks a name, so this module imports
    # config only where it needs it at run time.
    from nucleuseg.config import InferenceConfig

PARAMETERS: tuple[str, ...] = ("threshold", "seed_threshold", "min_size")
"""The :class:`~nucleuseg.config.InferenceConfig` fields a post-processing method may read; the
tuner varies those a method declares."""

PostprocessFunction = Callable[[np.ndarray, "InferenceConfig"], np.ndarray]
"""``function(probs, config) -> labels``: ``(H, W, C)`` ``float32`` probabilities in ``[0, 1]``
and an :class:`~nucleuseg.config.InferenceConfig` to an ``(H, W)`` integer label image."""


@dataclass(frozen=True)
class PostprocessMethod:
    """A registered post-processing method.

    Attributes
    ----------
    name : str
        The name :attr:`~nucleuseg.config.InferenceConfig.postprocess` takes.
    function : callable
        ``function(probs, config) -> labels``, see :data:`PostprocessFunction`.
    parameters : tuple of str
        The fields of :data:`PARAMETERS` the function reads; the tuner varies only these.
    channels : int
        Probability channels the function needs.
    fallback : str or None
        The method used instead on a map with fewer than ``channels`` channels; ``None``
        makes such a map an error.
    """

    name: str
    function: PostprocessFunction
    parameters: tuple[str, ...]
    channels: int = 1
    fallback: str | None = None


_METHODS: dict[str, PostprocessMethod] = {}


def register_postprocess(
    name: str,
    parameters: Sequence[str] = PARAMETERS,
    channels: int = 1,
    fallback: str | None = None,
) -> Callable[[PostprocessFunction], PostprocessFunction]:
    """Decorator registering ``function(probs, config) -> labels`` as post-processing ``name``.

    Registering a name again replaces the method registered under it.

    Parameters
    ----------
    name : str
        The name :attr:`~nucleuseg.config.InferenceConfig.postprocess` will take.
    parameters : sequence of str
        The fields of :data:`PARAMETERS` the function reads (default: all of them); the tuner
        varies only these.
    channels : int
        Probability channels the function needs (``probs`` has at least this many).
    fallback : str, optional
        A registered method that needs fewer channels, used on maps with fewer than
        ``channels``; without one such maps raise :class:`~nucleuseg.errors.InputError`.

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.

    Raises
    ------
    InputError
        If the name is empty, a parameter is not in :data:`PARAMETERS`, ``channels`` is not a
        positive integer, or ``fallback`` is not registered or needs as many channels.

    Examples
    --------
    >>> @register_postprocess("foreground", parameters=("threshold",))
    ... def foreground(probs, config):
    ...     return (probs[..., 0] > config.threshold).astype(np.int32)
    >>> get_postprocess("foreground").parameters
    ('threshold',)
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"name must be a non-empty string, got {name!r}")
    parameters = tuple(parameters)
    unknown = [p for p in parameters if p not in PARAMETERS]
    if unknown or len(set(parameters)) != len(parameters):
        raise InputError(
            f"post-processing {name!r}: parameters must be distinct names from {PARAMETERS}, "
            f"got {parameters}"
        )
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise InputError(
            f"post-processing {name!r}: channels must be a positive int, got {channels!r}"
        )
    if fallback is not None:
        if fallback not in _METHODS:
            raise InputError(
                f"post-processing {name!r}: fallback {fallback!r} is not registered; "
                f"registered: {list_postprocessing()}"
            )
        if _METHODS[fallback].channels >= channels:
            raise InputError(
                f"post-processing {name!r}: fallback {fallback!r} must need fewer than "
                f"{channels} channels, it needs {_METHODS[fallback].channels}"
            )
    # Parameters are kept in the order of PARAMETERS, whatever order they were given in.
    ordered = tuple(p for p in PARAMETERS if p in parameters)

    def decorate(function: PostprocessFunction) -> PostprocessFunction:
        if not callable(function):
            raise InputError(f"post-processing {name!r}: {function!r} is not callable")
        _METHODS[name] = PostprocessMethod(name, function, ordered, channels, fallback)
        return function

    return decorate


def list_postprocessing() -> list[str]:
    """Names of the registered post-processing methods, in order of registration.

    Examples
    --------
    >>> list_postprocessing()[:2]
    ['components', 'watershed']
    """
    return list(_METHODS)


def get_postprocess(name: str) -> PostprocessMethod:
    """The post-processing method registered under ``name``.

    Raises
    ------
    ConfigError
        If no method has that name; the message lists the registered ones.

    Examples
    --------
    >>> method = get_postprocess("watershed")
    >>> method.channels, method.fallback, method.parameters
    (3, 'components', ('threshold', 'seed_threshold', 'min_size'))
    """
    if name not in _METHODS:
        raise ConfigError(
            f"unknown post-processing method {name!r}; registered: {list_postprocessing()}"
        )
    return _METHODS[name]


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
    # Holes: the 4-connected parts of the background that do not reach the image's edge.
    background, _ = ndi.label(labels == 0)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(int(background.max()) + 1, bool)
    outside[edge] = True
    outside[0] = True
    holes = ~outside[background]
    if not holes.any():
        return labels
    # Each hole takes the label of its nearest labelled pixel (all of them, for a hole inside one
    # nucleus). Those pixels enclose the holes, so the distance transform needs only the holes'
    # bounding box and a margin of one pixel.
    rows, cols = np.nonzero(holes)
    top, left = max(rows.min() - 1, 0), max(cols.min() - 1, 0)
    window = np.s_[top : rows.max() + 2, left : cols.max() + 2]
    crop = labels[window]
    _, (iy, ix) = ndi.distance_transform_edt(crop == 0, return_indices=True)
    inside = (rows - top, cols - left)
    filled = labels.copy()
    filled[rows, cols] = crop[iy[inside], ix[inside]]
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

    The method named by ``config.postprocess`` is looked up in the registry. A map with fewer
    channels than the method needs goes to its fallback (``"watershed"`` on one channel falls
    back to ``"components"``).

    Parameters
    ----------
    probs : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` floating-point probabilities in ``[0, 1]``.
    config : InferenceConfig, optional
        Default :class:`~nucleuseg.config.InferenceConfig()`.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` ``int32`` label image, 0 = background.

    Raises
    ------
    InputError
        If ``probs`` is not a valid probability map, it has fewer channels than the method needs
        and the method has no fallback, or the method returns something other than an
        ``(H, W)`` integer label image.

    Examples
    --------
    >>> from nucleuseg.config import InferenceConfig
    >>> fg = np.array([[0.9, 0.9, 0.1, 0.8]])
    >>> to_instances(fg, InferenceConfig(postprocess="watershed", min_size=0))
    array([[1, 1, 0, 2]], dtype=int32)
    """
    if config is None:
        from nucleuseg.config import InferenceConfig

        config = InferenceConfig()
    probs = check_probabilities(probs)
    method = get_postprocess(config.postprocess)
    while probs.shape[2] < method.channels:
        if method.fallback is None:
            raise InputError(
                f"post-processing {method.name!r} needs {method.channels} probability channels, "
                f"got {probs.shape[2]}"
            )
        method = get_postprocess(method.fallback)
    labels = np.asarray(method.function(probs, config))
    if labels.shape != probs.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"post-processing {method.name!r} returned an array of shape {labels.shape} and "
            f"dtype {labels.dtype}; expected an {probs.shape[:2]} integer label image"
        )
    return labels.astype(np.int32, copy=False)


@register_postprocess("components", parameters=("threshold", "min_size"))
def _components_method(probs: np.ndarray, config: InferenceConfig) -> np.ndarray:
    return components(probs[..., 0], config.threshold, config.min_size)


@register_postprocess("watershed", channels=3, fallback="components")
def _watershed_method(probs: np.ndarray, config: InferenceConfig) -> np.ndarray:
    return watershed_split(probs, config.threshold, config.seed_threshold, config.min_size)
