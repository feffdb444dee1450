"""Scores of the models for H&E against a hematoxylin-Otsu baseline, by image kind and on tissue.

Usage::

    python benchmarks/he_scores.py [--data stage1_train] [--models nuclei he] [--tissue 30]

Each model (shipped names or model files) predicts the validation part of the DSB folder (the
stratified split ``--val-fraction 0.15 --seed 0`` that ``nucleuseg train`` and the model cards
use) and ``--tissue`` synthetic dense H&E tissue images (the generator's ``"tissue"`` kind,
512 x 512, seed 1000, none of them trained on), and the script prints the DSB score of each kind
and on the tissue. The baseline row is what a user without a model would do: an Otsu threshold on
the hematoxylin channel of a colour deconvolution (``skimage.color.rgb2hed``; gray images as they
are, nuclei taken as the darker side of a brightfield image) cut into connected components.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import cpu_summary, open_dsb
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from nucleuseg import metrics
from nucleuseg.data.dsb import DSBDataset
from nucleuseg.data.synthetic import make_synthetic
from nucleuseg.models import pretrained
from nucleuseg.transforms import as_rgb, image_modality


def hematoxylin_otsu(image: np.ndarray) -> np.ndarray:
    """Connected components of an Otsu threshold of the hematoxylin density (the brighter side
    of fluorescence images, the darker side of gray brightfield ones)."""
    rgb = as_rgb(image).astype(np.float32)
    modality = image_modality(image)
    if modality == "histology":
        signal = rgb2hed(rgb / max(float(rgb.max()), 1.0))[..., 0]
    else:
        signal = rgb.mean(axis=2)
        if modality == "brightfield":
            signal = -signal
    if np.ptp(signal) == 0:
        return np.zeros(signal.shape, np.int32)
    labels, _ = ndi.label(signal > threshold_otsu(signal))
    return labels.astype(np.int32)


#: The DSB image kinds of the table's columns, in order.
KINDS = ("fluorescence", "brightfield", "histology")


class Table:
    """The validation part of a DSB folder and ``tissue`` synthetic dense H&E tissue images,
    scored per kind for one predictor after another, as Markdown rows."""

    def __init__(self, dataset: DSBDataset, tissue: int):
        _, val = dataset.split(0.15, seed=0)
        self.samples = list(val)
        self.kinds = val.kinds()
        self.tissue = list(make_synthetic(tissue, size=512, seed=1000, kinds=["tissue"]))

    def header(self, first: str = "model") -> str:
        counts = {k: sum(self.kinds[s.image_id] == k for s in self.samples) for k in KINDS}
        columns = " | ".join(f"{k} ({counts[k]})" for k in KINDS)
        return (
            f"| {first} | DSB score ({len(self.samples)}) | {columns} | "
            f"synthetic tissue ({len(self.tissue)}) |\n|---|---|---|---|---|---|"
        )

    def row(self, name: str, predict) -> str:
        """The Markdown row of ``predict`` (image -> labels)."""
        truths = {s.image_id: s.labels for s in self.samples}
        val_score = metrics.score_dataset(
            truths, {s.image_id: predict(s.image) for s in self.samples}
        )
        by_kind = val_score.by_kind(self.kinds)
        tissue_score = metrics.score_dataset(
            {s.image_id: s.labels for s in self.tissue},
            {s.image_id: predict(s.image) for s in self.tissue},
        )
        cells = " | ".join(f"{by_kind[k]:.3f}" for k in KINDS)
        return f"| {name} | {val_score.score:.3f} | {cells} | {tissue_score.score:.3f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="DSB folder (default: stage1_train under $NUCLEUSEG_DSB)")
    parser.add_argument("--models", nargs="+", default=["nuclei", "he"])
    parser.add_argument("--tissue", type=int, default=30, help="synthetic tissue images")
    args = parser.parse_args()
    print(cpu_summary())
    dataset = open_dsb(args.data, masks=True)
    if dataset is None:
        return 2
    table = Table(dataset, args.tissue)
    print(table.header())
    print(table.row("hematoxylin Otsu (baseline)", hematoxylin_otsu), flush=True)
    for name in args.models:
        print(table.row(name, pretrained(name).predict), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
