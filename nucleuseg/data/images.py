"""Read and write image and mask files: PNG, TIFF, JPEG and BMP to validated numpy arrays.

Every image comes back in the layout of :class:`~nucleuseg.data.base.Sample`: ``(H, W, 3)``,
``uint8`` or ``uint16``. Grayscale is repeated into three equal channels and an alpha channel is
dropped. Files whose pixels would need a guess to turn into that layout are refused with an
:class:`~nucleuseg.errors.ImageReadError` that names the file and the problem: palette (``P``),
1-bit, floating-point and two-channel (gray + alpha) images, and anything else but gray, RGB and
RGBA.

TIFF files are read with tifffile (which keeps 16-bit colour); the other formats with Pillow.
Pillow reads 16-bit colour PNGs as 8-bit; 16-bit grayscale PNGs stay ``uint16``.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "gray.png"
>>> write_image(path, np.array([[0, 128], [255, 64]], np.uint8))
>>> image = read_image(path)
>>> image.shape, image.dtype, image[0, 1].tolist()
((2, 2, 3), dtype('uint8'), [128, 128, 128])
"""

from __future__ import annotations

import io
import os
import threading
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from nucleuseg._atomic import atomic_write
from nucleuseg.errors import DatasetError, ImageReadError, InputError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
"""File name endings :func:`read_image` and :func:`read_mask` accept (case-insensitive)."""

_UINT16_MAX = 65_535

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest ``height * width`` read by default; larger files are refused before decoding."""

_PIL_FORMATS = ("PNG", "JPEG", "BMP")
_MAX_BYTES_PER_PIXEL = 8  # 16-bit RGBA stored uncompressed
_MAX_EXTRA_BYTES = 64 * 2**20  # headers, metadata, embedded profiles and thumbnails
_MAX_TIFF_PAGES = 16  # pages counted before a TIFF is called a stack of "at least" that many
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PIL_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, IndexError)

# Pillow's own decompression-bomb check runs inside Image.open and reads a module global; the
# size check of this module replaces it, so the global is switched off while a header is parsed.
# The lock keeps concurrent readers (dataset preloading uses threads) from restoring it early.
_OPEN_LOCK = threading.Lock()

_CHANNEL_HINT = " (for one channel of a multi-channel image: channel=N, --channel N)"

_UNSUPPORTED_MODES = {
    "P": "palette images (mode P)",
    "PA": "palette images with alpha (mode PA)",
    "1": "1-bit images (mode 1)",
    "F": "floating-point images (mode F)",
    "LA": "2-channel images (gray + alpha, mode LA)",
    "La": "2-channel images (gray + alpha, mode La)",
}


def read_image(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, channel: int | None = None
) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` ``uint8`` or ``uint16`` array.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, TIFF, JPEG or BMP file.
    max_pixels : int
        Refuse images with more than this many pixels (``height * width``). The size is read
        from the file header, before any pixel is decoded.
    channel : int, optional
        Keep only this channel (0-based) of a multi-channel image, as gray: the nuclear stain of
        a fluorescence image. Any number of channels is then accepted (see
        :func:`read_channels` for the layouts); a gray image has the one channel 0.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` array. RGBA loses its alpha channel; grayscale (8- or 16-bit), and the
        chosen ``channel``, is repeated into three channels; 16-bit data stays ``uint16``.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, corrupt or truncated, larger than ``max_pixels``, or holds
        a palette, 1-bit, floating-point, two-channel or otherwise unsupported image (without
        ``channel``: also more channels than RGBA, or a TIFF of several pages).
    InputError
        If ``channel`` is not an integer or the image has no such channel.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rgba.png"
    >>> write_image(path, np.full((2, 3, 4), 7, np.uint8))
    >>> read_image(path).shape
    (2, 3, 3)
    >>> read_image(path, channel=3)[..., 0]  # the alpha channel, as gray
    array([[7, 7, 7],
           [7, 7, 7]], dtype=uint8)
    """
    path = Path(path)
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, int | np.integer):
            raise InputError(f"{path}: channel must be an integer, got {channel!r}")
        channels = read_channels(path, max_pixels)
        count = channels.shape[2]
        if not 0 <= channel < count:
            raise InputError(
                f"{path}: no channel {channel}: the image has {count} channel"
                + ("" if count == 1 else f"s (0 to {count - 1})")
            )
        return np.repeat(channels[:, :, int(channel), None], 3, axis=2)
    try:
        pixels, mode = _decode(path, max_pixels)
    except ImageReadError as err:
        if " pages (a stack)" in str(err):
            raise ImageReadError(f"{err}{_CHANNEL_HINT}") from None
        raise
    if mode in ("RGB", "RGB;16"):
        return pixels
    if mode in ("RGBA", "RGBA;16"):
        return np.ascontiguousarray(pixels[:, :, :3])
    if mode in ("L", "I;16"):
        return np.repeat(pixels[:, :, None], 3, axis=2)
    hint = _CHANNEL_HINT if mode in ("LA", "La") or mode.endswith(" channels") else ""
    raise ImageReadError(f"{path}: {_describe_mode(mode)}{hint}")


