"""Images with label images: an ``images/`` folder and a parallel ``labels/`` folder.

The layout that StarDist, Cellpose and most annotation tools use::

    DIR/
        images/<name>.png        one image per file: PNG, TIFF, JPEG or BMP
        labels/<name>.png        its label image: PNG or TIFF, 0 = background, one id per nucleus

- The image id is the image's file name without its ending (``images/cell-07.tif`` is
  ``"cell-07"``); two images with one id (``a.png`` and ``a.tif``) are an error.
- The label folder is ``labels/`` or ``masks/`` (not both). The label image of ``<name>`` is
  ``<name>.png``, ``.tif`` or ``.tiff``; ``<name>_labels.*`` (as ``nucleuseg predict`` writes)
  and ``<name>_masks.*`` are accepted too. It must be lossless: a JPEG or BMP there is an
  error. Two label images for one image, or one whose image is missing, are errors.
- Without a label folder the dataset has no labels (``Sample.labels`` is ``None``), which is
  enough to predict and to write a submission. With one, every image needs its label image,
  unless ``labels=False`` leaves them all out.
- Hidden files (``.name``), subfolders and files with other endings are ignored, so a folder
  that a tool wrote with its other outputs (flows, ``.npy`` files, logs) can be read as it is.

:func:`load_folders` checks the layout from file names only and returns a lazy
:class:`~nucleuseg.data.base.Dataset`: each sample is read when it is asked for, and a label
image whose size differs from its image's is refused then. It is the ``"folders"`` format of
:func:`nucleuseg.data.formats.load_dataset`.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from nucleuseg.data.images import write_image
>>> root = pathlib.Path(tempfile.mkdtemp()) / "plate1"
>>> (root / "images").mkdir(parents=True)
>>> (root / "labels").mkdir()
>>> labels = np.zeros((8, 8), np.uint16)
>>> labels[1:4, 1:4], labels[5:7, 2:6] = 1, 2
>>> for name in ("a", "b"):
...     write_image(root / "images" / f"{name}.png", np.where(labels > 0, 200, 10).astype(np.uint8))
...     write_image(root / "labels" / f"{name}.png", labels)
>>> ds = load_folders(root)
>>> ds, ds.ids, int(ds["b"].labels.max()), ds[0].image.shape
(Dataset('plate1', 2 images), ['a', 'b'], 2, (8, 8, 3))
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from nucleuseg.data._listing import is_dir, listing, shown
from nucleuseg.data.base import Dataset, Sample
from nucleuseg.data.dsb import resolve_dsb_path
from nucleuseg.data.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, read_image, read_labels
from nucleuseg.data.kinds import image_kind
from nucleuseg.errors import DatasetError, InputError

IMAGES = "images"
"""The folder of images."""

LABEL_FOLDERS: tuple[str, ...] = ("labels", "masks")
"""The names the folder of label images may have."""

LABEL_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff")
"""File name endings of label images (lossless formats only)."""

LABEL_NAME_ENDINGS: tuple[str, ...] = ("_labels", "_masks")
"""Endings of a label file's name, before its suffix, that name the same image without them."""


