"""Kaggle run-length encoding of whole label images: nucleuseg against the DSB 2018 starter encoder.

Usage::

    python benchmarks/rle_encode.py [PATH] [--images 40] [--repeats 3]

PATH is a DSB folder in Kaggle's layout; by default ``stage1_train`` under ``$NUCLEUSEG_DSB`` when
that is set, else ``../shared/data/dsb2018/stage1_train`` (the folder beside the checkout). The
label images of the first ``--images`` images (in id order) are built from their masks once; then
both encoders turn every label image into one string per nucleus, in the same process:

- *starter*: the encoder of the DSB 2018 starter kernels, a Python loop over the foreground pixels
  of one boolean mask per nucleus (``labels == i`` for each ``i``), joined into a string;
- *nucleuseg*: :func:`nucleuseg.rle.encode_labels`, every nucleus of the image in one pass.

The two outputs are checked to be identical, then each encoder runs ``--repeats`` timed passes over
all images, alternating, and the fastest pass of each counts. The last line is the ratio (how many
times faster nucleuseg is). The processor's AVX2 / AVX-512 flags and the core count are printed
beside it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import cpu_summary, open_dsb

from nucleuseg.data import load_dsb
from nucleuseg.rle import encode_labels


def starter_rle(mask: np.ndarray) -> list[int]:
    """The starter kernels' encoder: 1-based ``start, length`` pairs, column-major."""
    dots = np.where(mask.T.flatten() == 1)[0]
    run_lengths: list[int] = []
    prev = -2
    for b in dots:
        if b > prev + 1:
            run_lengths.extend((b + 1, 0))
        run_lengths[-1] += 1
        prev = b
    return run_lengths


def starter_encode_labels(labels: np.ndarray) -> dict[int, str]:
    """One mask per nucleus through :func:`starter_rle`, as the starter kernels' submission did."""
    return {
        int(i): " ".join(str(v) for v in starter_rle(labels == i))
        for i in np.unique(labels)
        if i != 0
    }


def one_pass(encoder, images: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for labels in images:
        encoder(labels)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="DSB folder (default $NUCLEUSEG_DSB/stage1_train)")
    parser.add_argument("--images", type=int, default=40, help="label images to encode (40)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per encoder (3)")
    args = parser.parse_args()

    found = open_dsb(args.path)
    if found is None:
        return 1
    dataset = load_dsb(found.root, masks=True, cache=False, progress=False)
    images = [dataset[i].labels for i in range(min(args.images, len(dataset)))]
    nuclei = sum(int(np.count_nonzero(np.unique(im))) for im in images)
    pixels = sum(im.size for im in images)
    for labels in images:
        if encode_labels(labels) != starter_encode_labels(labels):
            print("the two encoders disagree", file=sys.stderr)
            return 1

    encoders = {"starter": starter_encode_labels, "nucleuseg": encode_labels}
    times = dict.fromkeys(encoders, float("inf"))
    for _ in range(args.repeats):
        for name, encoder in encoders.items():
            times[name] = min(times[name], one_pass(encoder, images))
    print(cpu_summary())
    print(f"{len(images)} label images, {nuclei} nuclei, {pixels / 1e6:.1f} megapixels")
    for name, seconds in times.items():
        print(f"{name:>10}: {seconds * 1000:8.1f} ms  ({nuclei / seconds:,.0f} nuclei/s)")
    print(f"nucleuseg / starter speed: {times['starter'] / times['nucleuseg']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
