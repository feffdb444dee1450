"""Tell the three kinds of DSB 2018 image apart: fluorescence, brightfield and histology.

The kind drives the stratified split and the per-kind score breakdown; it is a heuristic on
three numbers, all independent of the bit depth and of the exposure:

- **Background darkness.** In fluorescence the background is dark and the nuclei bright, so
  the intensity distribution is skewed to the right (few bright pixels) and the median, which
  falls on background, is low compared with the brightest pixels. In brightfield and stained
  tissue the background is light: the median is close to the top and the skew is negative.
- **Colour.** The mean spread between the largest and smallest channel, relative to the
  brightest pixels. Grayscale images have none.
- **Background colour.** The same spread over the brighter half of the pixels. Stained tissue
  sections (H&E: pink eosin, purple hematoxylin) have a coloured background; stained cells on a
  slide have a white or gray one.

Decision: a dark background is ``"fluorescence"`` (whatever the colour); a light gray background
is ``"brightfield"``; a light coloured image is ``"histology"`` when its background is coloured
and ``"brightfield"`` when it is white or gray. On the 531 images of the DSB 2018 development
folder this gives 432 fluorescence, 42 brightfield (13 gray, 29 stained cells on a white
background) and 57 histology images, with wide margins around every threshold.
"""

from __future__ import annotations

import numpy as np

from nucleuseg.data.base import KINDS
from nucleuseg.errors import InputError

_SAMPLE_PIXELS = 65_536
"""The statistics are taken on a regular grid of about this many pixels."""

_DARK_SKEW = 1.0
"""Intensity skewness above which the background is dark (fluorescence)."""

_DARK_MEDIAN = 0.45
"""Median / 99.5th percentile below which the background is dark."""

_COLOUR = 0.03
"""Mean channel spread (relative to the brightest pixels) above which an image is in colour."""

_COLOURED_BACKGROUND = 0.12
"""Channel spread over the brighter half above which the background is stained (tissue)."""


def image_kind(image: np.ndarray) -> str:
    """Classify an image as ``"fluorescence"``, ``"brightfield"`` or ``"histology"``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, 3)`` image of any integer or float dtype.

    Returns
    -------
    str
        One of :data:`~nucleuseg.data.base.KINDS`. See the module notes for the rule.

    Raises
    ------
    InputError
        If ``image`` is not 2-D or ``(H, W, 3)``, is empty, or holds NaN or infinity.

    Examples
    --------
    >>> import numpy as np
    >>> dark = np.full((64, 64), 10, np.uint8)
    >>> dark[20:30, 20:30] = 200                        # a bright nucleus on black
    >>> image_kind(dark)
    'fluorescence'
    >>> image_kind(255 - dark)                          # a dark nucleus on white
    'brightfield'
    >>> tissue = np.empty((64, 64, 3), np.uint8)
    >>> tissue[:] = (180, 165, 200)                     # lavender stain everywhere
    >>> tissue[20:30, 20:30] = (90, 40, 160)            # a purple nucleus
    >>> image_kind(tissue)
    'histology'
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.size == 0:
        raise InputError(f"image must be (H, W) or (H, W, 3) and non-empty, got {image.shape}")
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number):
        raise InputError(f"image must have a numeric dtype, got {image.dtype}")
    step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / _SAMPLE_PIXELS))))
    channels = 3 if image.ndim == 3 else 1
    pixels = image[::step, ::step].astype(np.float32).reshape(-1, channels)
    if not np.isfinite(pixels).all():
        raise InputError("image holds NaN or infinite values")
    gray = pixels.mean(axis=1)
    low, median, top = np.percentile(gray, [1.0, 50.0, 99.5])
    spread = float(gray.std())
    skew = float(np.mean((gray - gray.mean()) ** 3)) / spread**3 if spread > 0 else 0.0
    dark = skew > _DARK_SKEW or (median - min(low, 0.0)) <= _DARK_MEDIAN * (top - min(low, 0.0))
    if dark:
        return KINDS[0]
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    brightest = float(np.percentile(pixels.max(axis=1), 99.5))
    if brightest <= 0 or chroma.mean() <= _COLOUR * brightest:
        return KINDS[1]
    background = chroma[gray >= median].mean()
    return KINDS[2] if background > _COLOURED_BACKGROUND * brightest else KINDS[1]