def load_folders(
    path: str | os.PathLike,
    labels: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Dataset:
    """Open an ``images/`` + ``labels/`` folder (see the module docstring) as a lazy dataset.

    Parameters
    ----------
    path : str or os.PathLike
        The folder holding ``images/`` (and ``labels/`` or ``masks/``). A relative path that
        does not exist is looked up under ``$NUCLEUSEG_DSB``, as for
        :func:`~nucleuseg.data.dsb.load_dsb`.
    labels : bool, optional
        ``True`` requires a label image for every image; ``False`` leaves labels out (they are
        ``None``); ``None`` (default) reads them when there is a label folder.
    max_pixels : int
        Refuse, on access, images and label images with more than this many pixels.

    Returns
    -------
    Dataset
        Ids are the image names without their endings, sorted.

    Raises
    ------
    DatasetError
        If the folder or its ``images/`` folder is missing, ``images/`` holds no image, two
        images share a name, there are both ``labels/`` and ``masks/``, a label image is a
        JPEG or BMP, has no image or shares an image with another one, or some images have no
        label image (with ``labels=None`` or ``True``); on access, if a label image's size
        differs from its image's.
    ImageReadError
        On access, if an image or label image cannot be read or is not a valid label image.
    InputError
        If an option is invalid.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from nucleuseg.data.images import write_image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "images").mkdir()
    >>> write_image(root / "images" / "x.tif", np.zeros((4, 6), np.uint8))
    >>> ds = load_folders(root)
    >>> ds["x"].labels is None, ds.info("x")
    (True, {'kind': 'fluorescence', 'shape': (4, 6)})
    """
    if labels not in (None, True, False):
        raise InputError(f"labels must be True, False or None, got {labels!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    root = resolve_dsb_path(path)
    images = _image_files(root)
    label_paths = None if labels is False else _label_paths(root, images, labels)

    def load(image_id: str) -> Sample:
        image = read_image(images[image_id], max_pixels=max_pixels)
        label_image = None
        if label_paths is not None:
            label_image = read_labels(label_paths[image_id], max_pixels, shape=image.shape[:2])
        return Sample(image_id, image, label_image, image_kind(image))

    return Dataset(sorted(images), load, root.name)


def label_files(folder: str | os.PathLike, ids: Collection[str] | None = None) -> dict[str, Path]:
    """``{image_id: file}`` for the label images in ``folder``.

    A file ``<name>.png|tif|tiff`` is the label image of ``<name>``, or, when ``<name>`` ends
    in ``_labels`` or ``_masks``, of the name without that ending (``a_labels.png`` is ``"a"``'s,
    as ``nucleuseg predict`` writes it). A name that is itself in ``ids`` is kept whole, so an
    image may be called ``x_masks``. Hidden files, subfolders and other files are ignored.

    Parameters
    ----------
    folder : str or os.PathLike
        A folder of label images.
    ids : collection of str, optional
        The image ids the files belong to, when known.

    Raises
    ------
    DatasetError
        If the folder cannot be listed, or two files name the same image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a_labels.png", "b.tif", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> sorted((i, p.name) for i, p in label_files(folder).items())
    [('a', 'a_labels.png'), ('b', 'b.tif')]
    """
    folder = Path(folder)
    known = set(ids or ())
    found: dict[str, Path] = {}
    for entry in listing(folder):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in LABEL_SUFFIXES or is_dir(entry):
            continue
        image_id = stem
        if stem not in known:
            for ending in LABEL_NAME_ENDINGS:
                if stem.endswith(ending) and len(stem) > len(ending):
                    image_id = stem[: -len(ending)]
                    break
        if image_id in found:
            raise DatasetError(
                f"{folder}: two label images for image {image_id!r}: {found[image_id].name} "
                f"and {entry.name}"
            )
        found[image_id] = Path(entry.path)
    return found


def _image_files(root: Path) -> dict[str, Path]:
    """``{image_id: file}`` of ``root/images``."""
    folder = root / IMAGES
    if not folder.is_dir():
        raise DatasetError(f"{root}: no {IMAGES}/ folder")
    files: dict[str, Path] = {}
    for entry in listing(folder):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in IMAGE_SUFFIXES or is_dir(entry):
            continue
        if stem in files:
            raise DatasetError(
                f"{folder}: two images named {stem!r}: {files[stem].name} and {entry.name}"
            )
        files[stem] = Path(entry.path)
    if not files:
        raise DatasetError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _label_paths(
    root: Path, images: dict[str, Path], labels: bool | None
) -> dict[str, Path] | None:
    """``{image_id: label file}`` for every image, or ``None`` when the dataset has no labels."""
    present = [name for name in LABEL_FOLDERS if (root / name).is_dir()]
    if len(present) > 1:
        raise DatasetError(
            f"{root}: both {present[0]}/ and {present[1]}/ folders; keep the label images in one"
        )
    if not present:
        if labels:
            raise DatasetError(f"{root}: no labels/ (or masks/) folder of label images")
        return None
    folder = root / present[0]
    for entry in listing(folder):
        suffix = os.path.splitext(entry.name)[1].lower()
        if suffix in IMAGE_SUFFIXES and suffix not in LABEL_SUFFIXES and not is_dir(entry):
            raise DatasetError(
                f"{entry.path}: a label image must be lossless ({', '.join(LABEL_SUFFIXES)}), "
                f"not {suffix}"
            )
    found = label_files(folder, ids=images)
    orphans = sorted(set(found) - set(images))
    if orphans:
        first = found[orphans[0]]
        raise DatasetError(
            f"{first}: a label image without an image: no {orphans[0]}.* in {root / IMAGES}"
            + (f" ({len(orphans)} such label images: {shown(orphans)})" if len(orphans) > 1 else "")
        )
    lacking = sorted(set(images) - set(found))
    if lacking:
        raise DatasetError(
            f"{folder}: {len(lacking)} of {len(images)} images have no label image "
            f"({shown(lacking)}); pass labels=False to load the images only"
        )
    return found
