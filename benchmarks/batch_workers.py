"""A folder of DSB-sized images segmented on 1 and 2 dask.distributed workers: images/s, ratio.

Usage::

    python benchmarks/batch_workers.py [--images 16] [--workers 1,2] [--model FILE]
        [--backend torch] [--dsb [PATH]]

``--images`` synthetic 520 x 696 images (the most common DSB 2018 size;
:func:`nucleuseg.data.synthetic_sample`, mixed kinds) are written as PNGs into a temporary
folder, or, with ``--dsb``, the first ``--images`` images of DSB 2018 ``stage1_train`` (PATH, or
``NUCLEUSEG_DSB``, or the folder beside the checkout) are read from where they are. The folder is
then segmented in the same process, by:

- ``one process (ref)``: :func:`nucleuseg.batch.segment_files` with the model loaded here (its
  backend may use every core);
- ``N workers``: :func:`nucleuseg.distributed.segment_files_distributed` on a local cluster of
  N worker processes with one thread each. Starting the cluster and loading the model on each
  worker are done before the clock starts (printed apart): the rate is the steady state that a
  folder of thousands of images sees.

The model is ``--model`` (a model file or a shipped model's name) or the ``default`` preset's
U-Net, freshly initialised (a trained one costs the same). Each row prints images/s and the ratio
to the first worker row; on two cores the ceiling of 2 workers over 1 is 2x. The script prints the
processor's AVX2 / AVX-512 flags and the core count; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_summary, open_dsb

from nucleuseg.batch import segment_files
from nucleuseg.data import synthetic_sample, write_image


def write_synthetic(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"synthetic{i:03d}.png"
        write_image(path, synthetic_sample(seed=i, size=(520, 696)).image)
        paths.append(path)
    return paths


def default_model(folder: Path) -> Path:
    from nucleuseg import checkpoint
    from nucleuseg.backends.base import init_weights
    from nucleuseg.config import get_preset

    preset = get_preset("default")
    path = folder / "untrained.safetensors"
    checkpoint.save_model(path, init_weights(preset.network, 0), preset, "torch")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images in the folder")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--model", help="model file or shipped name (default: untrained U-Net)")
    parser.add_argument("--backend", default="torch", help="backend of every run (default torch)")
    parser.add_argument("--dsb", nargs="?", const="", help="DSB stage1_train images instead")
    args = parser.parse_args(argv)

    import distributed

    from nucleuseg.distributed import _client, _model_spec, _segmenter, segment_files_distributed
    from nucleuseg.models import is_shipped
    from nucleuseg.segmenter import Segmenter

    counts = [int(n) for n in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="batch_workers_"))
    if args.dsb is not None:
        dataset = open_dsb(args.dsb or None)
        if dataset is None:
            return 1
        paths = sorted(Path(dataset.root).glob("*/images/*.png"))[: args.images]
        source = f"{len(paths)} DSB stage1_train images"
    else:
        paths = write_synthetic(tmp / "images", args.images)
        source = f"{len(paths)} synthetic 520 x 696 PNGs"
    model = args.model or default_model(tmp)
    print(cpu_summary())
    print(f"{source}; model {args.model or 'untrained default U-Net'} on {args.backend}")
    print(f"{'run':<20}{'setup s':>9}{'seconds':>9}{'images/s':>10}{'vs 1st':>8}")

    def row(label: str, setup: float, seconds: float, first: float | None) -> float:
        rate = len(paths) / seconds
        ratio = f"{rate / first:.2f}" if first else "-"
        print(f"{label:<20}{setup:>9.1f}{seconds:>9.1f}{rate:>10.2f}{ratio:>8}", flush=True)
        return rate

    started = time.perf_counter()
    if is_shipped(str(model)):
        from nucleuseg.models import pretrained

        seg = pretrained(str(model), backend=args.backend)
    else:
        seg = Segmenter.load(model, backend=args.backend)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    segment_files(seg, paths, tmp / "out-ref", progress=False)
    row("one process (ref)", setup, time.perf_counter() - started, None)
    del seg

    spec = _model_spec(model, args.backend, None, False)
    first = None
    for n in counts:
        started = time.perf_counter()
        with _client(distributed, "local", n) as client:
            client.run(lambda: _segmenter(spec) and None)  # each worker loads the model
            setup = time.perf_counter() - started
            started = time.perf_counter()
            segment_files_distributed(
                model,
                paths,
                tmp / f"out-{n}",
                scheduler=client,
                backend=args.backend,
                progress=False,
            )
            rate = row(f"{n} workers", setup, time.perf_counter() - started, first)
            first = first or rate
    return 0


if __name__ == "__main__":
    sys.exit(main())
