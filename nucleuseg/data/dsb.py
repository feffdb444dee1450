"""DSB 2018 folders in Kaggle's layout: ``stage1_train`` (with masks) and ``stage1_test``.

A DSB folder holds one folder per image, named by the image id::

    stage1_train/
        <id>/images/<id>.png     the image (RGBA in DSB 2018)
        <id>/masks/<name>.png    one binary mask per nucleus (absent in stage1_test)

:func:`load_dsb` checks that layout up front (file names only, no pixels) and returns a lazy
:class:`DSBDataset`: pixels are decoded when a sample is first asked for, and the decoded sample
(image, merged label image and kind) goes to the on-disk cache of :mod:`nucleuseg.data.cache`,
so every later load of the same files is a fast read. :func:`preload` decodes every missing
sample in parallel threads with a progress bar; a dataset's :meth:`~DSBDataset.split` calls it
for the samples whose kind is not known yet.

Labels of a folder without masks can come from a Kaggle solution CSV (``labels_csv``).

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from nucleuseg.data.images import write_image
>>> root = pathlib.Path(tempfile.mkdtemp()) / "stage1_train"
>>> for image_id in ("a", "b"):
...     (root / image_id / "images").mkdir(parents=True)
...     (root / image_id / "masks").mkdir()
...     write_image(root / image_id / "images" / f"{image_id}.png", np.zeros((8, 8, 4), np.uint8))
...     mask = np.zeros((8, 8), bool)
...     mask[2:5, 2:5] = True
...     write_image(root / image_id / "masks" / "m1.png", mask)
>>> ds = load_dsb(root, cache=False, progress=False)
>>> ds
DSBDataset('stage1_train', 2 images)
>>> ds["b"].labels.max(), ds[0].image.shape
(np.int32(1), (8, 8, 3))
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleuseg.data._listing import SHOWN, is_dir, listing, shown
from nucleuseg.data.base import Dataset, Sample
from nucleuseg.data.cache import SampleCache, cache_key
from nucleuseg.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    image_shape,
    read_image,
    read_mask,
)
from nucleuseg.data.kinds import image_kind
from nucleuseg.errors import DatasetError, InputError, MaskOverlapError, RLEError
from nucleuseg.masks import OVERLAP_POLICIES, merge_masks
from nucleuseg.progress import progress_bar

DSB_ENV = "NUCLEUSEG_DSB"
"""Environment variable naming the folder that holds ``stage1_train/`` (and ``stage1_test/``)."""

_CSV_OVERLAP = ("error", "first", "last")


def default_workers() -> int:
    """Threads used to decode samples: ``min(4, os.cpu_count())``."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class _ImageFiles:
    """The files of one image id."""

    folder: Path
    image: Path
    masks: tuple[Path, ...] | None  # None: no masks/ folder


