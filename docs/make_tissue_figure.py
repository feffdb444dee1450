"""Build the figure of the "H&E tissue" page from synthetic tissue, into ``docs/images/``.

Usage::

    python docs/make_tissue_figure.py [--out docs/images]

Writes ``tissue.png``: three images of the synthetic generator's ``"tissue"`` kind (dense H&E),
in three rows: the image; its nuclei outlined; the network's input after
:func:`nucleuseg.transforms.normalize` (inverted, as :func:`~nucleuseg.transforms.image_modality`
calls every image ``"histology"``), and the same image after one draw of the stain jitter
(:func:`~nucleuseg.transforms.random_stain`) in the last row. The first image has a median gray
level below one half (no bright background): the brightness rule alone would not have inverted
it, nor the second. Saved as an 8-bit palette PNG, as ``docs/make_figures.py`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nucleuseg import viz
from nucleuseg.data import synthetic_sample
from nucleuseg.transforms import (
    as_rgb,
    image_modality,
    normalization_stats,
    normalize,
    random_stain,
)

sys.path.insert(0, str(Path(__file__).parent))
from make_figures import save_small

SEEDS = (21, 13, 1)
"""Tissue images shown: no lumen and a dark median; lumen and a dark median; much lumen."""


def median_gray(image: np.ndarray) -> float:
    stats = normalization_stats(as_rgb(image))
    return (float(np.median(image.mean(axis=2))) - stats.low) / (stats.high - stats.low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "images"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    samples = [synthetic_sample(seed, 192, "tissue") for seed in SEEDS]
    fig, axes = viz._figure(4, len(samples), 1.8)
    rng = np.random.default_rng(0)
    for col, sample in enumerate(samples):
        modality = image_modality(sample.image)
        median = median_gray(sample.image)
        rows = (
            (sample.image, f"tissue, median gray {median:.2f}"),
            (viz.draw_outlines(sample.image, sample.labels), f"{sample.labels.max()} nuclei"),
            (normalize(sample.image), f"network input ({modality})"),
            (random_stain(sample.image, rng), "stain jitter"),
        )
        for row, (image, title) in enumerate(rows):
            axes[row, col].imshow(image)
            axes[row, col].set_title(title, fontsize=8)
            axes[row, col].axis("off")
    save_small(fig, out / "tissue.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
