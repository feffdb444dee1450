"""Segment and measure your own image files: folders, globs and lists of PNG, TIFF and JPEG.

:func:`segment_files` is what ``nucleuseg predict MODEL IMAGES... --out DIR`` runs. For every
image it writes a label image, ``<stem>_labels.png`` (16-bit) or ``<stem>_labels.tif`` (32-bit,
beyond 65,535 nuclei), and with ``overlay`` a ``<stem>_overlay.png`` of the outlines on the
image; for the run it writes two tables:

- ``measurements.csv``: one row per nucleus, ``image`` (the file as found), then the columns of
  :func:`nucleuseg.measure` (``label`` ... ``integrated_intensity``), intensities measured on the
  image the model saw (the chosen ``channel``, or the gray mean of a colour image);
- ``summary.csv``: one row per image: ``image``, ``labels`` (the label file written), ``nuclei``,
  ``mean_area``, ``median_equivalent_diameter``, ``seconds``, and ``error`` (empty unless it
  failed).

A file that cannot be segmented (unreadable, corrupt, no such channel) gets its error in the
report and in ``summary.csv``, and the run goes on with the next. Two images of the same stem
(``a/cells.png`` and ``b/cells.tif``) do not overwrite each other: the later ones get ``_2``,
``_3``, ... after the stem.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from nucleuseg.data import write_image
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> image = np.zeros((40, 40), np.uint8); image[5:15, 5:15] = 200; image[25:35, 20:32] = 180
>>> write_image(folder / "cells.png", image)
>>> class Threshold:  # a stand-in for a Segmenter: any object with predict(image, diameter)
...     def predict(self, image, diameter=None):
...         from skimage.measure import label
...         return label(image[..., 0] > 100)
>>> report = segment_files(Threshold(), [folder], folder / "out", progress=False)
>>> report.ok, [(r.path.name, r.nuclei) for r in report.images]
(True, [('cells.png', 2)])
>>> sorted(p.name for p in (folder / "out").iterdir())
['cells_labels.png', 'measurements.csv', 'summary.csv']
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from nucleuseg._atomic import atomic_write
from nucleuseg.data.images import IMAGE_SUFFIXES, read_image, write_image, write_labels
from nucleuseg.errors import InputError, NucleusegError
from nucleuseg.measurements import COLUMNS, measure
from nucleuseg.progress import progress_bar

logger = logging.getLogger(__name__)

MEASUREMENTS = "measurements.csv"
"""Name of the per-nucleus table in the output folder."""
SUMMARY = "summary.csv"
"""Name of the per-image table in the output folder."""
SUMMARY_COLUMNS = (
    "image",
    "labels",
    "nuclei",
    "mean_area",
    "median_equivalent_diameter",
    "seconds",
    "error",
)
"""Columns of ``summary.csv``."""

_GLOB_CHARACTERS = "*?["


class _Predictor(Protocol):
    def predict(self, image: np.ndarray, diameter: float | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class ImageResult:
    """What :func:`segment_files` did with one image.

    Attributes
    ----------
    path : Path
        The image file (or, for an argument that matched no file, that argument).
    labels : Path or None
        The label image written; ``None`` when the image failed.
    overlay : Path or None
        The overlay written, when asked for.
    nuclei : int
        Number of nuclei found.
    mean_area : float
        Mean nucleus area in pixels (NaN without nuclei).
    median_equivalent_diameter : float
        Median diameter of the discs of the nuclei's areas, in pixels (NaN without nuclei):
        compare it with the model's native diameter to choose ``diameter``.
    seconds : float
        Time spent on the image (reading, predicting, measuring, writing).
    error : str or None
        Why the image failed; ``None`` when it succeeded.
    """

    path: Path
    labels: Path | None
    overlay: Path | None
    nuclei: int
    mean_area: float
    median_equivalent_diameter: float
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the image was segmented."""
        return self.error is None


@dataclass(frozen=True)
class BatchReport:
    """What :func:`segment_files` wrote.

    Attributes
    ----------
    images : tuple of ImageResult
        One per image (and per argument that matched no image file), in order.
    measurements : Path
        ``measurements.csv``: one row per nucleus of every image.
    summary : Path
        ``summary.csv``: one row per image.
    """

    images: tuple[ImageResult, ...]
    measurements: Path
    summary: Path

    @property
    def failures(self) -> tuple[ImageResult, ...]:
        """The images that failed."""
        return tuple(r for r in self.images if not r.ok)

    @property
    def ok(self) -> bool:
        """Whether every image was segmented."""
        return not self.failures

    @property
    def nuclei(self) -> int:
        """Nuclei found in all images."""
        return sum(r.nuclei for r in self.images)