def read_channels(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read every channel of an image file as an ``(H, W, C)`` ``uint8`` or ``uint16`` array.

    For multi-channel fluorescence, where each channel is one stain. The layouts read:

    - PNG, JPEG, BMP: gray (one channel), RGB (three) and RGBA (four, alpha last);
    - TIFF of one page: ``(H, W)``, ``(H, W, C)`` (interleaved samples) and ``(C, H, W)``
      (planar samples), any number of channels;
    - TIFF of several pages that hold one image's channels, ``(C, H, W)``: what ImageJ and
      OME-TIFF write for a channel axis, and what ``tifffile.imwrite`` writes for a
      ``(C, H, W)`` array. A stack along Z or time, or pages of different sizes, is refused.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.
    max_pixels : int
        Refuse images with more than this many pixels (``height * width``), before decoding.

    Raises
    ------
    ImageReadError
        If the file cannot be read, is larger than ``max_pixels``, is not 8- or 16-bit unsigned
        integers, or is a stack rather than one image.

    Examples
    --------
    >>> import tempfile, pathlib, tifffile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cells.tif"
    >>> tifffile.imwrite(path, np.zeros((5, 8, 9), np.uint16), photometric="minisblack")
    >>> read_channels(path).shape  # five channels, (C, H, W) in the file
    (8, 9, 5)
    """
    path = Path(path)
    if _is_tiff(path):
        return _tiff_channels(path, max_pixels)
    pixels, mode = _decode(path, max_pixels)
    if mode in ("L", "I;16"):
        return pixels[:, :, None]
    if mode in ("RGB", "RGBA"):
        return pixels
    raise ImageReadError(f"{path}: {_describe_mode(mode)}")


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a one-nucleus binary mask file as an ``(H, W)`` boolean array.

    A mask file is single-channel: 8-bit (``L``, as DSB 2018 ships them: 0 and 255), 16-bit or
    1-bit. It holds 0 for background and exactly one other value for the nucleus.

    Parameters
    ----------
    path : str or os.PathLike
        The mask file.
    shape : (int, int), optional
        The ``(H, W)`` the mask must have (its image's); checked from the header before decoding.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, ``True`` on the nucleus.

    Raises
    ------
    ImageReadError
        If the file cannot be read or is not single-channel (colour, palette, float, ...).
    DatasetError
        If the mask has more than one foreground value, no foreground, no background, or a size
        other than ``shape``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mask.png"
    >>> write_image(path, np.array([[0, 255], [0, 0]], np.uint8))
    >>> read_mask(path, shape=(2, 2))
    array([[False,  True],
           [False, False]])
    """
    path = Path(path)
    expected = None if shape is None else (int(shape[0]), int(shape[1]))
    pixels, mode = _decode(path, DEFAULT_MAX_PIXELS, expected)
    if mode not in ("L", "I;16", "1"):
        raise ImageReadError(f"{path}: a mask must be a single-channel image, got {_short(mode)}")
    foreground = pixels != 0
    values = pixels[foreground]
    if values.size == 0:
        raise DatasetError(f"{path}: empty mask (no foreground pixels)")
    if values.size == pixels.size:
        raise DatasetError(f"{path}: mask is foreground everywhere (no background pixels)")
    low, high = values.min(), values.max()
    if low != high:
        raise DatasetError(
            f"{path}: mask is not binary: foreground values range from {low} to {high}; "
            "expected 0 and one other value"
        )
    return foreground


def read_labels(
    path: str | os.PathLike,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a label image file (one integer id per nucleus, 0 = background) as ``int32``.

    The file must be single-channel: 8-bit or 16-bit PNG, or 8-, 16- or 32-bit TIFF, as written
    by :func:`write_labels` or by most other segmentation tools.

    Parameters
    ----------
    path : str or os.PathLike
        The label image file.
    max_pixels : int
        Refuse label images with more than this many pixels, before decoding.
    shape : (int, int), optional
        The ``(H, W)`` the label image must have (its image's); checked from the header before
        decoding.

    Raises
    ------
    ImageReadError
        If the file cannot be read or is not a single-channel integer image.
    DatasetError
        If its size differs from ``shape``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.png"
    >>> write_image(path, np.array([[0, 3], [300, 3]], np.uint16))
    >>> read_labels(path)
    array([[  0,   3],
           [300,   3]], dtype=int32)
    """
    path = Path(path)
    expected = None if shape is None else (int(shape[0]), int(shape[1]))
    pixels, mode = _decode(path, max_pixels, expected, labels32=True)
    if mode not in ("L", "I;16", "I;32"):
        raise ImageReadError(
            f"{path}: a label image must be single-channel 8-, 16- or 32-bit, got {_short(mode)}"
        )
    if mode == "I;32" and pixels.size and pixels.max() > np.iinfo(np.int32).max:
        raise ImageReadError(f"{path}: labels up to {pixels.max()}, beyond int32")
    return pixels.astype(np.int32)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write a label image atomically: a 16-bit PNG while labels fit, else a 32-bit TIFF.

    Parameters
    ----------
    path : str or os.PathLike
        The file, or its name without an ending (then ``.png`` is added while the largest label
        is at most 65,535 and ``.tif`` beyond). A ``.tif``/``.tiff`` name is 16-bit while the
        labels fit, 32-bit beyond; a ``.png`` name takes labels up to 65,535 only. Its folder
        must exist.
    labels : numpy.ndarray
        ``(H, W)`` integer label image, 0 = background.

    Returns
    -------
    pathlib.Path
        The file written; :func:`read_labels` reads it back.

    Raises
    ------
    InputError
        If ``labels`` is not a label image, labels above 65,535 are to go to a ``.png``, the
        ending is another image format, or the folder does not exist.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_labels(folder / "few", np.array([[0, 1], [2, 2]])).name
    'few.png'
    >>> many = np.arange(70_000).reshape(700, 100)
    >>> path = write_labels(folder / "many", many)
    >>> path.name, int(read_labels(path).max())
    ('many.tif', 69999)
    """
    from nucleuseg.masks import check_labels

    path = Path(path)
    labels = check_labels(labels)
    top = int(labels.max()) if labels.size else 0
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES and suffix not in (".png", ".tif", ".tiff"):
        raise InputError(f"{path}: label images are written as .png or .tif, not {suffix!r}")
    if suffix not in (".png", ".tif", ".tiff"):
        path = path.with_name(path.name + (".png" if top <= _UINT16_MAX else ".tif"))
    if top <= _UINT16_MAX:
        write_image(path, labels.astype(np.uint16))
        return path
    if path.suffix.lower() == ".png":
        raise InputError(
            f"{path}: labels up to {top} do not fit a 16-bit PNG (65,535 at most); write a .tif"
        )
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if min(labels.shape) == 0:
        raise InputError(f"{path}: cannot write an empty image of shape {labels.shape}")
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(np.uint32), photometric="minisblack")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())
    return path


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header without decoding pixels.

    Raises
    ------
    ImageReadError
        If the file is missing, empty or not a readable PNG, TIFF, JPEG or BMP.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> write_image(path, np.zeros((5, 7), np.uint8))
    >>> image_shape(path)
    (5, 7)
    """
    path = Path(path)
    _check_file(path)
    if _is_tiff(path):
        return _tiff_header(path)[0][:2]
    with _open_pil(path) as im:
        return (im.height, im.width)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image atomically as PNG (or TIFF, by the file name ending).

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.png``, ``.tif`` or ``.tiff``. Its folder must exist.
    image : numpy.ndarray
        ``(H, W)`` ``bool``, ``uint8`` or ``uint16`` (``bool`` is written as 0/255), or
        ``(H, W, 3)`` / ``(H, W, 4)`` ``uint8``. TIFF also takes ``(H, W, 3)`` ``uint16``.

    Raises
    ------
    InputError
        If the array or the file name ending is not supported, or the folder does not exist.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.png"
    >>> write_image(path, np.array([[0, 300]], np.uint16))
    >>> read_image(path)[..., 0]
    array([[  0, 300]], dtype=uint16)
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * np.uint8(255)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff"):
        raise InputError(f"{path}: write_image writes .png, .tif or .tiff files, not {suffix!r}")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    gray = image.ndim == 2 and image.dtype in (np.uint8, np.uint16)
    colour8 = image.ndim == 3 and image.shape[2] in (3, 4) and image.dtype == np.uint8
    colour16 = image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint16
    if not (gray or colour8 or (colour16 and suffix != ".png")):
        raise InputError(
            f"{path}: cannot write an array of shape {image.shape} and dtype {image.dtype}; "
            "expected (H, W) bool/uint8/uint16 or (H, W, 3|4) uint8"
            + ("" if suffix != ".png" else " (16-bit colour needs .tif)")
        )
    if min(image.shape[:2]) == 0:
        raise InputError(f"{path}: cannot write an empty image of shape {image.shape}")
    image = np.ascontiguousarray(image)
    buffer = io.BytesIO()
    if suffix == ".png":
        Image.fromarray(image).save(buffer, format="PNG")
    else:
        import tifffile

        tifffile.imwrite(buffer, image, photometric="minisblack" if gray else "rgb")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())


# --------------------------------------------------------------------------- decoding


def _decode(
    path: Path, max_pixels: int, shape: tuple[int, int] | None = None, labels32: bool = False
) -> tuple[np.ndarray, str]:
    """Decode a file to ``(pixels, mode)``; mode is a Pillow-style name of the layout.

    ``pixels`` is ``(H, W)`` for the modes ``L``, ``I;16`` and ``1`` and ``(H, W, C)`` for the
    colour modes ``RGB``, ``RGBA`` (``;16`` suffix for 16-bit). Other modes come back with
    ``pixels`` undecoded (an empty array) so that callers can name them in their error.
    With ``labels32``, a single-channel ``uint32`` TIFF is decoded too (mode ``I;32``).
    """
    size = _check_file(path)
    if _is_tiff(path):
        return _decode_tiff(path, max_pixels, shape, labels32)
    if size > _MAX_BYTES_PER_PIXEL * max_pixels + _MAX_EXTRA_BYTES:
        raise ImageReadError(
            f"{path}: {size} bytes, more than an image of at most max_pixels={max_pixels} pixels "
            "takes"
        )
    # Decoded from memory: a damaged length field (a PNG chunk claiming gigabytes) then cannot
    # make the decoder ask for that much memory in one read.
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from None
    with _open_pil(path, io.BytesIO(data)) as im:
        _check_header_size(path, (im.height, im.width), max_pixels, shape)
        mode = im.mode
        if mode.startswith("I;16"):
            mode = "I;16"
        if mode not in ("L", "RGB", "RGBA", "I;16", "1", "I"):
            return np.empty(0), mode
        try:
            im.load()
        except _PIL_DECODE_ERRORS as err:
            raise ImageReadError(f"{path}: corrupt or truncated image ({err})") from None
        pixels = np.asarray(im)
    if mode == "I;16":
        pixels = pixels.astype(np.uint16, copy=False)
    elif mode == "I":
        # 16-bit grayscale read through Pillow's 32-bit integer mode.
        if pixels.size and (pixels.min() < 0 or pixels.max() > np.iinfo(np.uint16).max):
            raise ImageReadError(f"{path}: 32-bit integer image with values beyond 16 bits")
        pixels, mode = pixels.astype(np.uint16), "I;16"
    return pixels, mode


def _decode_tiff(
    path: Path, max_pixels: int, shape: tuple[int, int] | None, labels32: bool = False
) -> tuple[np.ndarray, str]:
    import tifffile

    (height, width, *channels), dtype, palette = _tiff_header(path)
    _check_header_size(path, (height, width), max_pixels, shape)
    mode = _tiff_mode(dtype, channels[0] if channels else 1, palette)
    if labels32 and mode == "dtype uint32" and not channels:
        mode = "I;32"
    if mode not in ("L", "RGB", "RGBA", "I;16", "RGB;16", "RGBA;16", "1", "I;32"):
        return np.empty(0), mode
    try:
        with tifffile.TiffFile(path) as tif:
            pixels = tif.pages[0].asarray()
    except Exception as err:  # tifffile raises many types on damaged files
        raise ImageReadError(f"{path}: corrupt or truncated TIFF ({err})") from None
    expected = (height, width, *channels)
    if mode in ("L", "I;16", "1", "I;32"):
        expected = (height, width)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
    if pixels.shape != expected or pixels.dtype != dtype:
        # A damaged header can describe one layout and decode to another.
        raise ImageReadError(
            f"{path}: corrupt TIFF: decoded to shape {pixels.shape} and dtype {pixels.dtype}, "
            f"not the {expected} {dtype} its header describes"
        )
    return pixels, mode


def _tiff_channels(path: Path, max_pixels: int) -> np.ndarray:
    """Every channel of a TIFF file as ``(H, W, C)`` (see :func:`read_channels`)."""
    import tifffile

    _check_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            # Pages counted only up to a bound, as in _tiff_header; tif.series, which follows
            # the whole chain, is read only once the chain is known to end.
            pages = _count_pages(path, tif, _MAX_TIFF_PAGES)
            if pages == 0:
                raise ImageReadError(f"{path}: TIFF file holds no image")
            if pages >= _MAX_TIFF_PAGES:
                raise ImageReadError(
                    f"{path}: TIFF holds at least {pages} pages; expected the channels of one image"
                )
            page = tif.pages[0]
            palette = page.photometric == tifffile.PHOTOMETRIC.PALETTE
            dtype = np.dtype(page.dtype)
            if pages == 1:
                source, axes, shape = page, page.axes, tuple(int(n) for n in page.shape)
            else:
                if len(tif.series) != 1:
                    raise ImageReadError(
                        f"{path}: TIFF holds {pages} pages in {len(tif.series)} series (a stack); "
                        "expected the channels of one image"
                    )
                source = tif.series[0]
                axes, shape = source.axes, tuple(int(n) for n in source.shape)
            mode = _tiff_mode(dtype, 1, palette)
            if mode not in ("L", "I;16"):
                raise ImageReadError(f"{path}: {_describe_mode(mode)}")
            kept = [(a, n) for a, n in zip(axes, shape, strict=True) if n > 1 or a in "YX"]
            layout = "".join(a for a, _ in kept)
            if layout not in ("YX", "YXS") and not (len(layout) == 3 and layout[1:] == "YX"):
                raise ImageReadError(
                    f"{path}: TIFF image of shape {shape} (axes {axes}); expected the channels "
                    "of one 2-D image"
                )
            if layout[1:] == "YX" and layout[0] not in "CSQ":
                what = {"Z": "depth (Z)", "T": "time"}.get(layout[0], f"axis {layout[0]}")
                raise ImageReadError(
                    f"{path}: TIFF is a stack along {what} of {kept[0][1]} images; expected the "
                    "channels of one 2-D image"
                )
            height, width = (n for a, n in kept if a in "YX")
            _check_header_size(path, (height, width), max_pixels, None)
            try:
                pixels = np.asarray(source.asarray())
            except Exception as err:  # tifffile raises many types on damaged files
                raise ImageReadError(f"{path}: corrupt or truncated TIFF ({err})") from None
    except ImageReadError:
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: not a readable TIFF file ({err})") from None
    if pixels.size != int(np.prod(shape)) or pixels.dtype != dtype:
        raise ImageReadError(
            f"{path}: corrupt TIFF: decoded to shape {pixels.shape} and dtype {pixels.dtype}, "
            f"not the {shape} {dtype} its header describes"
        )
    pixels = pixels.reshape([n for _, n in kept])
    if layout == "YX":
        return pixels[:, :, None]
    if layout == "YXS":
        return pixels
    return np.ascontiguousarray(np.moveaxis(pixels, 0, 2))


def _tiff_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and palette flag of the first page of a TIFF file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            # Pages are counted only up to a bound: counting them all (len(tif.pages),
            # tif.series) follows the whole chain of page offsets, which a damaged file can
            # make endless.
            pages = _count_pages(path, tif, _MAX_TIFF_PAGES)
            if pages == 0:
                raise ImageReadError(f"{path}: TIFF file holds no image")
            if pages > 1:
                many = f"{pages}" if pages < _MAX_TIFF_PAGES else f"at least {pages}"
                raise ImageReadError(
                    f"{path}: TIFF holds {many} pages (a stack); expected one 2-D image"
                )
            page = tif.pages[0]
            palette = page.photometric == tifffile.PHOTOMETRIC.PALETTE
            page_shape, dtype = tuple(int(n) for n in page.shape), np.dtype(page.dtype)
    except ImageReadError:
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: not a readable TIFF file ({err})") from None
    if len(page_shape) not in (2, 3):
        raise ImageReadError(f"{path}: TIFF image of shape {page_shape}; expected 2-D (+channels)")
    return page_shape, dtype, palette


def _count_pages(path: Path, tif, limit: int) -> int:
    """Pages of an open TIFF file, counted up to ``limit``; a chain of pages that comes back to
    one already seen is a corrupt file."""
    offsets = set()
    while len(offsets) < limit:
        try:
            page = tif.pages[len(offsets)]
        except IndexError:
            break
        if page.offset in offsets:
            raise ImageReadError(f"{path}: corrupt TIFF: its chain of pages loops")
        offsets.add(page.offset)
    return len(offsets)


def _tiff_mode(dtype: np.dtype, channels: int, palette: bool) -> str:
    if palette:
        return "P"
    if dtype.kind == "b":
        return "1"
    if dtype.kind == "f":
        return "F"
    if dtype not in (np.uint8, np.uint16):
        return f"dtype {dtype}"
    bits16 = dtype == np.uint16
    names = {1: "I;16" if bits16 else "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    if channels not in names:
        return f"{channels} channels"
    name = names[channels]
    return name + ";16" if bits16 and channels in (3, 4) else name


def _check_file(path: Path) -> int:
    """The size in bytes of ``path``, which must be a non-empty file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as err:
        raise ImageReadError(f"{path}: cannot access file ({err.strerror or err})") from None
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if stat.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return stat.st_size


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in _TIFF_MAGIC
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from None


def _open_pil(path: Path, source: io.BytesIO | None = None) -> Image.Image:
    """Open ``path`` (or ``source``, its bytes) with Pillow, reading only the header."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path if source is None else source, formats=_PIL_FORMATS)
        except Image.UnidentifiedImageError:
            raise ImageReadError(
                f"{path}: not a PNG, TIFF, JPEG or BMP image, or its header is corrupt"
            ) from None
        except _PIL_DECODE_ERRORS as err:
            raise ImageReadError(f"{path}: corrupt image header ({err})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_header_size(
    path: Path, size: tuple[int, int], max_pixels: int, shape: tuple[int, int] | None
) -> None:
    """Check the ``(height, width)`` read from a file's header before decoding: some pixels,
    at most ``max_pixels`` of them, and ``shape`` when one is required."""
    height, width = size
    if height <= 0 or width <= 0:
        raise ImageReadError(f"{path}: image has no pixels ({height}x{width})")
    if height * width > max_pixels:
        raise ImageReadError(
            f"{path}: image is {height}x{width} = {height * width} pixels, more than "
            f"max_pixels={max_pixels}"
        )
    if shape is not None and (height, width) != shape:
        raise DatasetError(
            f"{path}: size {height}x{width} differs from its image's {shape[0]}x{shape[1]}"
        )


def _short(mode: str) -> str:
    return mode if mode.startswith("dtype") or mode.endswith("channels") else f"mode {mode}"


def _describe_mode(mode: str) -> str:
    what = _UNSUPPORTED_MODES.get(mode, f"images with {_short(mode)}")
    return f"{what} are not supported; save it as 8- or 16-bit grayscale, RGB or RGBA"
