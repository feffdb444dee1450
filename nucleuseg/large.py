"""Block-wise prediction of images larger than memory, stitched into one zarr label array.

An image that does not fit in memory (a whole slide, a large mosaic) is read lazily from a numpy
array, a zarr array, a zarr or OME-Zarr folder, or a (Big)TIFF file through tifffile's zarr
store, and segmented block by block on Dask:

1. **Normalisation statistics** are computed once, from a strided subsample of the whole image,
   so that every block is normalised alike (the same subsample
   :func:`nucleuseg.transforms.normalization_stats` takes of an image held in memory).
2. **Predict.** Each block of ``block x block`` pixels is read with a ``halo`` of context on every
   side (the window) and goes through the one inference path,
   :func:`nucleuseg.inference.predict_labels` (the probabilities, then
   :func:`nucleuseg.postprocess.to_instances`). The window's label image is kept in a small,
   compressed work file, written atomically: the file is the record that the block is done.
3. **Stitch.** Only a block's own pixels (its core) go to the output, so a nucleus crossing a
   block border starts as one label per block it touches. Two neighbouring windows (diagonal
   neighbours included) overlap in a strip of up to ``2 * halo`` pixels around their border, and
   both saw that strip with context. A label of one block's core and a label of the other's are
   the same nucleus when their intersection over union *within the shared strip* exceeds
   ``iou`` (one half by default, which makes the matching one-to-one); matched labels are merged
   by a connected-components pass over the graph of matches. Every nucleus smaller than the halo
   that crosses a border lies whole inside the strip, so the two windows' views of it are
   compared whole. The final labels are numbered ``1..N`` across the whole image, in the order of
   the blocks (``uint32``, or ``uint64`` above 2**32 - 1 nuclei).
4. **Write.** Each block's core is relabelled and written into its own chunk of the output zarr
   array, then its measurements (:func:`skimage.measure.regionprops_table` of that chunk) are
   saved to a work file that marks the chunk done. The partial measurements of nuclei that span
   several chunks are merged into one row per nucleus of ``nuclei.csv``.

Memory is bounded by a few windows (two to stitch, one per worker to predict), never the image.
A run that stops (an error, a kill) leaves the done blocks' work files; calling the same function
again with the same output folder skips them and finishes the rest. A block whose work file is
missing is done again, whatever its chunk holds, so a half-written block is never taken as done.

The output folder holds ``labels.zarr`` (the label array), ``nuclei.csv`` (one row per nucleus)
and, while the run is unfinished, ``progress.json`` and ``blocks/`` (the work files).

Needs the ``large`` extra (``pip install "nucleuseg[large]"``: dask and zarr).

Examples
--------
>>> import tempfile
>>> from nucleuseg.config import get_preset, InferenceConfig
>>> preset = get_preset("default").replace(inference=InferenceConfig(postprocess="components"))
>>> image = np.zeros((96, 96), np.uint8); image[28:36, 28:36] = 200  # one nucleus on a corner
>>> result = segment_large(image, lambda b: b[..., :1], preset, tempfile.mkdtemp(),
...                        block=32, halo=16, scheduler="synchronous")
>>> result.nuclei, result.blocks
(1, 9)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nucleuseg._atomic import atomic_save, atomic_write
from nucleuseg._extras import require
from nucleuseg.config import Preset
from nucleuseg.errors import ImageReadError, InputError
from nucleuseg.inference import predict_labels
from nucleuseg.tiling import PredictFn
from nucleuseg.transforms import NormalizationStats, as_rgb, normalization_stats

logger = logging.getLogger(__name__)

LABELS = "labels.zarr"
"""Name of the label array in the output folder."""
TABLE = "nuclei.csv"
"""Name of the measurements table in the output folder."""
PROGRESS = "progress.json"
WORK = "blocks"
_FORMAT = 1  # of the work files and progress.json; a change makes old runs restart

TABLE_COLUMNS = (
    "label",
    "centroid_y",
    "centroid_x",
    "area",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
)
"""The first columns of ``nuclei.csv``; ``mean_intensity`` (one channel) or ``mean_intensity_<c>``
(one per channel) follow. Coordinates are pixels of the whole image; a bounding box is half-open
(``bbox_y1`` and ``bbox_x1`` one past the last row and column), as in scikit-image."""


@dataclass(frozen=True)
class LargeResult:
    """What :func:`segment_large` wrote.

    Attributes
    ----------
    labels : Path
        The ``(H, W)`` zarr label array (0 = background, nuclei ``1..nuclei``).
    table : Path
        ``nuclei.csv``: one row per nucleus (:data:`TABLE_COLUMNS` and mean intensities).
    shape : tuple of int
        ``(H, W)`` of the image.
    nuclei : int
        Number of nuclei.
    blocks : int
        Number of blocks of the image.
    predicted : int
        Blocks predicted by this call (fewer than ``blocks`` when it finished an earlier run).
    """

    labels: Path
    table: Path
    shape: tuple[int, int]
    nuclei: int
    blocks: int
    predicted: int


# -- reading the image ---------------------------------------------------------------------------


DEFAULT_BLOCK = 512
"""Block side :func:`segment_large` uses by default: the smaller of this and the network tile
less two halos. Memory grows with its square (a block's window and the network's activations)."""


def _require(module: str):
    return require(module, "large", "block-wise prediction")


class _Source:
    """A 2-D image ``(H, W)`` or ``(H, W, C)`` read by region from any array-like."""

    def __init__(self, array: Any, name: str):
        shape = tuple(int(n) for n in array.shape)
        drop = 0
        while len(shape) - drop > 3 and shape[drop] == 1:
            drop += 1  # leading singleton axes (OME-Zarr's t, c, z)
        rest = shape[drop:]
        self.channels_first = len(rest) == 3 and rest[-1] not in (1, 3, 4) and rest[0] in (1, 3, 4)
        if len(rest) == 2 or (len(rest) == 3 and rest[-1] in (1, 3, 4)):
            self.shape = rest[:2]
        elif self.channels_first:
            self.shape = rest[1:]
        else:
            raise InputError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {shape}")
        if min(self.shape) < 1:
            raise InputError(f"{name} is empty (shape {shape})")
        self.ndim_dropped = drop
        self.array = array
        self.name = name

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        index = (0,) * self.ndim_dropped
        if self.channels_first:
            region = np.asarray(self.array[(*index, slice(None), slice(y0, y1), slice(x0, x1))])
            return np.moveaxis(region, 0, -1)
        return np.asarray(self.array[(*index, slice(y0, y1), slice(x0, x1))])


def open_image(source: Any) -> Any:
    """A lazily read array for ``source``: numpy and zarr arrays as they are, paths opened.

    Parameters
    ----------
    source : numpy.ndarray, zarr.Array, str or os.PathLike
        An array, a zarr array folder, an OME-Zarr image folder (its full-resolution level) or
        a TIFF/BigTIFF/OME-TIFF file (read through ``tifffile.imread(path, aszarr=True)``:
        only the tiles or strips a block needs are read).

    Returns
    -------
    array-like
        Something with ``shape`` that numpy-style slicing reads into memory.

    Raises
    ------
    ImageReadError
        If a path does not exist or is neither zarr nor TIFF.

    Examples
    --------
    >>> open_image(np.zeros((4, 5))).shape
    (4, 5)
    """
    if not isinstance(source, str | os.PathLike):
        if not hasattr(source, "shape") or not hasattr(source, "__getitem__"):
            source = np.asarray(source)
        return source
    path = Path(source)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    zarr = _require("zarr")
    if path.suffix.lower() in (".tif", ".tiff", ".btf", ".tf8"):
        import tifffile

        try:
            store = tifffile.imread(path, aszarr=True)
            opened = zarr.open(store, mode="r")
        except Exception as exc:  # tifffile raises many kinds on a bad file
            raise ImageReadError(f"{path}: not a readable TIFF ({exc})") from exc
        return opened if hasattr(opened, "shape") else opened["0"]
    try:
        opened = zarr.open(path, mode="r")
    except Exception as exc:
        raise ImageReadError(f"{path}: neither a zarr array nor a TIFF file ({exc})") from exc
    if hasattr(opened, "shape"):
        return opened
    attrs = dict(opened.attrs)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise ImageReadError(f"{path}: a zarr group that is not an OME-Zarr image")
    return opened[multiscales[0]["datasets"][0]["path"]]


def image_stats(source: Any) -> NormalizationStats:
    """Normalisation statistics of a whole image, read a band of rows at a time.

    The subsample is the one :func:`nucleuseg.transforms.normalization_stats` takes of an image
    in memory (every ``H // 256``-th row and ``W // 256``-th column), so a block normalised with
    these statistics is normalised as the whole image would be.

    Examples
    --------
    >>> image = np.zeros((600, 500), np.uint8); image[100:200, 100:200] = 200
    >>> from nucleuseg.transforms import as_rgb
    >>> image_stats(image) == normalization_stats(as_rgb(image))
    True
    """
    src = source if isinstance(source, _Source) else _Source(open_image(source), "source")
    height, width = src.shape
    step_y, step_x = max(1, height // 256), max(1, width // 256)
    # bands of whole rows: about 4 megapixels, or the source's chunk rows (each chunk read once)
    chunks = getattr(src.array, "chunks", None)
    rows_per_chunk = int(chunks[src.ndim_dropped + int(src.channels_first)]) if chunks else 1
    band = step_y * math.ceil(max(rows_per_chunk, 2**22 // width, 1) / step_y)
    rows = []
    for y0 in range(0, height, band):
        rows.append(src.read(y0, min(height, y0 + band), 0, width)[::step_y, ::step_x])
    return normalization_stats(as_rgb(np.concatenate(rows), src.name))


# -- the blocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    index: int
    core: tuple[int, int, int, int]  # y0, y1, x0, x1 in the image
    window: tuple[int, int, int, int]

    @property
    def inner(self) -> tuple[slice, slice]:
        """The core as slices of the window."""
        y0, y1, x0, x1 = self.core
        return slice(y0 - self.window[0], y1 - self.window[0]), slice(
            x0 - self.window[2], x1 - self.window[2]
        )


def _blocks(shape: tuple[int, int], block: int, halo: int) -> list[list[_Block]]:
    height, width = shape
    rows, cols = math.ceil(height / block), math.ceil(width / block)
    grid = []
    for i in range(rows):
        row = []
        for j in range(cols):
            y0, x0 = i * block, j * block
            y1, x1 = min(height, y0 + block), min(width, x0 + block)
            window = (
                max(0, y0 - halo),
                min(height, y1 + halo),
                max(0, x0 - halo),
                min(width, x1 + halo),
            )
            row.append(_Block(i * cols + j, (y0, y1, x0, x1), window))
        grid.append(row)
    return grid


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def segment_large(
    source: Any,
    predict: PredictFn,
    preset: Preset,
    out: str | os.PathLike,
    *,
    block: int | None = None,
    halo: int = 64,
    iou: float = 0.5,
    scheduler: str | Any = "threads",
    workers: int | None = None,
) -> LargeResult:
    """Segment an image of any size block by block into ``out/labels.zarr`` and ``out/nuclei.csv``.

    See the module docstring for the method. Calling it again with the same ``out`` after an
    interrupted run finishes the rest; after a finished run it returns at once.

    Parameters
    ----------
    source : numpy.ndarray, zarr.Array, str or os.PathLike
        The image, ``(H, W)`` or ``(H, W, C)`` (see :func:`open_image`); never read whole.
    predict : callable
        NHWC ``float32`` batch -> NHWC probabilities (:data:`~nucleuseg.tiling.PredictFn`), such
        as a backend network's ``predict``.
    preset : Preset
        The network's size multiple and the inference settings. A preset that resizes images
        (``training.resize``) cannot be applied block-wise. ``inference.auto_scale`` is not
        applied (each block would choose its own zoom): nuclei should be near the model's native
        size, ``2 * inference.target_radius`` pixels across.
    out : str or os.PathLike
        The output folder (created).
    block : int, optional
        Side of a block (and of the output's chunks), at least 16 pixels. By default
        :data:`DEFAULT_BLOCK` (512), or ``preset.inference.tile - 2 * halo`` where that is
        smaller, so that a window fits in one network tile. On a CPU, 512-pixel blocks of the
        shipped U-Net ran at 2.6 times the rate of 1024-pixel ones with a quarter of the peak
        memory (1.2 GB against 4.5 GB on a 20,000 x 20,000 image; see the large-images page).
    halo : int
        Context read around each block, in pixels: a few nucleus diameters. Nuclei larger than
        the halo may be cut at block borders.
    iou : float
        Least intersection over union, in the strip two neighbouring windows share, for two
        labels to be the same nucleus (0.5 or more keeps matches one-to-one).
    scheduler : str or dask scheduler
        Dask scheduler for the blocks: ``"threads"`` (default), ``"synchronous"``, or a
        ``dask.distributed`` client's.
    workers : int, optional
        Threads of the threaded scheduler (Dask's default: one per core).

    Returns
    -------
    LargeResult

    Raises
    ------
    InputError
        On a bad argument, a preset that resizes, or an ``out`` holding an unfinished run with
        other settings or another image shape.
    ImageReadError
        If ``source`` cannot be read.
    ExtraMissing
        If dask or zarr is not installed.
    """
    halo = _check_int(halo, "halo", 0)
    if block is None:
        block = max(16, min(DEFAULT_BLOCK, preset.inference.tile - 2 * halo))
    block = _check_int(block, "block", 16)
    if not 0.0 < iou < 1.0:
        raise InputError(f"iou must lie between 0 and 1, got {iou!r}")
    if preset.training.resize:
        raise InputError(
            f"preset {preset.name!r} resizes every image to {preset.training.resize} pixels, "
            "which cannot be done block by block; use a preset that predicts at the image's scale"
        )
    if preset.inference.auto_scale:
        # One zoom per block would differ between neighbours and break the stitching.
        logger.info("block-wise prediction runs at the image's own scale (auto_scale is off)")
        preset = preset.replace(inference=preset.inference.replace(auto_scale=False))
    dask = _require("dask")
    zarr = _require("zarr")
    src = _Source(
        open_image(source), str(source) if isinstance(source, str | os.PathLike) else "source"
    )
    out = Path(out)
    work = out / WORK
    settings = {
        "format": _FORMAT,
        "shape": list(src.shape),
        "block": block,
        "halo": halo,
        "iou": iou,
        "inference": preset.inference.to_dict(),
        "multiple": preset.network.multiple,
    }
    progress = _read_progress(out)
    if progress is not None and progress["settings"] != settings:
        raise InputError(
            f"{out} holds a run with other settings or another image ({progress['settings']}); "
            "choose another output folder or delete it"
        )
    grid = _blocks(src.shape, block, halo)
    flat = [b for row in grid for b in row]
    labels_path, table_path = out / LABELS, out / TABLE
    if progress is not None and progress.get("nuclei") is not None and table_path.exists():
        shutil.rmtree(work, ignore_errors=True)  # left by a run stopped as it finished
        return LargeResult(labels_path, table_path, src.shape, progress["nuclei"], len(flat), 0)
    work.mkdir(parents=True, exist_ok=True)
    if progress is None:
        _write_progress(out, {"settings": settings, "nuclei": None})

    # 1. predict every block that has no work file yet
    stats = image_stats(src)
    todo = [b for b in flat if not _work_file(work, b).exists()]
    logger.info("%s: %d of %d blocks to predict", out, len(todo), len(flat))
    tasks = [dask.delayed(_predict_block)(src, b, predict, preset, stats, work) for b in todo]
    dask.compute(*tasks, scheduler=scheduler, num_workers=workers)

    # 2. stitch: match labels across every border, merge, number the nuclei
    lut, nuclei = _stitch(grid, work, iou)
    dtype = np.uint32 if nuclei < 2**32 else np.uint64
    array = _output_array(zarr, labels_path, src.shape, block, dtype)

    # 3. write every chunk that has no measurements file yet
    bases = _bases(flat, work)
    left = [b for b in flat if not _part_file(work, b).exists()]
    tasks = [
        dask.delayed(_write_block)(src, b, work, array, lut, bases[b.index], dtype) for b in left
    ]
    dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
    _write_table(table_path, (np.load(_part_file(work, b)) for b in flat), nuclei)
    _write_progress(out, {"settings": settings, "nuclei": nuclei})
    shutil.rmtree(work)
    logger.info("%s: %d nuclei in %d blocks", out, nuclei, len(flat))
    return LargeResult(labels_path, table_path, src.shape, nuclei, len(flat), len(todo))


# -- work files ----------------------------------------------------------------------------------


def _read_progress(out: Path) -> dict | None:
    path = out / PROGRESS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a progress record ({exc}); delete {out}") from exc


def _write_progress(out: Path, record: dict) -> None:
    with atomic_write(out / PROGRESS, "w") as handle:
        json.dump(record, handle, indent=1)


def _work_file(work: Path, b: _Block) -> Path:
    return work / f"labels_{b.index}.npz"


def _part_file(work: Path, b: _Block) -> Path:
    return work / f"nuclei_{b.index}.npz"


def _save(path: Path, **arrays: np.ndarray) -> None:
    atomic_save(path, lambda tmp: np.savez_compressed(tmp, **arrays))


def _predict_block(
    src: _Source,
    b: _Block,
    predict: PredictFn,
    preset: Preset,
    stats: NormalizationStats,
    work: Path,
) -> None:
    image = src.read(*b.window)
    labels = predict_labels(predict, image, preset, stats=stats)
    core = np.unique(labels[b.inner])
    _save(
        _work_file(work, b),
        labels=labels.astype(np.uint32),
        core=core[core > 0].astype(np.int64),
        count=np.int64(labels.max()),
    )


def _bases(flat: list[_Block], work: Path) -> np.ndarray:
    """The first global id of each block: its window's labels ``l > 0`` become ``base + l``."""
    counts = [int(np.load(_work_file(work, b))["count"]) for b in flat]
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


# -- stitching -----------------------------------------------------------------------------------


def _stitch(grid: list[list[_Block]], work: Path, iou: float) -> tuple[np.ndarray, int]:
    """``(lut, nuclei)``: ``lut[global id]`` is the final label (0 where not in any core)."""
    from scipy import sparse

    flat = [b for row in grid for b in row]
    bases = _bases(flat, work)
    cores = [bases[b.index] + np.load(_work_file(work, b))["core"] for b in flat]
    nodes = np.concatenate(cores) if cores else np.zeros(0, np.int64)
    edges = [pair for a, b in _neighbours(grid) for pair in _matches(a, b, work, bases, iou)]
    index = {"a": np.zeros(0, np.int64), "b": np.zeros(0, np.int64)}
    if edges:
        pairs = np.concatenate(edges)
        index = {"a": np.searchsorted(nodes, pairs[:, 0]), "b": np.searchsorted(nodes, pairs[:, 1])}
    n = len(nodes)
    graph = sparse.coo_matrix((np.ones(len(index["a"])), (index["a"], index["b"])), shape=(n, n))
    count, component = sparse.csgraph.connected_components(graph, directed=False)
    # number the nuclei in order of their first global id (block order, then label order)
    first = np.full(count, n, np.int64)
    np.minimum.at(first, component, np.arange(n))
    rank = np.empty(count, np.int64)
    rank[np.argsort(first)] = np.arange(1, count + 1)
    lut = np.zeros(int(bases[-1]) + 1, np.int64)
    lut[nodes] = rank[component]
    return lut, int(count)


def _neighbours(grid: list[list[_Block]]) -> Iterator[tuple[_Block, _Block]]:
    rows, cols = len(grid), len(grid[0])
    for i in range(rows):
        for j in range(cols):
            for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
                if 0 <= i + di < rows and 0 <= j + dj < cols:
                    yield grid[i][j], grid[i + di][j + dj]


def _matches(a: _Block, b: _Block, work: Path, bases: np.ndarray, iou: float) -> list[np.ndarray]:
    """``(k, 2)`` global ids of a's core labels and b's that are one nucleus."""
    y0, y1 = max(a.window[0], b.window[0]), min(a.window[1], b.window[1])
    x0, x1 = max(a.window[2], b.window[2]), min(a.window[3], b.window[3])
    if y0 >= y1 or x0 >= x1:
        return []
    strips = []
    for blk in (a, b):
        data = np.load(_work_file(work, blk))
        wy, wx = blk.window[0], blk.window[2]
        strip = data["labels"][y0 - wy : y1 - wy, x0 - wx : x1 - wx].astype(np.int64)
        strip[~np.isin(strip, data["core"])] = 0  # labels that reach no output are no match
        strips.append(strip)
    la, lb = (s.ravel() for s in strips)
    both = (la > 0) & (lb > 0)
    if not both.any():
        return []
    area_a, area_b = np.bincount(la), np.bincount(lb)
    pairs, inter = np.unique(np.stack([la[both], lb[both]], axis=1), axis=0, return_counts=True)
    union = area_a[pairs[:, 0]] + area_b[pairs[:, 1]] - inter
    keep = pairs[inter / union > iou]
    if not len(keep):
        return []
    return [keep + np.array([bases[a.index], bases[b.index]])]


# -- writing -------------------------------------------------------------------------------------


def _output_array(zarr: Any, path: Path, shape: tuple[int, int], block: int, dtype: type) -> Any:
    """The output array, reopened when a run wrote it before, created otherwise."""
    if path.exists():
        try:
            array = zarr.open_array(path, mode="r+")
            if (
                array.shape == tuple(shape)
                and array.dtype == dtype
                and array.chunks == (block, block)
            ):
                return array
        except Exception:  # a half-created array from a killed run: start it again
            pass
    return zarr.create_array(
        store=str(path),
        shape=shape,
        chunks=(block, block),
        dtype=dtype,
        fill_value=0,
        overwrite=True,
    )


def _write_block(
    src: _Source, b: _Block, work: Path, array: Any, lut: np.ndarray, base: int, dtype: type
) -> None:
    from skimage.measure import regionprops_table

    local = np.load(_work_file(work, b))["labels"][b.inner].astype(np.int64)
    labels = np.where(local > 0, lut[base + local], 0)
    y0, y1, x0, x1 = b.core
    array[y0:y1, x0:x1] = labels.astype(dtype)
    ids, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape)
    if ids[0] != 0:
        ids, compact = np.concatenate([[0], ids]), compact + 1
    image = src.read(y0, y1, x0, x1)
    props = regionprops_table(
        compact,
        intensity_image=image,
        properties=("label", "area", "bbox", "centroid", "intensity_mean"),
    )
    area = props["area"].astype(np.float64)
    means = sorted(k for k in props if k.startswith("intensity_mean"))
    _save(
        _part_file(work, b),
        label=ids[props["label"]].astype(np.int64),
        area=area,
        sum_y=(props["centroid-0"] + y0) * area,
        sum_x=(props["centroid-1"] + x0) * area,
        bbox=np.stack([props[f"bbox-{k}"] + (y0, x0)[k % 2] for k in range(4)], axis=1),
        sum_intensity=(
            np.stack([props[k] * area for k in means], axis=1)
            if len(area)
            else np.zeros((0, 1 if image.ndim == 2 else image.shape[2]))
        ),
    )


def _write_table(path: Path, parts: Iterator[Any], nuclei: int) -> None:
    """Merge the chunks' partial measurements into one row per nucleus and write the CSV."""
    n = nuclei + 1
    area = np.zeros(n)
    sum_y, sum_x = np.zeros(n), np.zeros(n)
    low = np.full((n, 2), np.iinfo(np.int64).max)
    high = np.zeros((n, 2), np.int64)
    intensity = None
    for part in parts:
        label = part["label"]
        area += np.bincount(label, part["area"], n)
        sum_y += np.bincount(label, part["sum_y"], n)
        sum_x += np.bincount(label, part["sum_x"], n)
        np.minimum.at(low, label, part["bbox"][:, :2])
        np.maximum.at(high, label, part["bbox"][:, 2:])
        channels = part["sum_intensity"].shape[1]
        if intensity is None:
            intensity = np.zeros((n, channels))
        for c in range(channels):
            intensity[:, c] += np.bincount(label, part["sum_intensity"][:, c], n)
    if intensity is None:
        intensity = np.zeros((n, 1))
    rows = slice(1, n)
    names = (
        ["mean_intensity"]
        if intensity.shape[1] == 1
        else [f"mean_intensity_{c}" for c in range(intensity.shape[1])]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.column_stack(
            [
                np.arange(1, n),
                sum_y[rows] / area[rows],
                sum_x[rows] / area[rows],
                area[rows],
                low[rows],
                high[rows],
                intensity[rows] / area[rows, None],
            ]
        )
    fmt = ["%d", "%.3f", "%.3f", "%d", "%d", "%d", "%d", "%d"] + ["%.4f"] * len(names)
    with atomic_write(path, "w", newline="") as handle:
        handle.write(",".join([*TABLE_COLUMNS, *names]) + "\n")
        if nuclei:
            np.savetxt(handle, table, fmt=fmt, delimiter=",")
