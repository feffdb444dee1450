"""Quickstart: train a U-Net on synthetic nuclei, segment an image, score the model, save it.

Run it with no arguments::

    python examples/quickstart.py [--backend torch] [--minutes 5] [--out DIR]

It needs one backend (``pip install "nucleuseg[torch]"``) and no data: the images come from the
built-in synthetic nuclei generator. It trains the ``default`` recipe for ``--minutes``, prints
the DSB score on held-out images (and per image kind), and writes the model to ``--out`` (a
temporary folder by default).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nucleuseg as ns

# Set by the test suite: a tiny network and a few steps, so this file runs in seconds.
QUICK = os.environ.get("NUCLEUSEG_EXAMPLES_QUICK") == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", help="torch, keras or flax")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget")
    parser.add_argument("--out", help="folder for the model file (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nucleuseg-quickstart-"))
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data: 200 synthetic images with exact labels, split 90/10 by kind and size.
    n, size = (12, 64) if QUICK else (200, 256)
    train, val = ns.data.make_synthetic(n, size=size, seed=0).split(0.1, seed=0)
    print(f"{len(train)} training and {len(val)} validation images")

    # 2. Model: the default recipe (U-Net, BCE + Dice, augmentation, watershed).
    preset = ns.config.get_preset("default")
    if QUICK:
        preset = preset.replace(
            network=preset.network.replace(depth=3, base_filters=4),
            training=preset.training.replace(crop=32, batch_size=2, steps_per_epoch=2),
        )
    seg = ns.Segmenter(args.backend, preset=preset)

    # 3. Train, keeping the weights that score best on the validation images.
    history = seg.fit(train, validation=val, epochs=1 if QUICK else 100, max_minutes=args.minutes)
    print(f"best validation score {history.best_score:.3f} at epoch {history.best_epoch}")

    # 4. Segment one image: an int32 label image, 0 = background, one id per nucleus.
    sample = ns.data.synthetic_sample(seed=1234, size=size)
    labels = seg.predict(sample.image)
    print(
        f"{sample.kind} image {sample.shape}: {labels.max()} nuclei found, {sample.labels.max()} true"
    )

    # 5. Score on new images with the DSB 2018 metric, and save the model.
    test = ns.data.make_synthetic(4 if QUICK else 20, size=size, seed=1)
    result = seg.evaluate(test, progress=False)
    print(result)
    print(f"DSB score on {len(test)} held-out images: {result.score:.3f}")
    for kind, score in result.by_kind(test.kinds()).items():
        print(f"  {kind:<13} {score:.3f}")
    seg.save(out / "quickstart.safetensors")
    print(f"saved {out / 'quickstart.safetensors'}")


if __name__ == "__main__":
    main()
