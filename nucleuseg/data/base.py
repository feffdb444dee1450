"""The dataset abstraction shared by every data source: samples, lazy datasets, splits.

A :class:`Sample` is one image with its instance labels. A :class:`Dataset` is an ordered,
lazily-loaded collection of samples: it knows the ids up front and reads pixels only when a sample
is asked for. DSB folders, CSV-labelled folders and the synthetic generator all return a
:class:`Dataset`, so training, evaluation and submission code never care where samples come from.

Conventions
-----------
- ``image`` is ``(H, W, 3)``, ``uint8`` or ``uint16`` as stored; grayscale files are repeated into
  three equal channels and an alpha channel is dropped, so every sample has the same layout.
- ``labels`` is ``(H, W)`` ``int32``: 0 is background, each nucleus one positive id. It is
  ``None`` for images-only folders (``stage1_test``).
- ``kind`` is one of :data:`KINDS` (see :func:`nucleuseg.data.kinds.image_kind`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from nucleuseg.errors import DatasetError, InputError

KINDS = ("fluorescence", "brightfield", "histology")
"""The image kinds of DSB 2018, used to stratify splits and to break scores down."""


@dataclass(frozen=True)
class Sample:
    """One image with its instance labels.

    Attributes
    ----------
    image_id : str
        The image's id (the DSB folder name, or a generated id).
    image : numpy.ndarray
        ``(H, W, 3)`` image, ``uint8`` or ``uint16``.
    labels : numpy.ndarray or None
        ``(H, W)`` ``int32`` label image, 0 = background; ``None`` when unknown.
    kind : str
        One of :data:`KINDS`.
    """

    image_id: str
    image: np.ndarray
    labels: np.ndarray | None
    kind: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


class Dataset(Sequence[Sample]):
    """An ordered, lazily-loaded collection of :class:`Sample`.

    Parameters
    ----------
    ids : sequence of str
        Unique image ids, in dataset order.
    load : callable
        ``load(image_id) -> Sample``; called each time a sample is accessed (the callable may cache).
    name : str
        A short description shown in ``repr`` and progress bars.
    info : dict, optional
        Per-id metadata known without loading pixels, ``{id: {"kind": str, "shape": (h, w)}}``;
        used by :meth:`split` to stratify without decoding images.

    Examples
    --------
    >>> from nucleuseg.data import make_synthetic
    >>> ds = make_synthetic(4, size=64, seed=0)
    >>> len(ds), ds[0].image.shape, ds[ds.ids[1]].image_id == ds.ids[1]
    (4, (64, 64, 3), True)
    """

    def __init__(
        self,
        ids: Sequence[str],
        load: Callable[[str], Sample],
        name: str = "dataset",
        info: dict[str, dict] | None = None,
    ) -> None:
        ids = list(ids)
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DatasetError(f"{name}: duplicate image ids {dup[:5]}")
        self._ids = ids
        self._index = {i: k for k, i in enumerate(ids)}
        self._load = load
        self.name = name
        self._info = dict(info or {})

    @property
    def ids(self) -> list[str]:
        """The image ids in dataset order."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"{self.name}: no image with id {key!r}")
            return self._load(key)
        if isinstance(key, slice):
            return self.subset(self._ids[key])
        if isinstance(key, int | np.integer):
            return self._load(self._ids[int(key)])
        raise TypeError(f"dataset index must be int, str or slice, not {type(key).__name__}")

    def __iter__(self) -> Iterator[Sample]:
        for image_id in self._ids:
            yield self._load(image_id)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} images)"

    def info(self, image_id: str) -> dict:
        """Metadata for one id (``kind`` and ``shape``), loading the sample if not known yet."""
        if image_id not in self._info:
            sample = self._load(image_id)
            self._info[image_id] = {"kind": sample.kind, "shape": sample.shape}
        return self._info[image_id]

    def subset(self, ids: Sequence[str], name: str | None = None) -> Dataset:
        """A dataset over some of this one's ids, sharing its loader.

        Raises
        ------
        DatasetError
            If an id is not in this dataset.
        """
        missing = [i for i in ids if i not in self._index]
        if missing:
            raise DatasetError(f"{self.name}: ids not in the dataset: {missing[:5]}")
        info = {i: self._info[i] for i in ids if i in self._info}
        return Dataset(ids, self._load, name or f"{self.name}[subset]", info)

    def split(self, fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split into ``(train, validation)``, stratified by image kind and size.

        Images are grouped by ``(kind, height, width)``; each group sends
        ``round(fraction * len(group))`` images to validation (at least one from any group of
        two or more when ``fraction > 0``), so rare kinds and sizes appear on both sides.

        Parameters
        ----------
        fraction : float
            Share of images to put in validation, in ``(0, 1)``.
        seed : int
            Seed of the shuffle inside each group.

        Examples
        --------
        >>> from nucleuseg.data import make_synthetic
        >>> train, val = make_synthetic(20, size=32, seed=1).split(0.2, seed=0)
        >>> len(train), len(val)
        (16, 4)
        """
        if not 0.0 < fraction < 1.0:
            raise InputError(f"fraction must be in (0, 1), got {fraction}")
        groups: dict[tuple, list[str]] = {}
        for image_id in self._ids:
            meta = self.info(image_id)
            groups.setdefault((meta["kind"], *meta["shape"]), []).append(image_id)
        rng = np.random.default_rng(seed)
        val: set[str] = set()
        # Largest groups first so the rounding of the total lands where it matters least.
        for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
            members = groups[key]
            n_val = round(fraction * len(members))
            if n_val == 0 and len(members) >= 2 and rng.random() < fraction * len(members):
                n_val = 1
            n_val = min(n_val, len(members) - 1) if len(members) > 1 else n_val
            picked = rng.permutation(len(members))[:n_val]
            val.update(members[i] for i in picked)
        train_ids = [i for i in self._ids if i not in val]
        val_ids = [i for i in self._ids if i in val]
        return (
            self.subset(train_ids, f"{self.name}[train]"),
            self.subset(val_ids, f"{self.name}[val]"),
        )

    def kinds(self) -> dict[str, str]:
        """``{image_id: kind}`` for every image."""
        return {i: self.info(i)["kind"] for i in self._ids}


def in_memory(samples: Sequence[Sample], name: str = "in-memory") -> Dataset:
    """Wrap already-loaded samples as a :class:`Dataset`.

    Examples
    --------
    >>> import numpy as np
    >>> s = Sample("a", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int32), "fluorescence")
    >>> len(in_memory([s]))
    1
    """
    by_id = {s.image_id: s for s in samples}
    info = {s.image_id: {"kind": s.kind, "shape": s.shape} for s in samples}
    return Dataset([s.image_id for s in samples], by_id.__getitem__, name, info)
