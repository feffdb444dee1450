"""Swap frameworks: train with one backend, load the model file in every other installed one.

::

    python examples/swap_backends.py [--train-with torch] [--minutes 2] [--out DIR]

Model files hold canonical weights (HWIO kernels, one flat dict of arrays), so a file written by
the PyTorch backend loads into Keras or Flax and gives the same probabilities to float32
round-off, and almost always the same label image. The script lists the backends, trains a small
model with ``--train-with``, saves it, loads it into each installed backend and compares their
outputs on a few synthetic images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

import nucleuseg as ns

QUICK = os.environ.get("NUCLEUSEG_EXAMPLES_QUICK") == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-with", default="torch", help="backend that trains the model")
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget")
    parser.add_argument("--out", help="folder for the model file (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nucleuseg-swap-"))
    out.mkdir(parents=True, exist_ok=True)

    for info in ns.available_backends():  # what is registered, and what can run here
        print(info)
    installed = [b.name for b in ns.available_backends() if b.available]

    # Train and save with one framework.
    preset = ns.config.get_preset("default")
    preset = preset.replace(
        network=preset.network.replace(depth=3 if QUICK else 4, base_filters=4 if QUICK else 8),
        training=preset.training.replace(
            crop=32 if QUICK else 96, steps_per_epoch=2 if QUICK else 40
        ),
    )
    size = 64 if QUICK else 192
    train, val = ns.data.make_synthetic(8 if QUICK else 100, size=size, seed=0).split(0.2)
    seg = ns.Segmenter(args.train_with, preset=preset)
    seg.fit(train, validation=val, epochs=1 if QUICK else 100, max_minutes=args.minutes)
    path = out / "nuclei.safetensors"
    seg.save(path)
    print(f"trained with {args.train_with}, saved {path}")

    # Load the same file in every installed framework and compare with the original.
    images = [s.image for s in ns.data.make_synthetic(3, size=size, seed=7)]
    reference = [(seg.predict_proba(x), seg.predict(x)) for x in images]
    for name in installed:
        other = ns.Segmenter.load(path, backend=name)
        diff = max(
            float(np.abs(other.predict_proba(x) - probs).max())
            for x, (probs, _) in zip(images, reference, strict=True)
        )
        same = sum(
            np.array_equal(other.predict(x), labels)
            for x, (_, labels) in zip(images, reference, strict=True)
        )
        print(
            f"{name:<6} max probability difference {diff:.1e}; "
            f"identical label images: {same}/{len(images)}"
        )

    # Weights are plain numpy arrays in the canonical layout: move them by hand if you like.
    weights = seg.get_weights()
    print(
        f"{len(weights)} canonical arrays, e.g. enc1.conv1.kernel {weights['enc1.conv1.kernel'].shape}"
    )


if __name__ == "__main__":
    main()
