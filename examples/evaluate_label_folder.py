"""Score label images made by another tool (CellProfiler, StarDist, Cellpose, ...) with the DSB metric.

::

    python examples/evaluate_label_folder.py PRED_DIR TRUTH_DIR [--out DIR]

``PRED_DIR`` holds one label image per image: single-channel 8-, 16- or 32-bit PNG or TIFF, 0 for
background and one id per nucleus, named ``<image_id>.png`` (or ``<image_id>_labels.png``, as
``nucleuseg predict`` writes them). ``TRUTH_DIR`` is a labelled dataset in a format nucleuseg
reads (a DSB-style folder with masks, ``<id>/images/<id>.png`` and ``<id>/masks/*.png``, or an
``images/`` folder with a ``labels/`` folder of label images of the same names), or a plain
folder of label images. Scores are printed per threshold and, when the truth has images, per
image kind; they are written per image to ``scores.csv`` in ``--out``.

With no arguments the script makes both folders from synthetic nuclei (the truth as ``images/``
and ``labels/``): the "other tool" is simulated by shrinking every true nucleus by a pixel,
dropping some, adding false ones and renumbering the rest.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import nucleuseg as ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred", nargs="?", help="folder of predicted label images")
    parser.add_argument(
        "truth", nargs="?", help="labelled dataset folder (DSB, images/ + labels/) or label images"
    )
    parser.add_argument("--out", help="folder for scores.csv (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nucleuseg-evaluate-"))
    out.mkdir(parents=True, exist_ok=True)
    if (args.pred is None) != (args.truth is None):
        parser.error("give both PRED_DIR and TRUTH_DIR, or neither")
    if args.pred is None:
        pred_dir, truth_dir = write_example_folders(out)
        print(f"no folders given: wrote synthetic ones to {out}")
    else:
        pred_dir, truth_dir = Path(args.pred), Path(args.truth)

    # The truth: a dataset in a format nucleuseg recognises (a DSB folder's masks are merged
    # into label images), or a plain folder of label images.
    kinds = None
    if ns.data.detect_formats(truth_dir):
        dataset = ns.data.load_dataset(truth_dir, labels=True)
        truths = {s.image_id: s.labels for s in dataset}
        kinds = dataset.kinds()
    else:
        truths = {i: ns.data.read_labels(p) for i, p in ns.data.label_files(truth_dir).items()}

    found = ns.data.label_files(pred_dir, ids=truths)
    missing = [i for i in truths if i not in found]
    if missing:
        print(f"{len(missing)} images have no label image in {pred_dir}: scored as empty")
    preds = {
        i: ns.data.read_labels(found[i]) if i in found else np.zeros_like(truth)
        for i, truth in truths.items()
    }

    result = ns.metrics.score_dataset(truths, preds)  # raises InputError naming a bad image
    print(result)
    if kinds is not None:
        for kind, score in result.by_kind(kinds).items():
            print(f"  {kind:<13} {score:.4f}")
    worst = sorted(result.per_image, key=lambda s: s.score)[:3]
    print("worst images: " + ", ".join(f"{s.image_id} ({s.score:.3f})" for s in worst))
    with open(out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "score", "ap50", "n_true", "n_pred", "precision", "recall"])
        for s in result.per_image:
            row = [s.score, s.ap50, s.n_true, s.n_pred, s.precision, s.recall]
            writer.writerow([s.image_id, *(f"{v:.4f}" if isinstance(v, float) else v for v in row)])
    print(
        f"DSB score {result.score:.4f} over {len(truths)} images; per image in {out / 'scores.csv'}"
    )


def write_example_folders(out: Path) -> tuple[Path, Path]:
    """Truth (images and label images) and 'another tool's' label images of synthetic nuclei."""
    truth_dir, pred_dir = out / "truth", out / "other-tool"
    for folder in (truth_dir / "images", truth_dir / "labels", pred_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for sample in ns.data.make_synthetic(6, size=(128, 160), seed=4):
        truth = sample.labels
        # Shrink every nucleus by one pixel: keep pixels whose 3x3 neighbourhood is one label.
        pred = np.where(ndi.minimum_filter(truth, 3) == ndi.maximum_filter(truth, 3), truth, 0)
        dropped = rng.random(int(truth.max()) + 1) < 0.15
        pred[dropped[pred]] = 0  # the tool misses some nuclei
        yy, xx = np.mgrid[: truth.shape[0], : truth.shape[1]]
        cy, cx = rng.integers(10, 118), rng.integers(10, 150)
        pred[((yy - cy) ** 2 + (xx - cx) ** 2 < 36) & (pred == 0)] = 999  # and finds a false one
        pred = np.where(pred > 0, pred * 7 + 100, 0)  # its own, non-sequential ids
        ns.data.write_image(truth_dir / "images" / f"{sample.image_id}.png", sample.image)
        ns.data.write_image(
            truth_dir / "labels" / f"{sample.image_id}.png", truth.astype(np.uint16)
        )
        ns.data.write_image(pred_dir / f"{sample.image_id}_labels.png", pred.astype(np.uint16))
    return pred_dir, truth_dir


if __name__ == "__main__":
    main()
