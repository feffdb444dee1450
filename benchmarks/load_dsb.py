"""Time a cold and a warm load of a DSB 2018 folder through the sample cache.

Usage::

    python benchmarks/load_dsb.py [PATH] [--cache DIR] [--workers N] [--overlap POLICY] [--keep]

PATH is a DSB folder in Kaggle's layout (default: ``$NUCLEUSEG_DSB/stage1_train``). The cache
goes to a fresh folder (default ``/tmp/nucleuseg-cache``), which is emptied first so the first
load is cold. The script prints the time to open the folder, to decode and cache every sample
(cold), to open it again and to read every sample back (warm), and the images per kind.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import time
from pathlib import Path

from nucleuseg.data.cache import clear_cache
from nucleuseg.data.dsb import load_dsb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="DSB folder (default $NUCLEUSEG_DSB/stage1_train)")
    parser.add_argument("--cache", default="/tmp/nucleuseg-cache", help="cache folder (emptied)")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    parser.add_argument("--overlap", default="error", help="overlap policy for the masks")
    parser.add_argument("--keep", action="store_true", help="keep the cache folder's entries")
    args = parser.parse_args()

    path = args.path
    if path is None:
        root = os.environ.get("NUCLEUSEG_DSB")
        if not root:
            print("no data: pass a DSB folder or set NUCLEUSEG_DSB", file=sys.stderr)
            return 2
        path = str(Path(root) / "stage1_train")
    if not Path(path).is_dir():
        print(f"no data: {path} is not a folder", file=sys.stderr)
        return 2
    if not args.keep:
        clear_cache(args.cache)

    started = time.perf_counter()
    dataset = load_dsb(path, cache=args.cache, workers=args.workers, overlap=args.overlap)
    opened = time.perf_counter()
    dataset.preload()
    decoded = time.perf_counter()
    print(f"{dataset}: open {opened - started:.2f} s, cold decode {decoded - opened:.1f} s")

    started = time.perf_counter()
    dataset = load_dsb(path, cache=args.cache, workers=args.workers, overlap=args.overlap)
    opened = time.perf_counter()
    kinds = collections.Counter(dataset.kinds().values())
    kinded = time.perf_counter()
    nuclei = pixels = 0
    for sample in dataset:
        nuclei += int(sample.labels.max()) if sample.labels is not None else 0
        pixels += sample.image.shape[0] * sample.image.shape[1]
    read = time.perf_counter()
    print(
        f"warm: open {opened - started:.2f} s, kinds {kinded - opened:.2f} s, "
        f"read every sample {read - kinded:.2f} s"
    )
    print(f"{nuclei} nuclei, {pixels / 1e6:.1f} megapixels; kinds: {dict(sorted(kinds.items()))}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