class _Source:
    """Decodes the samples of one DSB folder, through the cache when there is one."""

    def __init__(
        self,
        entries: dict[str, _ImageFiles],
        use_masks: bool,
        labels: dict | None,
        labels_csv: Path | None,
        overlap: str,
        cache: SampleCache | None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.entries = entries
        self.max_pixels = max_pixels
        self.use_masks = use_masks
        self.labels = labels
        self.labels_csv = labels_csv
        self.overlap = overlap
        self.cache = cache
        self.keys: dict[str, str] = {}
        if cache is not None:
            extra = f"dsb|masks={use_masks}|overlap={overlap}|csv={_stamp(labels_csv)}"
            for image_id, entry in entries.items():
                sources = [entry.image, *(entry.masks or ())] if use_masks else [entry.image]
                try:
                    self.keys[image_id] = cache_key(sources, extra)
                except OSError as err:
                    raise DatasetError(f"{entry.folder}: cannot read file ({err})") from None

    def cached(self, image_id: str) -> bool:
        return self.cache is not None and self.keys[image_id] in self.cache

    def peek(self, image_id: str) -> dict | None:
        """Kind and shape from the cache without decoding, when the entry exists."""
        if self.cache is None:
            return None
        found = self.cache.peek(self.keys[image_id])
        return None if found is None else {"kind": found[0], "shape": found[1]}

    def load(self, image_id: str) -> Sample:
        if self.cache is not None:
            hit = self.cache.get(self.keys[image_id])
            # An entry cached under a larger max_pixels is decoded again, to be refused.
            if hit is not None and hit.image.shape[0] * hit.image.shape[1] <= self.max_pixels:
                return Sample(image_id, hit.image, hit.labels, hit.kind)
        sample = self.decode(image_id)
        if self.cache is not None:
            self.cache.put(self.keys[image_id], sample.image, sample.labels, sample.kind)
        return sample

    def decode(self, image_id: str) -> Sample:
        entry = self.entries[image_id]
        image = read_image(entry.image, max_pixels=self.max_pixels)
        shape = (int(image.shape[0]), int(image.shape[1]))
        labels = None
        if self.use_masks:
            labels = self._merge(entry, shape)
        elif self.labels is not None:
            labels = self._decode_csv(image_id, entry, shape)
        return Sample(image_id, image, labels, image_kind(image))

    def _merge(self, entry: _ImageFiles, shape: tuple[int, int]) -> np.ndarray:
        names = entry.masks or ()
        masks = [read_mask(path, shape=shape) for path in names]
        try:
            return merge_masks(masks, overlap=self.overlap, shape=shape)
        except MaskOverlapError as err:

            def file_name(match: re.Match) -> str:
                k = int(match.group(1))
                return f"mask {names[k].name}" if 0 <= k < len(names) else match.group(0)

            text = re.sub(r"mask (\d+)", file_name, str(err), count=2)
            raise MaskOverlapError(
                f"{entry.folder / 'masks'}: {text}; see load_dsb(overlap=...)"
            ) from None

    def _decode_csv(self, image_id: str, entry: _ImageFiles, shape: tuple[int, int]) -> np.ndarray:
        from nucleuseg.rle import decode_labels

        rles = self.labels[image_id]
        if rles.shape is not None and tuple(rles.shape) != shape:
            raise DatasetError(_csv_shape_message(self.labels_csv, image_id, rles.shape, shape))
        try:
            return decode_labels(rles.rles, shape, overlap=self.overlap)
        except (RLEError, MaskOverlapError) as err:
            raise type(err)(f"{self.labels_csv}: image {image_id}: {err}") from None


class DSBDataset(Dataset):
    """A lazy :class:`~nucleuseg.data.base.Dataset` over a DSB folder; made by :func:`load_dsb`.

    Samples are decoded on access (or read from the cache). Kinds and shapes are recorded as
    samples are loaded; :meth:`split` and :meth:`kinds` first load, in parallel, the samples
    whose kind is not known yet.

    Attributes
    ----------
    root : pathlib.Path
        The DSB folder.
    labelled : bool
        Whether samples carry labels (from masks or a labels CSV).
    cache : SampleCache or None
        Where decoded samples are kept.
    """

    def __init__(
        self,
        root: Path,
        source: _Source,
        ids: Sequence[str],
        info: dict[str, dict],
        workers: int | None,
        progress: bool,
    ) -> None:
        super().__init__(ids, self._load_and_record, root.name, info)
        self.root = root
        self._source = source
        self.labelled = source.use_masks or source.labels is not None
        self.cache = source.cache
        self._workers = workers
        self._progress = progress

    def __repr__(self) -> str:
        return f"DSBDataset({self.name!r}, {len(self)} images)"

    def preload(self, workers: int | None = None, progress: bool | None = None) -> DSBDataset:
        """Decode, in parallel threads, every sample not in the cache yet; record every kind.

        Without a cache this decodes every sample whose kind is unknown, to learn it.

        Parameters
        ----------
        workers : int, optional
            Threads; defaults to the ``workers`` given to :func:`load_dsb`, else
            :func:`default_workers`.
        progress : bool, optional
            Show a progress bar; defaults to the ``progress`` given to :func:`load_dsb`.

        Returns
        -------
        DSBDataset
            ``self``, so that ``ds = load_dsb(path).preload()`` reads well.

        Raises
        ------
        DatasetError, ImageReadError
            From the first sample that cannot be decoded.
        """
        pending = [i for i in self._ids if i not in self._info or not self._source.cached(i)]
        self._run(pending, workers, progress)
        return self

    def split(self, fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split as :meth:`Dataset.split`, after loading in parallel the samples of unknown kind."""
        self._complete_info()
        return super().split(fraction, seed)

    def kinds(self) -> dict[str, str]:
        """``{image_id: kind}`` for every image, loading in parallel those not known yet."""
        self._complete_info()
        return super().kinds()

    def _complete_info(self) -> None:
        self._run([i for i in self._ids if i not in self._info], None, None)

    def _run(self, ids: list[str], workers: int | None, progress: bool | None) -> None:
        workers = workers if workers is not None else self._workers
        progress = self._progress if progress is None else progress
        _parallel(self._touch, ids, workers, progress, f"decoding {self.name}")

    def _touch(self, image_id: str) -> None:
        self._load_and_record(image_id)

    def _load_and_record(self, image_id: str) -> Sample:
        sample = self._source.load(image_id)
        if image_id not in self._info:
            self._info[image_id] = {"kind": sample.kind, "shape": sample.shape}
        return sample


def load_dsb(
    path: str | os.PathLike,
    masks: bool | None = None,
    labels_csv: str | os.PathLike | None = None,
    cache: bool | str | os.PathLike = True,
    workers: int | None = None,
    overlap: str = "first",
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DSBDataset:
    """Open a DSB 2018 folder in Kaggle's layout as a lazy dataset.

    The layout is checked at once, from file names only; pixels are decoded on first access of
    each sample (then cached). Image ids are the folder names, in sorted order. The label image
    of an image gives label ``k + 1`` to its ``k``-th mask file in sorted name order.

    Parameters
    ----------
    path : str or os.PathLike
        The folder holding one ``<id>/`` folder per image (``stage1_train``, ``stage1_test``).
        A relative path that does not exist is looked up under ``$NUCLEUSEG_DSB``, so
        ``load_dsb("stage1_train")`` works with ``NUCLEUSEG_DSB=/data/dsb2018``.
    masks : bool, optional
        Read labels from the ``masks/`` folders: ``True`` requires every image to have one,
        ``False`` ignores them (labels are ``None``), ``None`` (default) reads them when every
        image has one and gives no labels when none has.
    labels_csv : str or os.PathLike, optional
        A Kaggle solution CSV (``ImageId,EncodedPixels[,Height,Width,Usage]``) whose encodings
        become the labels, e.g. for ``stage1_test``. Its images must be exactly the folder's.
        ``masks/`` folders are then ignored.
    cache : bool or path
        ``True``: cache decoded samples in :func:`~nucleuseg.data.cache.default_cache_dir`; a
        path: cache there; ``False``: decode on every access.
    workers : int, optional
        Threads for :meth:`DSBDataset.preload` and :meth:`DSBDataset.split`; default
        :func:`default_workers`.
    overlap : {"error", "first", "last", "smallest", "largest"}
        Where masks overlap; see :func:`nucleuseg.masks.merge_masks`. With ``labels_csv`` only
        ``"error"``, ``"first"`` and ``"last"`` apply. DSB 2018's own masks overlap in a few
        places (9 pixels in 6 of the 531 images of the development folder), so the default
        gives a shared pixel to the first mask in file-name order; ``"error"`` refuses them.
    progress : bool
        Show progress bars when decoding many samples.
    max_pixels : int
        Refuse, on access, images with more than this many pixels (``height * width``); see
        :func:`~nucleuseg.data.images.read_image`.

    Returns
    -------
    DSBDataset

    Raises
    ------
    DatasetError
        If the folder is missing or empty; an id folder has no ``images/`` folder, no image or
        several, or an image whose name differs from the id; two ids resolve to one folder; a
        symbolic link is broken or loops; a ``masks/`` folder holds a non-image file or a
        subfolder; some images have masks and others not (``masks=None``) or one lacks them
        (``masks=True``); the labels CSV and the folder list different images, or the CSV's
        ``Height,Width`` disagree with an image. On access: a mask of the wrong size, not
        binary, empty or full, or masks that overlap under ``overlap="error"``
        (:class:`~nucleuseg.errors.MaskOverlapError`).
    ImageReadError
        On access: an image or mask file that is corrupt, in an unsupported mode, or larger than
        ``max_pixels``.
    InputError
        If an option is invalid.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from nucleuseg.data.images import write_image
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "stage1_test"
    >>> (root / "x" / "images").mkdir(parents=True)
    >>> write_image(root / "x" / "images" / "x.png", np.zeros((4, 6), np.uint8))
    >>> test = load_dsb(root, cache=False)
    >>> test["x"].labels is None, test.info("x")
    (True, {'kind': 'fluorescence', 'shape': (4, 6)})
    """
    if overlap not in OVERLAP_POLICIES:
        raise InputError(f"overlap must be one of {OVERLAP_POLICIES}, got {overlap!r}")
    if masks not in (None, True, False):
        raise InputError(f"masks must be True, False or None, got {masks!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(cache, bool | str | os.PathLike):
        raise InputError(f"cache must be True, False or a folder, got {cache!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if labels_csv is not None and masks:
        raise InputError("give either masks=True or labels_csv, not both")
    if labels_csv is not None and overlap not in _CSV_OVERLAP:
        raise InputError(f"with labels_csv, overlap must be one of {_CSV_OVERLAP}, got {overlap!r}")

    root = resolve_dsb_path(path)
    entries = _scan_dataset(root)
    ids = sorted(entries)
    use_masks = _use_masks(root, entries, masks if labels_csv is None else False)
    table = csv_path = None
    if labels_csv is not None:
        csv_path = Path(labels_csv)
        table = _read_labels_csv(csv_path, entries)
    store = None
    if cache is not False:
        store = SampleCache(None if cache is True else cache)
    source = _Source(entries, use_masks, table, csv_path, overlap, store, max_pixels)
    info = {}
    for image_id in ids:
        known = source.peek(image_id)
        if known is not None:
            info[image_id] = known
    return DSBDataset(root, source, ids, info, workers, progress)


def preload(dataset: Dataset, workers: int | None = None, progress: bool = True) -> Dataset:
    """Load every sample of ``dataset`` once, in parallel threads, and return the dataset.

    For a :class:`DSBDataset` with a cache this decodes and caches every sample not cached yet
    and records every kind and shape, so that training, :meth:`~Dataset.split` and later runs
    read samples back fast. For other datasets it loads each sample once and drops it, which
    helps only where their loader caches.

    Parameters
    ----------
    dataset : Dataset
        Any dataset.
    workers : int, optional
        Threads; default :func:`default_workers`.
    progress : bool
        Show a progress bar.

    Examples
    --------
    >>> from nucleuseg.data.base import in_memory
    >>> len(preload(in_memory([]), progress=False))
    0
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if isinstance(dataset, DSBDataset):
        return dataset.preload(workers, progress)
    _parallel(dataset.__getitem__, dataset.ids, workers, progress, f"loading {dataset.name}")
    return dataset


def resolve_dsb_path(path: str | os.PathLike) -> Path:
    """The folder ``path`` names: as given if it exists, else relative to ``$NUCLEUSEG_DSB``.

    Raises
    ------
    DatasetError
        If neither exists, or the path is not a folder.

    Examples
    --------
    >>> import tempfile
    >>> resolve_dsb_path(tempfile.gettempdir()).is_dir()
    True
    """
    given = Path(path).expanduser()
    root = given
    env = os.environ.get(DSB_ENV)
    if not given.exists():
        if env and not given.is_absolute() and (Path(env).expanduser() / given).exists():
            root = Path(env).expanduser() / given
        elif given.is_absolute():
            raise DatasetError(f"{given}: no such folder")
        elif env:
            raise DatasetError(f"{given}: no such folder here nor under ${DSB_ENV}={env}")
        else:
            raise DatasetError(
                f"{given}: no such folder (set ${DSB_ENV} to the folder holding stage1_train/ "
                "to load it by name)"
            )
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    return root


# --------------------------------------------------------------------------- layout


def _scan_dataset(root: Path) -> dict[str, _ImageFiles]:
    folders = [e for e in listing(root) if is_dir(e)]
    if not folders:
        raise DatasetError(f"{root}: empty dataset (no image folders)")
    lacking = [e for e in folders if not os.path.isdir(os.path.join(e.path, "images"))]
    if lacking and {e.name for e in lacking} & {"stage1_train", "stage1_test", "stage2_test"}:
        names = sorted(e.name for e in folders if e.name.startswith("stage"))
        raise DatasetError(
            f"{root} holds {', '.join(names)}: pass one of them, e.g. {root / names[0]}"
        )
    real: dict[str, str] = {}
    entries = {}
    for folder in folders:
        resolved = os.path.realpath(folder.path)
        if resolved in real:
            raise DatasetError(
                f"{root}: duplicate image ids {real[resolved]!r} and {folder.name!r} are the same "
                f"folder ({resolved})"
            )
        real[resolved] = folder.name
        entries[folder.name] = _scan_image_folder(Path(folder.path), folder.name)
    return entries


def _scan_image_folder(folder: Path, image_id: str) -> _ImageFiles:
    children = {e.name: e for e in listing(folder)}
    images = children.get("images")
    if images is None or not is_dir(images):
        raise DatasetError(f"{folder}: no images/ folder")
    files = listing(folder / "images")
    for entry in files:
        if not entry.is_file():
            raise DatasetError(f"{entry.path}: unexpected folder in images/")
    if not files:
        raise DatasetError(f"{folder / 'images'}: no image file")
    if len(files) > 1:
        names = ", ".join(e.name for e in files[:SHOWN])
        raise DatasetError(f"{folder / 'images'}: {len(files)} files, expected one image: {names}")
    stem, suffix = os.path.splitext(files[0].name)
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(f"{files[0].path}: not an image file (expected {IMAGE_SUFFIXES})")
    if stem != image_id:
        raise DatasetError(
            f"{files[0].path}: image file name {files[0].name!r} differs from its folder's id "
            f"{image_id!r}"
        )
    masks = None
    if "masks" in children:
        if not is_dir(children["masks"]):
            raise DatasetError(f"{folder / 'masks'}: not a folder")
        masks = tuple(_mask_files(folder / "masks"))
    return _ImageFiles(folder, Path(files[0].path), masks)


def _mask_files(folder: Path) -> list[Path]:
    paths = []
    for entry in listing(folder):
        if not entry.is_file():
            raise DatasetError(f"{entry.path}: unexpected folder in masks/")
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"{entry.path}: stray file in masks/ (expected only mask images {IMAGE_SUFFIXES})"
            )
        paths.append(Path(entry.path))
    return paths


def _use_masks(root: Path, entries: dict[str, _ImageFiles], masks: bool | None) -> bool:
    if masks is False:
        return False
    lacking = sorted(i for i, e in entries.items() if e.masks is None)
    if not lacking:
        return True
    if masks is None and len(lacking) == len(entries):
        return False
    names = shown(lacking)
    if masks is None:
        raise DatasetError(
            f"{root}: {len(lacking)} of {len(entries)} image folders have no masks/ folder "
            f"({names}); pass masks=False to load images only"
        )
    raise DatasetError(f"{root}: {len(lacking)} image folders have no masks/ folder ({names})")


def _read_labels_csv(path: Path, entries: dict[str, _ImageFiles]) -> dict:
    from nucleuseg.rle import read_rle_csv

    table = read_rle_csv(path)
    extra = sorted(set(table) - set(entries))
    missing = sorted(set(entries) - set(table))
    for ids, what in ((extra, "are not in the dataset folder"), (missing, "are missing from it")):
        if ids:
            raise DatasetError(f"{path}: {len(ids)} image ids {what}: {shown(ids)}")
    for image_id, entry in entries.items():
        stated = table[image_id].shape
        if stated is not None:
            actual = image_shape(entry.image)
            if tuple(stated) != actual:
                raise DatasetError(_csv_shape_message(path, image_id, stated, actual))
    return table


def _csv_shape_message(path, image_id: str, stated, actual: tuple[int, int]) -> str:
    return (
        f"{path}: image {image_id} is {actual[0]}x{actual[1]} (height x width) but the CSV "
        f"gives Height,Width {stated[0]},{stated[1]}"
    )


def _stamp(path: Path | None) -> str:
    if path is None:
        return ""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _parallel(
    work: Callable[[str], object],
    ids: Sequence[str],
    workers: int | None,
    progress: bool,
    desc: str,
) -> None:
    """Run ``work(id)`` for every id on a thread pool, re-raising the first error."""
    if not ids:
        return
    workers = min(workers or default_workers(), len(ids))
    if workers == 1:
        for image_id in progress_bar(ids, desc, enable=progress):
            work(image_id)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Results are dropped as they come, so samples are never all held in memory.
        futures = [pool.submit(_run_and_drop, work, image_id) for image_id in ids]
        try:
            for future in progress_bar(as_completed(futures), desc, progress, len(futures)):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _run_and_drop(work: Callable[[str], object], image_id: str) -> None:
    """``work(image_id)`` with its result dropped, so the thread pool keeps no sample."""
    work(image_id)
