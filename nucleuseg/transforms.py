"""Intensity normalisation and training-time augmentation, on numpy arrays.

Every image, whatever its kind, is brought to the same look before the network sees it:
``float32`` in about ``[0, 1]``, nuclei *bright on dark*. Fluorescence already is; brightfield and
stained (H&E) images, where nuclei absorb light and look dark, are inverted. Which side is which
is decided per image by :func:`image_modality`, from colour as well as brightness, so that dense
tissue with no bright background is inverted too. The decision and the intensity range are taken
on the whole image (:func:`normalization_stats`), so a training crop and the full image at
inference are normalised identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from nucleuseg.errors import InputError


@dataclass(frozen=True)
class NormalizationStats:
    """How to normalise one image: ``x -> (x - low) / (high - low)``, then ``1 - x`` if inverted."""

    low: float
    high: float
    invert: bool


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate a user image and return it as ``(H, W, 3)`` (gray repeated, alpha dropped).

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` and ``(H, W, 4)`` arrays of any integer or
    floating dtype with finite values.

    Raises
    ------
    InputError
        On another shape, a boolean or complex dtype, or NaN/inf values.

    Examples
    --------
    >>> as_rgb(np.zeros((4, 5), np.uint8)).shape
    (4, 5, 3)
    """
    image = np.asarray(image)
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise InputError(f"{name} must be an integer or float array, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name} must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name} is empty (shape {image.shape})")
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        raise InputError(f"{name} contains NaN or infinite values")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[..., :3]


MODALITIES = ("fluorescence", "brightfield", "histology")
"""What :func:`image_modality` can answer; every modality but ``"fluorescence"`` is inverted."""

_COLOUR = 0.05
"""Mean chroma (max - min channel, on the scaled image) above which an image is in colour."""

_STAINED_SHARE = 10.0
"""Percentage of the darkest pixels whose colour tells stain from a black background."""

_STAINED_CHROMA = 0.25
"""Median chroma of the darkest pixels above which they are stained (absorbing), not black."""


def _subsample(image: np.ndarray) -> np.ndarray:
    """The grid of at most about 256 x 256 pixels that the statistics are taken on."""
    sample = image[:: max(1, image.shape[0] // 256), :: max(1, image.shape[1] // 256)]
    return sample.astype(np.float32)


def _range(sample: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    low, high = np.percentile(sample, percentiles)
    if high - low < 1e-6:
        high = low + 1.0
    return float(low), float(high)


def _modality(sample: np.ndarray, low: float, high: float) -> str:
    """:func:`image_modality` on a subsample already scaled by ``low`` and ``high``."""
    # Per-channel arithmetic: numpy reduces over a last axis of length 3 several times slower.
    red, green, blue = sample[..., 0], sample[..., 1], sample[..., 2]
    scale = 1.0 / (high - low)
    gray = (red + green + blue) / 3
    chroma = np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)
    if chroma.mean() * scale > _COLOUR:
        dark_level, median = np.percentile(gray, [_STAINED_SHARE, 50.0])
        if np.median(chroma[gray <= dark_level]) * scale > _STAINED_CHROMA:
            return "histology"
    else:
        median = np.median(gray)
    return "brightfield" if (median - low) * scale > 0.5 else "fluorescence"


def image_modality(image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)) -> str:
    """How an image was made, as far as its polarity goes: emitted or absorbed light.

    - ``"histology"``: a stained (colour) image whose darkest pixels are themselves coloured,
      as stains absorb some colours and pass others (hematoxylin leaves nuclei purple, never
      black). Nuclei are the dark side, whether or not there is a bright background, so dense
      H&E tissue counts as well as stained cells on a white slide.
    - ``"brightfield"``: otherwise, a median gray level above one half of the robust intensity
      range: a bright background with dark nuclei.
    - ``"fluorescence"``: the rest, bright nuclei on a dark background, in gray or in colour
      (DAPI blue on black: the darkest pixels are black, with no colour).

    The statistics are taken on a grid of about 256 x 256 pixels, scaled to the ``percentiles``
    range over all channels, as :func:`normalization_stats` does. On the 531 images of the DSB
    2018 training folder the polarity is the one the median gray level alone gives (432
    fluorescence images not inverted, 99 brightfield and histology images inverted).
    :func:`nucleuseg.data.image_kind` sorts images into DSB kinds for splits and score tables;
    this function only decides the polarity, and calls every stained image ``"histology"``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` image of any integer or float dtype.
    percentiles : (float, float)
        Low and high percentiles of the intensity range.

    Returns
    -------
    str
        One of :data:`MODALITIES`.

    Raises
    ------
    InputError
        If ``image`` is not a valid image (see :func:`as_rgb`).

    Examples
    --------
    >>> tissue = np.empty((64, 64, 3), np.uint8)
    >>> tissue[:] = (225, 150, 195)                 # pink stroma, no bright background
    >>> tissue[4:60, 4:60] = (110, 60, 160)         # purple nuclei over most of the field
    >>> image_modality(tissue), normalization_stats(tissue).invert
    ('histology', True)
    >>> dapi = np.zeros((64, 64, 3), np.uint8)
    >>> dapi[20:30, 20:30] = (0, 30, 220)           # a blue nucleus on black
    >>> image_modality(dapi), image_modality(255 - dapi[..., 2])
    ('fluorescence', 'brightfield')
    """
    sample = _subsample(as_rgb(image))
    return _modality(sample, *_range(sample, percentiles))


def normalization_stats(
    image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)
) -> NormalizationStats:
    """Robust intensity range of an ``(H, W, 3)`` image and whether to invert it.

    The range is taken over all channels together (so H&E keeps its colour balance). The image is
    inverted unless :func:`image_modality` finds fluorescence: when the background is bright
    (median gray level above one half, after scaling) or the image is stained, nuclei are dark.

    Examples
    --------
    >>> img = np.full((10, 10, 3), 200, np.uint8); img[4:6, 4:6] = 20
    >>> normalization_stats(img).invert
    True
    """
    sample = _subsample(image)
    low, high = _range(sample, percentiles)
    invert = _modality(sample, low, high) != "fluorescence"
    return NormalizationStats(low, high, invert)


