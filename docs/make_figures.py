"""Build the figures of the documentation from synthetic nuclei, into ``docs/images/``.

Usage::

    python docs/make_figures.py [--out docs/images] [--backend torch] [--minutes 1]
        [--epochs 100] [--model FILE] [--save-model FILE]

Writes three PNG files:

``samples.png``
    :func:`nucleuseg.viz.plot_samples`: six random images of the synthetic generator with their
    nuclei outlined.
``predictions.png``
    :func:`nucleuseg.viz.plot_predictions`: held-out synthetic images, their truth and the
    prediction of a small U-Net (the ``default`` recipe on a depth-4, 8-filter network) trained for
    ``--minutes`` (epochs of 25 batches of 8 crops from 96 synthetic images); outlines coloured by
    match status. The three images are picked to show all three match statuses.
``training.png``
    :func:`nucleuseg.viz.plot_history`: that model's loss and validation score per epoch.

The figures are saved as 8-bit palette PNGs to keep the documentation small. Without the
requested backend installed only ``samples.png`` is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

import nucleuseg as ns
from nucleuseg import viz
from nucleuseg.errors import BackendUnavailable

FIXED_COLORS = (viz.MATCHED, viz.MISSED, viz.FALSE_POSITIVE, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def save_small(fig, path: Path) -> None:
    """Save a figure, then requantise it to a 256-colour palette PNG.

    The palette is a median cut of the figure's colours plus the exact match-status colours, so
    small outlines and legend patches keep their colour.
    """
    viz.save_figure(fig, path)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    fixed = [round(255 * c) for color in FIXED_COLORS for c in color]
    adaptive = rgb.quantize(256 - len(FIXED_COLORS), method=Image.Quantize.MEDIANCUT)
    palette = Image.new("P", (1, 1))
    palette.putpalette(adaptive.getpalette()[: 3 * (256 - len(FIXED_COLORS))] + fixed)
    small = rgb.quantize(palette=palette, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "images"))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--minutes", type=float, default=1.0, help="training budget (default 1)")
    parser.add_argument("--epochs", type=int, default=100, help="maximum epochs (default 100)")
    parser.add_argument(
        "--model", help="use this model file (with its history) instead of training"
    )
    parser.add_argument("--save-model", help="also write the trained model here")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pool = ns.data.make_synthetic(40, size=192, seed=11)
    save_small(viz.plot_samples(pool, n=6, seed=1, columns=3, size=2.1), out / "samples.png")

    preset = ns.config.get_preset("default")
    preset = preset.replace(
        name="docs",
        network=preset.network.replace(depth=4, base_filters=8),
        training=preset.training.replace(crop=96, batch_size=8, steps_per_epoch=25),
    )
    try:
        if args.model:
            seg = ns.Segmenter.load(args.model, backend=args.backend)
        else:
            seg = ns.Segmenter(args.backend, preset=preset, seed=0)
    except BackendUnavailable as exc:
        print(f"skipping the model figures: {exc}", file=sys.stderr)
        return 0
    if not args.model:
        train = ns.data.make_synthetic(96, size=160, seed=0)
        val = ns.data.make_synthetic(6, size=160, seed=1)
        seg.fit(train, validation=val, epochs=args.epochs, max_minutes=args.minutes, progress=False)
        if args.save_model:
            seg.save(args.save_model)
    history = seg.history
    print(history)
    save_small(viz.plot_history(history), out / "training.png")

    samples = [
        ns.data.synthetic_sample(seed, size=(200, 256), kind=kind, image_id=f"{kind}-{seed}")
        for seed, kind in TEST_IMAGES
    ]
    preds = [seg.predict(s.image) for s in samples]
    save_small(viz.plot_predictions(samples, preds, size=2.6), out / "predictions.png")
    return 0


TEST_IMAGES = ((102, "fluorescence"), (106, "brightfield"), (102, "histology"))

if __name__ == "__main__":
    sys.exit(main())
