"""Data formats by name: how a folder on disk becomes a :class:`~nucleuseg.data.base.Dataset`.

A format is a ``detect(path) -> bool`` that recognises its layout from file names, a
``load(path, labels=None, **options) -> Dataset`` that opens it, and a one-line description of
the layout. Two are built in:

``"dsb"``
    DSB 2018 folders in Kaggle's layout, ``<id>/images/<id>.png`` with ``<id>/masks/*.png``
    (:func:`~nucleuseg.data.dsb.load_dsb`).
``"folders"``
    An ``images/`` folder with a parallel ``labels/`` (or ``masks/``) folder of label images of
    the same names (:func:`~nucleuseg.data.folders.load_folders`).

:func:`load_dataset` opens a folder in whichever format recognises it (``--data`` on the command
line does the same), or in the one named by ``format=`` (``--format``). A new format is one
``detect``, one ``load`` and one call of :func:`register_format`; :func:`list_formats` lists
the names.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from nucleuseg.data.images import write_image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "images").mkdir()
>>> write_image(root / "images" / "a.png", np.zeros((8, 8), np.uint8))
>>> detect_formats(root)
['folders']
>>> load_dataset(root).ids
['a']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nucleuseg.data._listing import is_dir, listing
from nucleuseg.data.base import Dataset
from nucleuseg.data.dsb import load_dsb, resolve_dsb_path
from nucleuseg.data.folders import IMAGES, load_folders
from nucleuseg.data.images import IMAGE_SUFFIXES
from nucleuseg.errors import DatasetError, InputError

Detect = Callable[[Path], bool]
Load = Callable[..., Dataset]


@dataclass(frozen=True)
class DataFormat:
    """A registered data format.

    Attributes
    ----------
    name : str
        The name ``load_dataset(format=...)`` and ``--format`` take.
    detect : callable
        ``detect(path) -> bool``: whether the folder ``path`` is laid out in this format,
        judged from names only (it reads no pixels and raises nothing).
    load : callable
        ``load(path, labels=None, **options) -> Dataset``; ``labels`` is ``True`` (every image
        must have labels), ``False`` (read none) or ``None`` (read them where the layout has
        them).
    layout : str
        A short description of the layout, quoted in errors and in ``--help``.
    """

    name: str
    detect: Detect
    load: Load
    layout: str = ""


_FORMATS: dict[str, DataFormat] = {}


def register_format(name: str, detect: Detect, load: Load, layout: str = "") -> DataFormat:
    """Register a data format under ``name`` (replacing any format of that name).

    Parameters
    ----------
    name : str
        The format's name.
    detect : callable
        ``detect(path: Path) -> bool``, see :class:`DataFormat`.
    load : callable
        ``load(path: Path, labels: bool | None = None, **options) -> Dataset``.
    layout : str
        A short description of the layout, for error messages.

    Returns
    -------
    DataFormat

    Raises
    ------
    InputError
        If the name is empty or ``detect`` or ``load`` is not callable.

    Examples
    --------
    A folder of PNG images, images only:

    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from nucleuseg.data.base import Sample
    >>> from nucleuseg.data.images import read_image, write_image
    >>> from nucleuseg.data.kinds import image_kind
    >>> def detect(path):
    ...     return any(path.glob("*.png")) and not (path / "images").exists()
    >>> def load(path, labels=None):
    ...     files = {p.stem: p for p in sorted(path.glob("*.png"))}
    ...     def sample(image_id):
    ...         image = read_image(files[image_id])
    ...         return Sample(image_id, image, None, image_kind(image))
    ...     return Dataset(list(files), sample, path.name)
    >>> _ = register_format("png-folder", detect, load, "*.png, images only")
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "plate"
    >>> root.mkdir()
    >>> write_image(root / "well-a1.png", np.zeros((4, 4), np.uint8))
    >>> load_dataset(root), detect_formats(root)
    (Dataset('plate', 1 images), ['png-folder'])
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"name must be a non-empty string, got {name!r}")
    for argument, value in (("detect", detect), ("load", load)):
        if not callable(value):
            raise InputError(f"data format {name!r}: {argument} must be callable, got {value!r}")
    _FORMATS[name] = DataFormat(name, detect, load, layout)
    return _FORMATS[name]


def list_formats() -> list[str]:
    """Names of the registered data formats, in order of registration.

    Examples
    --------
    >>> list_formats()[:2]
    ['dsb', 'folders']
    """
    return list(_FORMATS)


