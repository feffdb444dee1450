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

Writes ``tissue_predictions.png`` as well: for the same three images, the true nuclei and the
predictions of each shipped model for histology (``he`` and ``nuclei``), outlined by match
status at IoU 0.5 (:func:`nucleuseg.viz.match_status`), each with its DSB score. The synthetic
images of these seeds are not among those ``he`` trained on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nucleuseg import viz
from nucleuseg.data import synthetic_sample
from nucleuseg.metrics import score_image
from nucleuseg.models import list_models, pretrained
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
    save_small(predictions_figure(samples), out / "tissue_predictions.png")
    return 0


def predictions_figure(samples):
    """Truth and each histology model's labels, one row per sample."""
    segmenters = {
        info.name: pretrained(info.name) for info in list_models() if "histology" in info.kinds
    }
    fig, axes = viz._figure(len(samples), 1 + len(segmenters), 2.2)
    for row, sample in enumerate(samples):
        axes[row, 0].imshow(viz.draw_outlines(sample.image, sample.labels))
        axes[row, 0].set_title(f"truth: {sample.labels.max()} nuclei", fontsize=8)
        for col, (name, seg) in enumerate(segmenters.items(), start=1):
            labels = seg.predict(sample.image)
            _, colors = viz.match_status(sample.labels, labels)
            score = score_image(sample.labels, labels).score
            axes[row, col].imshow(viz.draw_outlines(sample.image, labels, colors))
            axes[row, col].set_title(f"{name}: DSB score {score:.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    return fig


if __name__ == "__main__":
    sys.exit(main())
