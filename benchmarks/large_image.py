"""Block-wise prediction of a big synthetic fluorescence image: peak memory and megapixels/s.

Usage::

    python benchmarks/large_image.py [--side 4096] [--blocks 512,1024] [--halo 64]
        [--network stand-in|unet] [--model nuclei.safetensors] [--workers 2] [--dir DIR]

A ``--side`` x ``--side`` ``uint8`` image is written into a zarr array tile by tile by the
synthetic generator (:func:`nucleuseg.data.synthetic_sample`, fluorescence, one 512-pixel tile
per call: the image is never whole in memory; the tiles' nuclei are cut at the tile seams, which
only makes the image harder). Each ``--blocks`` size then segments it with
:func:`nucleuseg.large.segment_large` (threaded Dask scheduler, ``--workers`` threads) in a fresh
process, which reports its peak resident memory (``ru_maxrss``: the whole process, Python,
libraries and all), the seconds, megapixels/s and the number of nuclei. The reference row, in a
fresh process too, predicts a 2048 x 2048 crop held in memory with
:func:`nucleuseg.inference.predict_labels` (the whole-image path): the block-wise MP/s are also
given as a ratio to it.

The network: ``stand-in`` (default) is a Gaussian-smoothed foreground (a 1-channel map, so
connected components), which measures everything but a network: reading, normalising, padding,
post-processing, stitching, writing and the table. ``unet`` is the ``default`` preset's U-Net on
torch, freshly initialised (the cost of a trained one; its untrained maps are noise, so its
nuclei counts mean nothing), or the model file given by ``--model``.

The script prints the processor's AVX2 / AVX-512 flags and the core count beside the table; run it
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_summary

TILE = 512
REFERENCE = 2048


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def generate(path: Path, side: int, seed: int = 0) -> None:
    """Write the synthetic image into a zarr array at ``path``, one tile at a time."""
    import zarr

    from nucleuseg.data import synthetic_sample

    array = zarr.create_array(
        store=str(path), shape=(side, side), chunks=(TILE, TILE), dtype="uint8", overwrite=True
    )
    for y in range(0, side, TILE):
        for x in range(0, side, TILE):
            h, w = min(TILE, side - y), min(TILE, side - x)
            tile = synthetic_sample(seed + y * side + x, size=(h, w), kind="fluorescence").image
            array[y : y + h, x : x + w] = tile[..., 0]


def network(args: argparse.Namespace):
    """``(predict, preset)`` for the chosen network."""
    from scipy import ndimage as ndi

    from nucleuseg.config import InferenceConfig, get_preset

    if args.network == "stand-in":
        preset = get_preset("default").replace(
            inference=InferenceConfig(postprocess="components", min_size=8)
        )
        return (
            lambda batch: ndi.gaussian_filter(batch[..., :1], sigma=(0, 1.5, 1.5, 0)),
            preset,
        )
    from nucleuseg.segmenter import Segmenter

    seg = Segmenter.load(args.model) if args.model else Segmenter("torch")
    return seg.network.predict, seg.preset


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import zarr

    predict, preset = network(args)
    image_path = Path(args.dir) / "image.zarr"
    if args.child == "reference":
        from nucleuseg.inference import predict_labels

        image = zarr.open_array(image_path, mode="r")[:REFERENCE, :REFERENCE]
        started = time.perf_counter()
        labels = predict_labels(predict, image, preset)
        seconds = time.perf_counter() - started
        result = {"pixels": image.size, "nuclei": int(labels.max())}
    else:
        from nucleuseg.large import segment_large

        block = int(args.child)
        out = Path(args.dir) / f"out_{block}"
        started = time.perf_counter()
        done = segment_large(
            image_path, predict, preset, out, block=block, halo=args.halo, workers=args.workers
        )
        seconds = time.perf_counter() - started
        result = {"pixels": args.side**2, "nuclei": done.nuclei}
    result.update(seconds=seconds, rss=peak_rss_mb())
    print(json.dumps(result))


def measure(args: argparse.Namespace, what: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--dir",
        args.dir,
        "--side",
        str(args.side),
    ]
    command += ["--halo", str(args.halo), "--workers", str(args.workers), "--network", args.network]
    if args.model:
        command += ["--model", args.model]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096, help="image side (default 4096)")
    parser.add_argument("--blocks", default="512,1024", help="block sides (default 512,1024)")
    parser.add_argument("--halo", type=int, default=64, help="halo (default 64)")
    parser.add_argument("--network", choices=("stand-in", "unet"), default="stand-in")
    parser.add_argument("--model", help="a model file for --network unet")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dir", help="working folder (default: a temporary one)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    temporary = None
    if args.dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="nucleuseg-large-")
        args.dir = temporary.name
    started = time.perf_counter()
    generate(Path(args.dir) / "image.zarr", args.side)
    print(f"{cpu_summary()}; numpy {np.__version__}")
    print(
        f"image: {args.side} x {args.side} synthetic fluorescence ({args.side**2 / 1e6:.1f} MP), "
        f"written into zarr tile by tile in {time.perf_counter() - started:.1f} s "
        f"(generator peak RSS {peak_rss_mb():.0f} MB); network: {args.network}; "
        f"halo {args.halo}; {args.workers} worker threads"
    )
    print(f"{'run':<26} {'seconds':>8} {'MP/s':>7} {'vs ref':>7} {'peak RSS MB':>12} {'nuclei':>9}")
    reference = measure(args, "reference")
    ref_rate = reference["pixels"] / 1e6 / reference["seconds"]
    rows = [(f"whole {REFERENCE}x{REFERENCE} crop (ref)", reference, ref_rate)]
    for block in (int(b) for b in args.blocks.split(",")):
        result = measure(args, str(block))
        rows.append((f"blocks of {block}", result, result["pixels"] / 1e6 / result["seconds"]))
    for name, result, rate in rows:
        print(
            f"{name:<26} {result['seconds']:>8.1f} {rate:>7.2f} {rate / ref_rate:>7.2f} "
            f"{result['rss']:>12.0f} {result['nuclei']:>9}"
        )
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
