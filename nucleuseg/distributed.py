"""Many images on many workers: :func:`nucleuseg.batch.segment_files` on dask.distributed.

:func:`segment_files_distributed` writes exactly what :func:`~nucleuseg.batch.segment_files`
writes (a label image per image, overlays when asked, ``measurements.csv`` and ``summary.csv``),
but spreads the images over the workers of a dask.distributed cluster:

- ``scheduler=None`` or ``"local"``: a :class:`distributed.LocalCluster` of worker *processes*
  (not threads: each deep-learning framework then has a process of its own), one thread each,
  ``workers`` of them (default: :func:`nucleuseg.backends.threads.usable_cores`); it is closed
  when the run ends;
- ``scheduler="tcp://host:8786"``: an existing cluster (``dask scheduler`` / ``dask worker``,
  dask-jobqueue on SLURM or LSF, ...). Its workers must see the model file, the images and the
  output folder at the same paths as the client (a shared file system), and have nucleuseg
  with the model's backend installed;
- a :class:`distributed.Client`: used as it is, and left open.

Each image is one task, the same per-image function as the single-process path. A worker loads
the model the first time it needs it and keeps it for the next images (one cache per worker
process, keyed by the model file and its modification time, backend, device and TTA), so each
worker loads it once.

A worker lost in the middle of a run (killed, out of memory, its machine gone) loses only the
images it was segmenting: the scheduler gives those tasks to another worker. Every file a task
writes has a name fixed before the run and is written atomically (to a temporary file renamed
into place), so a task done twice writes the same file twice, never half of one nor a second
copy. The tables are assembled by the client from the tasks' results, once per image, and
written once at the end (also when the run is interrupted, for the images done so far). An
image on which workers die again and again (the scheduler's ``allowed-failures``, 3 by default)
fails alone, with its error in the report.

Needs the ``large`` extra (``pip install "nucleuseg[large]"``: dask.distributed).

Examples
--------
>>> report = segment_files_distributed("nuclei.safetensors", "images/", "out/", workers=2)
... # doctest: +SKIP
>>> print(report.nuclei, report.summary)  # doctest: +SKIP
>>> segment_files_distributed("nuclei.safetensors", "images/", "out/", workers=0)
Traceback (most recent call last):
...
nucleuseg.errors.InputError: workers must be a positive integer, got 0
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nucleuseg._extras import require
from nucleuseg.batch import (
    BatchReport,
    ImageResult,
    _failed,
    _prepare,
    _segment_one,
    _table_rows,
    _write_tables,
)
from nucleuseg.errors import InputError
from nucleuseg.progress import progress_bar

logger = logging.getLogger(__name__)

_FEATURE = "segmenting images on dask.distributed workers"

# One cache per worker process: (model, backend, device, tta) -> Segmenter.
_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()
_LOADS = 0
"""Models this process has loaded (read by the tests through ``Client.run``)."""


@dataclasses.dataclass(frozen=True)
class _ModelSpec:
    """What a worker needs to load the model: a shipped name or an absolute file path.

    ``stamp`` (the file's modification time and size, as the client sees them) is part of the
    cache key, so that a long-lived worker loads a model file written again since.
    """

    model: str
    backend: str | None
    device: str | int | None
    tta: bool
    stamp: tuple[int, int] | None = None


def segment_files_distributed(
    model: str | os.PathLike,
    sources: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    backend: str | None = None,
    device: str | int | None = None,
    tta: bool = False,
    overlay: bool = False,
    channel: int | None = None,
    diameter: float | None = None,
    progress: bool = True,
    on_image: Callable[[ImageResult], None] | None = None,
) -> BatchReport:
    """Segment every image of ``sources`` on dask.distributed workers, writing into ``out``.

    Writes what :func:`nucleuseg.batch.segment_files` writes, with the same names, and returns
    the same report (images in the order of the sources, whatever order they finish in).

    Parameters
    ----------
    model : str or path
        A model file (``.safetensors``) or the name of a shipped model; each worker loads it
        once. A model rather than a :class:`~nucleuseg.Segmenter`: workers load it themselves.
    sources : path, glob pattern, or a sequence of them
        Image files, folders and patterns, as :func:`nucleuseg.batch.find_images` takes them.
    out : path
        Output folder, made if missing.
    scheduler : None, "local", str or distributed.Client
        ``None`` or ``"local"``: a local cluster of ``workers`` processes with one thread each,
        closed at the end; an address (``"tcp://host:8786"``): the scheduler of an existing
        cluster; a ``Client``: that client's cluster.
    workers : int, optional
        Worker processes of the local cluster (default: the usable cores). Only with a local
        cluster.
    backend : str, optional
        Backend the workers run the model on (default: the one that saved it).
    device : str or int, optional
        As for :class:`~nucleuseg.Segmenter`, on each worker.
    tta : bool
        Predict with flip test-time augmentation.
    overlay, channel, diameter, progress, on_image
        As for :func:`nucleuseg.batch.segment_files` (``on_image`` is called in this process,
        as each image is done).

    Returns
    -------
    BatchReport
        One :class:`~nucleuseg.batch.ImageResult` per image and the paths of the two tables.

    Raises
    ------
    InputError
        If ``workers`` is not a positive integer or comes with an existing cluster, or an
        option is not valid (before any image is read).
    CheckpointError
        If ``model`` is neither a model file nor a shipped model.
    ExtraMissing
        If dask.distributed is not installed.
    """
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    local = scheduler is None or scheduler == "local"
    if workers is not None and not local:
        raise InputError("workers sizes a local cluster: not with scheduler= an existing cluster")
    if not local and not isinstance(scheduler, str) and not hasattr(scheduler, "submit"):
        raise InputError(
            f"scheduler must be None, 'local', an address or a distributed.Client, "
            f"got {scheduler!r}"
        )
    distributed = require("distributed", "large", _FEATURE)
    spec = _model_spec(model, backend, device, tta)
    out, files, missing, stems = _prepare(sources, out, channel, diameter)
    results: dict[int, ImageResult] = {}
    rows: dict[int, list[list]] = {}
    if on_image is not None:
        for result in missing:
            on_image(result)
    try:
        with _client(distributed, scheduler, workers) as client:
            run = uuid.uuid4().hex[:12]
            futures = {}
            for i, path in enumerate(files):
                future = client.submit(
                    _segment_task,
                    spec,
                    str(path.resolve()),
                    str((out / stems[path]).resolve()),
                    overlay,
                    channel,
                    diameter,
                    key=f"nucleuseg-segment-{run}-{i}",
                )
                futures[future.key] = (i, path, future)
            done = distributed.as_completed([f for _, _, f in futures.values()])
            for future in progress_bar(done, "segmenting", progress, total=len(files)):
                i, path, _ = futures[future.key]
                result, table = _collect(distributed, future, path, out)
                results[i] = result
                if table is not None:
                    rows[i] = _table_rows(path, table)
                if on_image is not None:
                    on_image(result)
    finally:
        # Written once, by this process, also when the run is interrupted.
        ordered = [results[i] for i in sorted(results)]
        table_rows = [row for i in sorted(rows) for row in rows[i]]
        measurements, summary = _write_tables(out, table_rows, [*missing, *ordered])
        _remove_leftovers(out, stems.values())
    return BatchReport((*missing, *ordered), measurements, summary)


def _remove_leftovers(out: Path, stems) -> None:
    """Remove the temporary files of writes that a lost worker left half done.

    Such a file (``.<name>.<random>.tmp``, hidden, never renamed into place) is only left by a
    worker killed in the middle of a write; its image was written again by another worker.
    """
    for stem in stems:
        for leftover in out.glob(f".{glob.escape(stem)}_*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
            logger.debug("removed %s, left by a lost worker", leftover)


def _model_spec(
    model: str | os.PathLike, backend: str | None, device: str | int | None, tta: bool
) -> _ModelSpec:
    """The spec of ``model`` that workers load: a shipped name, or the file's absolute path."""
    from nucleuseg.models import is_shipped, resolve_model

    name, stamp = os.fspath(model), None
    if not is_shipped(name):
        path = resolve_model(model).resolve()  # the same path on every worker
        name, stamp = str(path), (path.stat().st_mtime_ns, path.stat().st_size)
    return _ModelSpec(name, backend, device, bool(tta), stamp)


@contextlib.contextmanager
def _client(distributed, scheduler: Any, workers: int | None) -> Iterator[Any]:
    """The client of the cluster the run uses; a local cluster lives as long as the run."""
    if scheduler is None or scheduler == "local":
        from nucleuseg.backends.threads import usable_cores

        n = workers or usable_cores()
        logger.info("starting a local cluster of %d worker processes", n)
        with (
            distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
    elif isinstance(scheduler, str):
        with distributed.Client(scheduler) as client:
            yield client
    else:
        yield scheduler


def _collect(distributed, future, path: Path, out: Path):
    """A task's result as the single-process path gives it: the path as found, and its table."""
    try:
        result, table = future.result()
    except distributed.KilledWorker as err:
        logger.debug("%s failed", path, exc_info=True)
        return _failed(path, f"its workers died while segmenting it ({err})", 0.0), None
    return (
        dataclasses.replace(
            result,
            path=path,
            labels=None if result.labels is None else out / result.labels.name,
            overlay=None if result.overlay is None else out / result.overlay.name,
        ),
        table,
    )


def _segment_task(
    spec: _ModelSpec,
    path: str,
    stem: str,
    overlay: bool,
    channel: int | None,
    diameter: float | None,
):
    """One image, on a worker: the single-process path's per-image function."""
    return _segment_one(_segmenter(spec), Path(path), Path(stem), overlay, channel, diameter)


def _segmenter(spec: _ModelSpec):
    """This process's segmenter for ``spec``, loaded the first time it is asked for."""
    global _LOADS
    key = dataclasses.astuple(spec)
    with _MODELS_LOCK:
        segmenter = _MODELS.get(key)
        if segmenter is None:
            from nucleuseg.models import is_shipped, pretrained
            from nucleuseg.segmenter import Segmenter

            if is_shipped(spec.model):
                segmenter = pretrained(spec.model, backend=spec.backend, device=spec.device)
            else:
                segmenter = Segmenter.load(spec.model, backend=spec.backend, device=spec.device)
            if spec.tta:
                segmenter.inference = segmenter.inference.replace(tta=True)
            for stale in [k for k in _MODELS if k[0] == spec.model]:  # written again since
                del _MODELS[stale]
            _MODELS[key] = segmenter
            _LOADS += 1
            logger.info("loaded %s in process %d", spec.model, os.getpid())
    return segmenter
