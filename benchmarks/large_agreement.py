"""Block-wise prediction agrees with whole-image prediction on real DSB 2018 images.

Usage::

    python benchmarks/large_agreement.py [PATH] [--images 40] [--block 64] [--halo 48]
        [--model nuclei.safetensors]

PATH is a DSB folder in Kaggle's layout; by default ``stage1_train`` under ``$NUCLEUSEG_DSB`` when
that is set, else ``../shared/data/dsb2018/stage1_train`` (the folder beside the checkout). Each of
the first ``--images`` images (in id order) is predicted whole
(:func:`nucleuseg.inference.predict_labels`, normalised with the statistics
:func:`nucleuseg.large.image_stats` gives) and block by block
(:func:`nucleuseg.large.segment_large` with small blocks, so that many nuclei cross block
borders), and the DSB score of the block-wise labels against the whole-image labels is printed:
per image kind, the mean, the lowest, and how many images score under 0.98.

The network: the model file given by ``--model``, else a stand-in with context (a Gaussian-smoothed
foreground, connected components), which needs the halo as a network does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict

import numpy as np
import zarr
from common import open_dsb
from scipy import ndimage as ndi

from nucleuseg import metrics
from nucleuseg.config import InferenceConfig, get_preset
from nucleuseg.data import image_kind
from nucleuseg.inference import predict_labels
from nucleuseg.large import image_stats, segment_large


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="DSB folder (default: see the module docstring)")
    parser.add_argument("--images", type=int, default=40, help="images (default 40)")
    parser.add_argument("--block", type=int, default=64, help="block side (default 64)")
    parser.add_argument("--halo", type=int, default=48, help="halo (default 48)")
    parser.add_argument("--model", help="model file (default: a smoothing stand-in)")
    args = parser.parse_args(argv)
    dataset = open_dsb(args.path)
    if dataset is None:
        return 2
    if args.model:
        from nucleuseg.segmenter import Segmenter

        seg = Segmenter.load(args.model)
        predict, preset, network = seg.network.predict, seg.preset, f"model {args.model}"
    else:
        preset = get_preset("default").replace(
            inference=InferenceConfig(postprocess="components", min_size=8)
        )

        def predict(batch):
            return ndi.gaussian_filter(batch[..., :1], sigma=(0, 1.5, 1.5, 0))

        network = "stand-in (smoothed foreground, components)"
    scores: dict[str, list[float]] = defaultdict(list)
    crossing = 0
    for image_id in dataset.ids[: args.images]:
        image = dataset[image_id].image
        whole = predict_labels(predict, image, preset, stats=image_stats(image))
        with tempfile.TemporaryDirectory() as out:
            result = segment_large(
                image,
                predict,
                preset,
                out,
                block=args.block,
                halo=args.halo,
                scheduler="synchronous",
            )
            blocks = zarr.open_array(result.labels, mode="r")[:].astype(np.int32)
        borders = np.zeros(whole.shape, bool)
        borders[args.block :: args.block] = True
        borders[:, args.block :: args.block] = True
        crossing += len(np.unique(whole[borders & (whole > 0)]))
        scores[image_kind(image)].append(metrics.dsb_score(whole, blocks))
    print(f"{network}; blocks of {args.block}, halo {args.halo}; {crossing} nuclei cross borders")
    print(f"{'kind':<14} {'images':>6} {'mean':>7} {'lowest':>7} {'< 0.98':>7}")
    every = [s for values in scores.values() for s in values]
    for kind, values in [*sorted(scores.items()), ("all", every)]:
        low = sum(v < 0.98 for v in values)
        print(f"{kind:<14} {len(values):>6} {np.mean(values):>7.4f} {min(values):>7.4f} {low:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