def normalize(image: np.ndarray, stats: NormalizationStats | None = None) -> np.ndarray:
    """``float32`` image in about ``[0, 1]`` with bright nuclei (see module docstring).

    Examples
    --------
    >>> img = np.zeros((8, 8, 3), np.uint8); img[2:4, 2:4] = 255
    >>> x = normalize(img)
    >>> x.dtype, float(x.max()), float(x.min())
    (dtype('float32'), 1.0, 0.0)
    """
    image = as_rgb(image)
    stats = stats or normalization_stats(image)
    x = (image.astype(np.float32) - stats.low) / (stats.high - stats.low)
    np.clip(x, 0.0, 1.0, out=x)
    if stats.invert:
        x = 1.0 - x
    return x


def resize(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resize the first two axes of ``array`` to ``shape`` (``order`` 0 = nearest, 1 = linear).

    Pixel centres are mapped onto each other (``scipy.ndimage.zoom`` with ``grid_mode=True``)
    and the edges are extended (``mode="nearest"``). Linear resizing of a floating-point array
    is done one axis at a time (:func:`_resize_linear`), which gives ``zoom``'s values to within
    round-off at a fraction of its cost.

    Examples
    --------
    >>> resize(np.arange(4.0).reshape(2, 2), (4, 4), order=0).shape
    (4, 4)
    >>> resize(np.array([[0.0, 4.0]]), (1, 4), order=1)
    array([[0., 1., 3., 4.]])
    """
    if order == 1 and np.issubdtype(array.dtype, np.floating):
        return _resize_linear(array, shape)
    factors = [shape[0] / array.shape[0], shape[1] / array.shape[1]] + [1] * (array.ndim - 2)
    out = ndi.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    return out[: shape[0], : shape[1]]


def _resize_linear(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Linear resizing of the first two axes, one axis after the other, in ``array``'s dtype."""
    out = array
    for axis, size in enumerate(shape):
        old = out.shape[axis]
        if size == old:
            continue
        where = np.clip((np.arange(size) + 0.5) * (old / size) - 0.5, 0, old - 1)
        below = np.floor(where).astype(np.intp)
        above = np.minimum(below + 1, old - 1)
        weight = (where - below).astype(out.dtype)
        weight = weight.reshape([size if i == axis else 1 for i in range(out.ndim)])
        low = np.take(out, below, axis=axis)
        out = low + (np.take(out, above, axis=axis) - low) * weight
    return out if out is not array else array.copy()


def median_radius(labels: np.ndarray) -> float | None:
    """Radius of the median-area object of a label image, ``sqrt(area / pi)``; None if empty.

    Examples
    --------
    >>> labels = np.zeros((32, 32), np.int32); labels[2:12, 2:12] = 1  # a 10 x 10 square
    >>> round(median_radius(labels), 3)
    5.642
    >>> median_radius(np.zeros((8, 8), np.int32)) is None
    True
    """
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return None
    return float(np.sqrt(np.median(areas) / np.pi))


def zoom_to_radius(radius: float | None, target: float) -> float:
    """The zoom that brings nuclei of ``radius`` to ``target``, as prediction applies it.

    1.0 when ``radius`` is None or already lies within ``target / 1.5 .. target * 1.5``;
    otherwise ``target / radius`` kept within ``0.5 .. 2``. Training with
    ``TrainingConfig.target_radius`` zooms its images by the same rule, so that the network sees
    nuclei at the sizes that ``InferenceConfig.auto_scale`` gives it.

    Examples
    --------
    >>> zoom_to_radius(3.0, 9.0), zoom_to_radius(12.0, 9.0), zoom_to_radius(30.0, 9.0)
    (2.0, 1.0, 0.5)
    >>> zoom_to_radius(None, 9.0)
    1.0
    """
    if radius is None or target / 1.5 <= radius <= target * 1.5:
        return 1.0
    return float(np.clip(target / radius, 0.5, 2.0))


def random_crop(
    image: np.ndarray,
    labels: np.ndarray,
    crop: int,
    scale: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``crop x crop`` window at zoom ``scale`` (padded by mirroring when too small).

    ``scale > 1`` enlarges nuclei (a smaller source window is read and upsampled).
    """
    source = max(2, round(crop / scale))
    pad_y = max(0, source - image.shape[0])
    pad_x = max(0, source - image.shape[1])
    if pad_y or pad_x:
        pads = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
        image = np.pad(image, (*pads, (0, 0)), mode="symmetric")
        labels = np.pad(labels, pads, mode="constant")
    y = rng.integers(0, image.shape[0] - source + 1)
    x = rng.integers(0, image.shape[1] - source + 1)
    image = image[y : y + source, x : x + source]
    labels = labels[y : y + source, x : x + source]
    if source != crop:
        image = resize(image, (crop, crop), order=1)
        labels = resize(labels, (crop, crop), order=0)
    return image, labels


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one random flip/90-degree rotation (of the 8) to every array alike."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


def random_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, contrast, brightness, colour, blur and noise jitter on a normalised image."""
    x = x ** np.exp(rng.normal(0.0, 0.25))
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    x = x * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    if rng.random() < 0.25:
        x = ndi.gaussian_filter(x, sigma=(rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), 0))
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, rng.uniform(0.005, 0.05), size=x.shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def random_stain(
    image: np.ndarray, rng: np.random.Generator, strength: float = 0.2, shift: float = 0.05
) -> np.ndarray:
    """Stain jitter of a colour image (H&E in particular), on its raw pixels, before normalising.

    The pixels are turned into optical densities and unmixed into hematoxylin, eosin and DAB by
    colour deconvolution with scikit-image's stain matrix (``skimage.color.hed_from_rgb``, as
    :func:`skimage.color.rgb2hed` does); each stain's density is scaled by a factor drawn from
    ``1 +- strength`` and shifted by an optical density drawn from ``+- shift``, then mixed back
    (``skimage.color.rgb_from_hed``). This is the HED jitter of Tellez et al. (2018), which
    imitates the spread of staining between laboratories and slides. Unlike ``rgb2hed``, negative
    densities are kept, so that no jitter gives the image back. Images with no colour (all
    channels equal, as gray images become through :func:`as_rgb`) are returned unchanged, and
    the random stream is then not used.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` image, integer (scaled by its dtype's largest value) or float (scaled by
        ``max(1, image.max())``).
    rng : numpy.random.Generator
    strength : float
        Largest relative change of each stain's density.
    shift : float
        Largest change of each stain's optical density (natural log units).

    Returns
    -------
    numpy.ndarray
        An image of the same shape and dtype, within the same range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> he = np.empty((16, 16, 3), np.uint8); he[:] = (225, 150, 195); he[4:12, 4:12] = (110, 60, 160)
    >>> out = random_stain(he, rng)
    >>> out.shape, out.dtype, bool((out != he).any())
    ((16, 16, 3), dtype('uint8'), True)
    >>> bool((random_stain(he, rng, strength=0.0, shift=0.0) == he).all())
    True
    >>> gray = np.full((8, 8, 3), 90, np.uint8)
    >>> bool((random_stain(gray, rng) == gray).all())
    True
    """
    from skimage.color import hed_from_rgb, rgb_from_hed

    channels = image[..., 0], image[..., 1], image[..., 2]
    if ((channels[0] == channels[1]) & (channels[1] == channels[2])).all():
        return image
    integer = np.issubdtype(image.dtype, np.integer)
    top = float(np.iinfo(image.dtype).max) if integer else max(1.0, float(image.max()))
    density = -np.log(np.maximum(image.astype(np.float32) / top, 1e-6))
    stains = density @ hed_from_rgb.astype(np.float32)
    stains = stains * rng.uniform(1.0 - strength, 1.0 + strength, 3).astype(np.float32)
    stains += rng.uniform(-shift, shift, 3).astype(np.float32)
    rgb = np.clip(np.exp(-(stains @ rgb_from_hed.astype(np.float32))), 0.0, 1.0) * top
    return (np.round(rgb) if integer else rgb).astype(image.dtype)
