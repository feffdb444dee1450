"""Train on a DSB 2018 folder: load, split, train, evaluate per image kind, save.

With the real data (Kaggle's ``stage1_train``, read in place)::

    python examples/train_dsb.py /path/to/stage1_train --minutes 60 --out runs/
    NUCLEUSEG_DSB=/path/to/dsb2018 python examples/train_dsb.py stage1_train

With no argument and no ``NUCLEUSEG_DSB``, the script first writes a small DSB-style folder of
synthetic nuclei (``<id>/images/<id>.png`` and one ``<id>/masks/*.png`` per nucleus) into a
temporary folder and trains on that, so it runs anywhere.

Writes the model, its training curves (``training.png``) and the best and worst validation images
(``best.png``, ``worst.png``) into ``--out`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nucleuseg as ns
from nucleuseg import viz

QUICK = os.environ.get("NUCLEUSEG_EXAMPLES_QUICK") == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="DSB folder (default $NUCLEUSEG_DSB/stage1_train)")
    parser.add_argument("--backend", default="torch", help="torch, keras or flax")
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nucleuseg-train-"))
    out.mkdir(parents=True, exist_ok=True)

    data, cache = args.data, True  # decoded samples are cached: later runs load in seconds
    if data is None and os.environ.get("NUCLEUSEG_DSB"):
        data = "stage1_train"  # looked up under $NUCLEUSEG_DSB
    if data is None:
        data = write_synthetic_dsb(out / "stage1_train", n=10 if QUICK else 60)
        cache = False
        print(f"no DSB folder given: wrote a synthetic one to {data}")

    # Open the folder lazily, then split 85/15, stratified by image kind and size.
    dataset = ns.data.load_dsb(data, cache=cache)
    train, val = dataset.split(0.15, seed=0)
    counts = {k: list(dataset.kinds().values()).count(k) for k in ns.data.KINDS}
    print(f"{dataset}: {counts}; {len(train)} to train, {len(val)} to validate")

    preset = ns.config.get_preset("default")
    if QUICK:
        preset = preset.replace(
            network=preset.network.replace(depth=3, base_filters=4),
            training=preset.training.replace(crop=32, batch_size=2, steps_per_epoch=2),
        )
    seg = ns.Segmenter(args.backend, preset=preset, seed=0)
    history = seg.fit(
        train,
        validation=val,
        epochs=1 if QUICK else 200,
        max_minutes=args.minutes,
        resume=out / "train-state.safetensors",  # rerun the script to continue an interrupted run
    )
    print(history)
    seg.save(out / "model.safetensors")

    # Evaluate the best weights on the validation images, per kind, with figures.
    preds = seg.predict_many(val)
    result = ns.metrics.score_dataset({s.image_id: s.labels for s in val}, preds)
    print(result)
    for kind, score in result.by_kind(val.kinds()).items():
        print(f"  {kind:<13} {score:.4f}")
    print(f"validation DSB score {result.score:.4f}")
    viz.save_figure(viz.plot_history(history), out / "training.png")
    viz.save_extremes(val, preds, result, out, n=min(3, len(val)))
    print(f"wrote model.safetensors, training.png, best.png and worst.png to {out}")


def write_synthetic_dsb(root: Path, n: int) -> Path:
    """Write ``n`` synthetic images in Kaggle's layout: one PNG per image and per nucleus."""
    for sample in ns.data.make_synthetic(n, size=(96, 128) if QUICK else (256, 320), seed=0):
        folder = root / sample.image_id
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        ns.data.write_image(folder / "images" / f"{sample.image_id}.png", sample.image)
        for k, mask in enumerate(ns.masks.split_labels(sample.labels)):
            ns.data.write_image(folder / "masks" / f"nucleus-{k:03d}.png", mask)
    return root


if __name__ == "__main__":
    main()
