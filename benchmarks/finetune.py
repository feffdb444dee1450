"""Fine-tuning a pretrained model on a small labelled set of a kind it has not seen.

Usage::

    python benchmarks/finetune.py [--model nuclei] [--kind tissue] [--train 40] [--test 20]
        [--size 256] [--minutes 3] [--backend torch] [--seed 0] [--stain-augment]

A small labelled set is drawn from the synthetic generator (by default ``tissue``: dense H&E
tissue with no bright background, which the DSB 2018 images do not contain): ``--train`` images to
train on (a fifth of them held out to choose the best epoch) and ``--test`` other images to score.
Three models are scored on the test images, in the same process:

- *pretrained*: the model as it ships (``--model``, a shipped name or a model file);
- *fine-tuned*: that model trained further on the small set for ``--minutes``, with its own
  recipe (``nucleuseg train --init MODEL`` does the same);
- *from scratch*: the same network and recipe from random weights, for the same ``--minutes``.

It prints the DSB score and AP at IoU 0.5 of each, the epochs each training made, and the CPU's
AVX2 / AVX-512 flags and core count. The minutes are wall-clock time, so run it on an otherwise
idle machine; both trainings get the same budget.
"""

from __future__ import annotations

import argparse
import time

from common import cpu_summary

from nucleuseg.data.synthetic import make_synthetic
from nucleuseg.models import pretrained
from nucleuseg.segmenter import Segmenter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei", help="shipped model or model file")
    parser.add_argument("--kind", default="tissue", help="synthetic kind to fine-tune on")
    parser.add_argument("--train", type=int, default=40, help="labelled images to train on")
    parser.add_argument("--test", type=int, default=20, help="images to score")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--minutes", type=float, default=3.0, help="budget of each training")
    parser.add_argument("--backend", default="torch", help="backend that trains (torch)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and training")
    parser.add_argument(
        "--stain-augment", action="store_true", help="stain jitter in both trainings"
    )
    args = parser.parse_args()

    labelled = make_synthetic(args.train, size=args.size, seed=args.seed, kinds=[args.kind])
    train, val = labelled.split(0.2, seed=args.seed)
    test = make_synthetic(args.test, size=args.size, seed=args.seed + 1000, kinds=[args.kind])

    base = pretrained(args.model, backend=args.backend)
    preset = base.preset
    if args.stain_augment:
        preset = preset.replace(training=preset.training.replace(stain_augment=True))
    rows = [("pretrained, as shipped", base.evaluate(test, progress=False), "")]

    for label, seg in (
        ("fine-tuned", pretrained(args.model, backend=args.backend)),
        ("from scratch", Segmenter(args.backend, preset=preset, seed=args.seed)),
    ):
        seg.preset = seg.preset.replace(training=preset.training)
        started = time.perf_counter()
        history = seg.fit(
            train, validation=val, epochs=1000, max_minutes=args.minutes, progress=False
        )
        spent = (time.perf_counter() - started) / 60
        note = f"{len(history.epochs)} epochs, {spent:.1f} min"
        rows.append((f"{label}, {args.minutes:g} min", seg.evaluate(test, progress=False), note))

    print(cpu_summary())
    print(
        f"{args.kind}: {len(train)} training + {len(val)} validation images, "
        f"{len(test)} test images of {args.size} px; model {args.model}, {args.backend}"
    )
    print("| model | DSB score | AP@0.5 | training |\n|---|---|---|---|")
    for label, score, note in rows:
        print(f"| {label} | {score.score:.3f} | {score.ap50:.3f} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
