"""Pixel accuracy against the DSB score: why a model is never chosen by pixel accuracy.

Usage::

    python benchmarks/pixel_vs_dsb.py [--data stage1_train] [--val-fraction 0.15] [--seed 0]
        LABEL=MODEL [LABEL=MODEL ...]

Scores, on the validation part of the stratified split (the images no model was trained or tuned
on), a plain Otsu threshold of the normalised image cut into connected components, and each
``LABEL=MODEL`` (a model file or a shipped name) with its own post-processing settings. For each
it prints the DSB score, AP at IoU 0.5 and pixel accuracy (the share of pixels whose
foreground / background call is right, :func:`nucleuseg.metrics.pixel_accuracy`), over all images
and per kind.

With two or more models, the first one is the reference: the script adds, for each other model,
the mean per-image difference of the DSB score with its 95 % interval from a paired bootstrap
over the images (10,000 resamples), which says how much of a difference the choice of
validation images alone could make.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import cpu_summary, open_dsb
from skimage.filters import threshold_otsu
from skimage.measure import label

from nucleuseg.metrics import pixel_accuracy, score_dataset
from nucleuseg.models import pretrained
from nucleuseg.segmenter import Segmenter
from nucleuseg.transforms import normalize

KINDS = ("fluorescence", "brightfield", "histology")


def otsu_labels(image: np.ndarray) -> np.ndarray:
    """Connected components of an Otsu threshold of the normalised image (nuclei bright)."""
    grey = normalize(image).mean(axis=-1)
    if grey.max() <= grey.min():
        return np.zeros(grey.shape, np.int32)
    return label(grey > threshold_otsu(grey)).astype(np.int32)


def load_model(spec: str) -> tuple[str, Segmenter]:
    """``LABEL=MODEL`` (or just ``MODEL``) as a label and a loaded segmenter."""
    name, _, path = spec.rpartition("=")
    return name or path, pretrained(path, backend="torch")  # a shipped name or a file


def summarise(truths: dict, preds: dict, kinds: dict) -> dict[str, float]:
    """DSB, AP50 and pixel accuracy overall and DSB / pixel accuracy per kind."""
    scores = score_dataset(truths, preds)
    pixel = {i: pixel_accuracy(truths[i], preds[i]) for i in truths}
    row = {
        "dsb": scores.score,
        "ap50": scores.ap50,
        "pixel": float(np.mean(list(pixel.values()))),
        "per_image": {s.image_id: s.score for s in scores.per_image},
    }
    for kind in KINDS:
        ids = [i for i in truths if kinds[i] == kind]
        if ids:
            row[kind] = float(np.mean([row["per_image"][i] for i in ids]))
            row[f"{kind} pixel"] = float(np.mean([pixel[i] for i in ids]))
    return row


def paired_bootstrap(a: dict, b: dict, resamples: int = 10_000, seed: int = 0) -> tuple:
    """Mean of ``b - a`` per image and its 95 % bootstrap interval."""
    ids = sorted(a)
    diff = np.array([b[i] - a[i] for i in ids])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="LABEL=MODEL: a model file or shipped name")
    parser.add_argument("--data", help="DSB stage1_train folder (default: $NUCLEUSEG_DSB)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="held-out share")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    args = parser.parse_args()
    dataset = open_dsb(args.data, masks=True)
    if dataset is None:
        return 1
    _, val = dataset.split(args.val_fraction, seed=args.seed)
    kinds = val.kinds()
    samples = list(val)
    truths = {s.image_id: s.labels for s in samples}
    print(cpu_summary())
    print(
        f"{len(samples)} validation images: "
        + ", ".join(f"{sum(k == kind for k in kinds.values())} {kind}" for kind in KINDS)
    )

    rows = {
        "Otsu threshold, connected components": summarise(
            truths, {s.image_id: otsu_labels(s.image) for s in samples}, kinds
        )
    }
    for spec in args.models:
        name, seg = load_model(spec)
        preds = {s.image_id: seg.predict(s.image) for s in samples}
        rows[name] = summarise(truths, preds, kinds)

    width = max(len(name) for name in rows)
    head = f"{'model':<{width}}   DSB    AP50  pixel acc  " + "  ".join(
        f"{kind[:5]} DSB/pixel" for kind in KINDS
    )
    print(head)
    for name, row in rows.items():
        cells = "  ".join(
            f"{row.get(kind, float('nan')):.3f} / {row.get(kind + ' pixel', float('nan')):.3f}"
            for kind in KINDS
        )
        print(
            f"{name:<{width}}  {row['dsb']:.4f}  {row['ap50']:.4f}   {row['pixel']:.4f}   {cells}"
        )
    names = list(rows)[1:]
    for name in names[1:]:
        mean, low, high = paired_bootstrap(rows[names[0]]["per_image"], rows[name]["per_image"])
        print(
            f"{name} - {names[0]}: DSB {mean:+.4f} per image, 95 % bootstrap interval "
            f"[{low:+.4f}, {high:+.4f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
