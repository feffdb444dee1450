"""The reader: a DSB 2018 image folder (image + labels layers) or a label image file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nucleuseg.errors import DatasetError, ImageReadError

#: Endings of the label image files the reader opens.
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
#: A file ``<name>_labels.png`` (or ``_masks``) is a label image, as ``nucleuseg predict`` and
#: :func:`nucleuseg.data.label_files` name them (the manifest's ``filename_patterns`` too).
LABEL_ENDINGS = ("_labels", "_masks")

LayerData = tuple[Any, dict, str]


def _is_label_file(path: Path) -> bool:
    return (
        path.suffix.lower() in LABEL_SUFFIXES
        and path.stem.lower().endswith(LABEL_ENDINGS)
        and path.is_file()
    )


def _is_dsb_folder(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir()


def get_reader(path: str | os.PathLike | list) -> Callable[[Any], list[LayerData]] | None:
    """The reader napari calls for ``path``, or ``None`` when it is not one nucleuseg reads.

    nucleuseg reads a DSB 2018 image folder (``<id>/images/<id>.png`` and, when present,
    ``<id>/masks/*.png``: :func:`read_dsb_folder`) and a label image file
    (``<name>_labels.png|tif|tiff`` or ``<name>_masks.*``: :func:`read_label_image`). napari
    opens other files with its own readers.

    Examples
    --------
    >>> get_reader("photo.jpg") is None
    True
    """
    paths = [Path(p) for p in path] if isinstance(path, list) else [Path(path)]
    if paths and all(_is_dsb_folder(p) for p in paths):
        return _read_all(read_dsb_folder)
    if paths and all(_is_label_file(p) for p in paths):
        return _read_all(read_label_image)
    return None


def _read_all(read: Callable[[Path], list[LayerData]]) -> Callable[[Any], list[LayerData]]:
    def reader(path: Any) -> list[LayerData]:
        paths = path if isinstance(path, list) else [path]
        return [layer for p in paths for layer in read(Path(p))]

    return reader


def read_dsb_folder(path: str | os.PathLike) -> list[LayerData]:
    """One image folder of DSB 2018's layout as napari layers: the image and, with masks, labels.

    Parameters
    ----------
    path : str or os.PathLike
        ``<id>/``, holding ``images/<id>.png`` and optionally ``masks/`` with one mask per
        nucleus, read as :func:`nucleuseg.data.load_dsb` reads them (label ``k + 1`` for the
        ``k``-th mask in file-name order; overlapping pixels go to the first mask).

    Returns
    -------
    list of (data, metadata, layer type)
        The image layer (``(H, W, 3)``, RGB) named ``<id>``, then ``<id> masks`` (labels) when
        the folder has masks.

    Raises
    ------
    DatasetError
        If the folder does not follow the layout.
    ImageReadError
        If the image or a mask cannot be read.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from nucleuseg.data import synthetic_sample, write_image
    >>> sample = synthetic_sample(0, size=48)
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "s0"
    >>> (folder / "images").mkdir(parents=True); (folder / "masks").mkdir()
    >>> write_image(folder / "images" / "s0.png", sample.image)
    >>> for k in range(1, int(sample.labels.max()) + 1):
    ...     write_image(folder / "masks" / f"m{k:03d}.png", (sample.labels == k).astype(np.uint8) * 255)
    >>> [(meta["name"], kind) for _, meta, kind in read_dsb_folder(folder)]
    [('s0', 'image'), ('s0 masks', 'labels')]
    """
    from nucleuseg.data.dsb import _scan_image_folder, _Source

    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    image_id = folder.resolve().name
    entry = _scan_image_folder(folder, image_id)
    source = _Source(
        {image_id: entry},
        use_masks=entry.masks is not None,
        labels=None,
        labels_csv=None,
        overlap="first",
        cache=None,
    )
    sample = source.decode(image_id)
    layers: list[LayerData] = [(sample.image, {"name": image_id, "rgb": True}, "image")]
    if sample.labels is not None:
        layers.append((sample.labels, {"name": f"{image_id} masks"}, "labels"))
    return layers


def read_label_image(path: str | os.PathLike) -> list[LayerData]:
    """A label image file as a napari labels layer named after the file.

    Parameters
    ----------
    path : str or os.PathLike
        A single-channel integer PNG or TIFF (:func:`nucleuseg.data.read_labels`).

    Raises
    ------
    ImageReadError
        If the file cannot be read or is not a label image.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from nucleuseg.data import write_labels
    >>> path = write_labels(pathlib.Path(tempfile.mkdtemp()) / "a_labels.png", np.eye(3, dtype=int))
    >>> [(meta["name"], kind, int(data.max())) for data, meta, kind in read_label_image(path)]
    [('a_labels', 'labels', 1)]
    """
    from nucleuseg.data import read_labels

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such label image file")
    return [(read_labels(path), {"name": path.stem}, "labels")]
