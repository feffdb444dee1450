"""The polarity decision on the DSB 2018 images, and what it and stain jitter cost.

Usage::

    python benchmarks/tissue_polarity.py [PATH] [--repeat N]

PATH is a DSB folder in Kaggle's layout (default: ``$NUCLEUSEG_DSB/stage1_train``, else the
folder beside the checkout). For every image the script compares
:func:`nucleuseg.transforms.normalization_stats` (whose inversion follows
:func:`~nucleuseg.transforms.image_modality`: colour as well as brightness) with the rule it
replaced (invert when the scaled median gray level is above one half), and prints the images per
DSB kind and modality, with those whose polarity changed (none is expected). It then times, in
the same process, the statistics against that brightness-only reference on the same images, and
training examples of synthetic tissue with and without ``stain_augment``, and prints the ratios.
Nothing is written.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np
from common import cpu_summary, open_dsb

from nucleuseg.config import get_preset
from nucleuseg.data import image_kind, make_synthetic
from nucleuseg.transforms import (
    NormalizationStats,
    as_rgb,
    image_modality,
    normalization_stats,
)


def brightness_only(image: np.ndarray) -> NormalizationStats:
    """The rule before colour was looked at: invert when the median gray is above one half."""
    sample = image[:: max(1, image.shape[0] // 256), :: max(1, image.shape[1] // 256)]
    sample = sample.astype(np.float32)
    low, high = np.percentile(sample, (1.0, 99.8))
    if high - low < 1e-6:
        high = low + 1.0
    median = (np.median(sample.mean(axis=2)) - low) / (high - low)
    return NormalizationStats(float(low), float(high), bool(median > 0.5))


def best_time(function, items, repeat: int) -> float:
    """Least time over ``repeat`` passes of ``function`` over ``items``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            function(item)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="DSB folder (default $NUCLEUSEG_DSB/stage1_train)")
    parser.add_argument("--repeat", type=int, default=3, help="timing passes (default 3)")
    args = parser.parse_args()
    dataset = open_dsb(args.path)
    if dataset is None:
        return 2
    print(cpu_summary())

    images = [as_rgb(sample.image) for sample in dataset]
    counts: collections.Counter = collections.Counter()
    changed = []
    for image_id, image in zip(dataset.ids, images, strict=True):
        stats = normalization_stats(image)
        counts[image_kind(image), image_modality(image), stats.invert] += 1
        if stats.invert != brightness_only(image).invert:
            changed.append(image_id)
    print(f"{len(images)} images of {dataset.name}")
    print(f"{'DSB kind':<14} {'modality':<14} {'inverted':<9} images")
    for (kind, modality, inverted), n in sorted(counts.items()):
        print(f"{kind:<14} {modality:<14} {inverted!s:<9} {n}")
    print(f"polarity changed from the brightness-only rule: {len(changed)} {changed[:5]}")

    new = best_time(normalization_stats, images, args.repeat)
    old = best_time(brightness_only, images, args.repeat)
    print(
        f"normalization_stats: {1e3 * new / len(images):.2f} ms per image, "
        f"{new / old:.2f}x the brightness-only rule ({1e3 * old / len(images):.2f} ms)"
    )

    from nucleuseg.training import make_example, prepare

    items = prepare(make_synthetic(16, size=256, seed=0, kinds=["tissue"]), progress=False)
    preset = get_preset("default")
    jitter = preset.replace(training=preset.training.replace(stain_augment=True))
    timings = {}
    for name, chosen in (("plain", preset), ("stain_augment", jitter)):
        rng = np.random.default_rng(0)
        timings[name] = best_time(
            lambda item, chosen=chosen, rng=rng: make_example(item, chosen, rng), items * 8, 3
        )
    per = 1e3 * timings["plain"] / (8 * len(items))
    print(
        f"training example ({preset.training.crop} px crop of synthetic tissue): {per:.2f} ms; "
        f"with stain_augment {timings['stain_augment'] / timings['plain']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