def get_format(name: str) -> DataFormat:
    """The data format registered under ``name``.

    Raises
    ------
    InputError
        If no format has that name; the message lists the registered ones.

    Examples
    --------
    >>> get_format("dsb").layout
    '<id>/images/<id>.png with <id>/masks/*.png (DSB 2018, Kaggle)'
    """
    if name not in _FORMATS:
        raise InputError(f"unknown data format {name!r}; registered: {list_formats()}")
    return _FORMATS[name]


def detect_formats(path: str | os.PathLike) -> list[str]:
    """Names of the registered formats that recognise the folder ``path`` (often one, or none).

    A relative path that does not exist is looked up under ``$NUCLEUSEG_DSB``.

    Raises
    ------
    DatasetError
        If the folder does not exist.

    Examples
    --------
    >>> import tempfile
    >>> detect_formats(tempfile.mkdtemp())
    []
    """
    root = resolve_dsb_path(path)
    found = []
    for fmt in _FORMATS.values():
        try:
            if fmt.detect(root):
                found.append(fmt.name)
        except (OSError, DatasetError):
            continue  # an unreadable layout is not this format's
    return found


def load_dataset(
    path: str | os.PathLike,
    format: str | None = None,
    labels: bool | None = None,
    **options,
) -> Dataset:
    """Open a dataset folder in its format: the one named, or the one that recognises it.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset folder. A relative path that does not exist is looked up under
        ``$NUCLEUSEG_DSB``.
    format : str, optional
        A name from :func:`list_formats`; by default the format is detected from the layout.
    labels : bool, optional
        ``True``: every image must have labels; ``False``: read none (to predict); ``None``
        (default): read them where the layout has them.
    **options
        Passed on to the format's loader (e.g. ``cache`` or ``overlap`` of
        :func:`~nucleuseg.data.dsb.load_dsb`).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        If the folder does not exist, is empty, no format recognises it (the message names the
        formats tried and their layouts) or several do (then name one with ``format``); and
        whatever the format's loader raises.
    InputError
        If ``format`` is not registered.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from nucleuseg.data.images import write_image
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "stage1_test"
    >>> (root / "x" / "images").mkdir(parents=True)
    >>> write_image(root / "x" / "images" / "x.png", np.zeros((4, 6), np.uint8))
    >>> load_dataset(root, cache=False)
    DSBDataset('stage1_test', 1 images)
    >>> other = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (other / "notes.txt").write_text("not an image")
    >>> load_dataset(other)
    Traceback (most recent call last):
    ...
    nucleuseg.errors.DatasetError: ...: not a dataset in any registered format; tried dsb (...
    """
    if format is not None:
        return get_format(format).load(resolve_dsb_path(path), labels=labels, **options)
    root = resolve_dsb_path(path)
    found = detect_formats(root)
    if len(found) > 1:
        raise DatasetError(
            f"{root}: laid out as several data formats ({', '.join(found)}); name one with "
            "format= (--format on the command line)"
        )
    if not found:
        if not listing(root):
            raise DatasetError(f"{root}: empty dataset (an empty folder)")
        tried = "; ".join(f"{f.name} ({f.layout})" for f in _FORMATS.values())
        raise DatasetError(
            f"{root}: not a dataset in any registered format; tried {tried}. Name one with "
            "format= (--format on the command line) to see what does not fit"
        )
    return _FORMATS[found[0]].load(root, labels=labels, **options)


# --------------------------------------------------------------------------- built-in formats

_STAGES = ("stage1_train", "stage1_test", "stage2_test")


def _is_dsb(path: Path) -> bool:
    """A folder of ``<id>/images/`` folders (or the folder that holds ``stage1_train/``)."""
    if not path.is_dir():
        return False
    for entry in listing(path):
        if is_dir(entry) and (entry.name in _STAGES or os.path.isdir(Path(entry.path) / IMAGES)):
            return True
    return False


def _load_dsb(path: Path, labels: bool | None = None, **options) -> Dataset:
    """:func:`~nucleuseg.data.dsb.load_dsb`, whose ``masks`` option is ``labels`` here."""
    if labels is not None:
        if options.get("masks") is not None:
            raise InputError("give labels or masks, not both")
        options["masks"] = labels
    return load_dsb(path, **options)


def _is_folders(path: Path) -> bool:
    """A folder with an ``images/`` folder holding at least one image file."""
    images = path / IMAGES
    if not images.is_dir():
        return False
    return any(
        os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and not is_dir(e)
        for e in listing(images)
    )


register_format(
    "dsb", _is_dsb, _load_dsb, "<id>/images/<id>.png with <id>/masks/*.png (DSB 2018, Kaggle)"
)
register_format(
    "folders", _is_folders, load_folders, "images/*.png with labels/*.png of the same names"
)
