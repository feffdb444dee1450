"""The three figures of ``nucleuseg.viz``: a sample grid, predictions against the truth, training curves.

::

    python examples/plotting.py [--model nuclei.safetensors] [--data /path/to/stage1_train] [--out DIR]

Without ``--data`` the images are synthetic; without ``--model`` a small model is trained for a
minute first. Writes ``samples.png``, ``predictions.png`` and ``training.png`` to ``--out`` (a
temporary folder by default). Every function returns a matplotlib ``Figure``, so you can also
show it in a notebook or change it before saving.
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
    parser.add_argument("--model", help="model file (default: train a small one)")
    parser.add_argument("--data", help="DSB folder with masks (default: synthetic images)")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nucleuseg-plots-"))
    out.mkdir(parents=True, exist_ok=True)

    if args.data:
        dataset = ns.data.load_dsb(args.data, masks=True)
    else:
        dataset = ns.data.make_synthetic(12 if QUICK else 60, size=96 if QUICK else 256, seed=0)
    train, val = dataset.split(0.25, seed=0)

    # 1. Eight random images with their nuclei outlined, each nucleus in its own colour.
    fig = viz.plot_samples(dataset, n=8, seed=0)
    print(f"wrote {viz.save_figure(fig, out / 'samples.png')}")

    # 2. Image | truth | prediction: matched nuclei green, missed yellow, false vermillion.
    seg = ns.Segmenter.load(args.model) if args.model else train_small(train, val)
    samples = [val[i] for i in range(min(3, len(val)))]
    fig = viz.plot_predictions(samples, [seg.predict(s.image) for s in samples])
    print(f"wrote {viz.save_figure(fig, out / 'predictions.png')}")

    # 3. Loss and validation score per epoch (a model file keeps the history it was trained with).
    if seg.history is not None:
        fig = viz.plot_history(seg.history)
        print(f"wrote {viz.save_figure(fig, out / 'training.png')}")


def train_small(train: ns.data.Dataset, val: ns.data.Dataset) -> ns.Segmenter:
    """A small model of the default recipe, trained for a minute."""
    preset = ns.config.get_preset("default")
    preset = preset.replace(
        network=preset.network.replace(depth=3 if QUICK else 4, base_filters=4 if QUICK else 8),
        training=preset.training.replace(
            crop=32 if QUICK else 96,
            batch_size=2 if QUICK else 8,
            steps_per_epoch=2 if QUICK else 25,
        ),
    )
    seg = ns.Segmenter("torch", preset=preset)
    seg.fit(train, validation=val, epochs=1 if QUICK else 100, max_minutes=1, progress=False)
    return seg


if __name__ == "__main__":
    main()