def find_images(
    sources: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> tuple[list[Path], list[ImageResult]]:
    """The image files named by files, folders and glob patterns, in order, each once.

    A folder gives its image files (:data:`~nucleuseg.data.images.IMAGE_SUFFIXES`, any case, not
    hidden ones) sorted by name, not those of its subfolders; a pattern (``*``, ``?``, ``[``;
    ``**`` for any depth) gives the image files it matches, sorted. A file named as such is
    taken whatever its ending (reading it then says what is wrong). Files inside ``exclude``
    (the output folder) are left out of folders and patterns.

    Returns
    -------
    (list of Path, list of ImageResult)
        The image files, and a failed :class:`ImageResult` for each source that names no file,
        folder or matching image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.png", "a.TIF", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"x")
    >>> files, missing = find_images([folder, folder / "*.png", folder / "none.png"])
    >>> [f.name for f in files], [m.error for m in missing]
    (['a.TIF', 'b.png'], ['no such file or folder'])
    """
    out = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    seen: set[Path] = set()
    missing: list[ImageResult] = []

    def add(path: Path, chosen: bool) -> None:
        key = path.resolve()
        if key in seen or (not chosen and out is not None and key.parent == out):
            return
        seen.add(key)
        found.append(path)

    for source in sources:
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            files = [p for p in sorted(path.iterdir()) if _is_image_file(p)]
            if not files:
                missing.append(_failed(path, "folder holds no image file", 0.0))
            for p in files:
                add(p, chosen=False)
        elif path.exists():
            add(path, chosen=True)
        elif any(c in text for c in _GLOB_CHARACTERS):
            files = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            files = [p for p in files if _is_image_file(p)]
            if not files:
                missing.append(_failed(path, "pattern matches no image file", 0.0))
            for p in files:
                add(p, chosen=False)
        else:
            missing.append(_failed(path, "no such file or folder", 0.0))
    return found, missing


def segment_files(
    segmenter: _Predictor,
    sources: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    overlay: bool = False,
    channel: int | None = None,
    diameter: float | None = None,
    progress: bool = True,
    on_image: Callable[[ImageResult], None] | None = None,
) -> BatchReport:
    """Segment every image of ``sources`` and measure its nuclei, writing into ``out``.

    Parameters
    ----------
    segmenter : Segmenter
        The model (:class:`~nucleuseg.Segmenter` or any object with
        ``predict(image, diameter=None)`` returning labels).
    sources : path, glob pattern, or a sequence of them
        Image files, folders and patterns, as :func:`find_images` takes them.
    out : path
        Output folder, made if missing (see the module docstring for what it gets).
    overlay : bool
        Also write ``<stem>_overlay.png``: the outlines of the nuclei on the image.
    channel : int, optional
        The nuclear-stain channel (0-based) of multi-channel images, given to the model as
        gray; an image without that channel fails with its error.
    diameter : float, optional
        Typical nucleus diameter of the images in pixels, when it differs from the model's
        native diameter (``2 * inference.target_radius``; see
        :meth:`~nucleuseg.Segmenter.predict`).
    progress : bool
        Show a progress bar over the images.
    on_image : callable, optional
        Called with each image's :class:`ImageResult` as soon as it is done.

    Returns
    -------
    BatchReport
        One :class:`ImageResult` per image and the paths of the two tables.

    Raises
    ------
    InputError
        If ``out`` is a file, or ``channel`` or ``diameter`` is not valid (before any image is
        read).

    See Also
    --------
    nucleuseg.distributed.segment_files_distributed : the same run on dask.distributed workers.
    """
    out, files, missing, stems = _prepare(sources, out, channel, diameter)
    results: list[ImageResult] = list(missing)
    if on_image is not None:
        for result in missing:
            on_image(result)
    rows: list[list] = []
    try:
        for path in progress_bar(files, "segmenting", progress, total=len(files)):
            result, table = _segment_one(
                segmenter, path, out / stems[path], overlay, channel, diameter
            )
            results.append(result)
            if table is not None:
                rows.extend(_table_rows(path, table))
            if on_image is not None:
                on_image(result)
    finally:
        # Written also when a run is interrupted, for the images done so far.
        measurements, summary = _write_tables(out, rows, results)
    return BatchReport(tuple(results), measurements, summary)


def _prepare(
    sources: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    channel: int | None,
    diameter: float | None,
) -> tuple[Path, list[Path], list[ImageResult], dict[Path, str]]:
    """Check the options, make ``out``; the image files, the missing sources, the output stems."""
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if not sources:
        raise InputError("sources is empty: give image files, folders or patterns")
    if channel is not None and (
        isinstance(channel, bool) or not isinstance(channel, int | np.integer) or channel < 0
    ):
        raise InputError(f"channel must be a non-negative integer, got {channel!r}")
    if diameter is not None and (
        isinstance(diameter, bool)
        or not isinstance(diameter, int | float | np.number)
        or not (np.isfinite(diameter) and diameter > 0)
    ):
        raise InputError(f"diameter must be a positive number of pixels, got {diameter!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    files, missing = find_images(sources, exclude=out)
    return out, files, missing, _output_stems(files)


def _write_tables(out: Path, rows: list[list], results: list[ImageResult]) -> tuple[Path, Path]:
    """Write ``measurements.csv`` and ``summary.csv`` into ``out``."""
    measurements = _write_csv(out / MEASUREMENTS, ("image", *COLUMNS), rows)
    summary = _write_csv(out / SUMMARY, SUMMARY_COLUMNS, [_summary_row(r) for r in results])
    return measurements, summary


def _segment_one(
    segmenter: _Predictor,
    path: Path,
    stem: Path,
    overlay: bool,
    channel: int | None,
    diameter: float | None,
) -> tuple[ImageResult, dict[str, np.ndarray] | None]:
    started = time.perf_counter()
    try:
        image = read_image(path, channel=channel)
        labels = segmenter.predict(image, diameter=diameter)
        table = measure(labels, image)
        labels_path = write_labels(stem.with_name(stem.name + "_labels"), labels)
        overlay_path = None
        if overlay:
            overlay_path = stem.with_name(stem.name + "_overlay.png")
            _write_overlay(overlay_path, image, labels)
    except (NucleusegError, OSError) as err:
        logger.debug("%s failed", path, exc_info=True)
        return _failed(path, _message(err, path), time.perf_counter() - started), None
    areas = table["area"]
    nuclei = len(table["label"])
    result = ImageResult(
        path=path,
        labels=labels_path,
        overlay=overlay_path,
        nuclei=nuclei,
        mean_area=float(areas.mean()) if nuclei else float("nan"),
        median_equivalent_diameter=(
            float(np.median(table["equivalent_diameter"])) if nuclei else float("nan")
        ),
        seconds=time.perf_counter() - started,
    )
    return result, table


def _write_overlay(path: Path, image: np.ndarray, labels: np.ndarray) -> None:
    from nucleuseg.viz import draw_outlines, outline_width

    width = outline_width(labels.shape, panel_pixels=max(labels.shape))  # shown at full size
    rgb = draw_outlines(image, labels, width=width)
    write_image(path, np.round(rgb * 255).astype(np.uint8))


def _output_stems(files: list[Path]) -> dict[Path, str]:
    """The output name stem of each file: its own, or with ``_2``, ``_3``, ... where taken."""
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for path in files:
        stem = path.stem
        n = 1
        while stem.lower() in used:
            n += 1
            stem = f"{path.stem}_{n}"
        used.add(stem.lower())
        stems[path] = stem
    return stems


def _is_image_file(path: Path) -> bool:
    return (
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def _failed(path: Path, error: str, seconds: float) -> ImageResult:
    return ImageResult(path, None, None, 0, float("nan"), float("nan"), seconds, error)


def _message(err: Exception, path: Path) -> str:
    """The error's message without the file name it usually starts with."""
    if isinstance(err, OSError) and not isinstance(err, NucleusegError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    else:
        text = str(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _table_rows(path: Path, table: dict[str, np.ndarray]) -> list[list]:
    columns = [table[name].tolist() for name in COLUMNS]
    return [[str(path), *values] for values in zip(*columns, strict=True)]


def _summary_row(result: ImageResult) -> list:
    return [
        str(result.path),
        result.labels.name if result.labels is not None else "",
        result.nuclei,
        result.mean_area,
        result.median_equivalent_diameter,
        round(result.seconds, 3),
        result.error or "",
    ]


def _write_csv(path: Path, header: Sequence[str], rows: list[list]) -> Path:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.10g}"
        return str(value)

    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([cell(v) for v in row] for row in rows)
    return path
