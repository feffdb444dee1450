"""Prediction throughput on DSB 2018 images: one image per network call against a variant.

Usage::

    python benchmarks/batch_inference.py [PATH] [--images 60] [--batch-size 8] [--backend torch]
        [--model nuclei] [--repeats 2] [--shape 520x696] [--scout-zoom 0.5]

PATH is a DSB folder in Kaggle's layout; by default ``stage1_train`` under ``$NUCLEUSEG_DSB`` when
that is set, else ``../shared/data/dsb2018/stage1_train`` (the folder beside the checkout). The
first ``--images`` images (in id order, a mix of DSB's sizes and kinds; with ``--shape``, only
images of that height and width) are decoded once, then
predicted by ``Segmenter.predict_many`` in the same process: with ``batch_size=1`` (one image per
network call, as ``Segmenter.predict`` does) and with ``--batch-size`` (same-shape images stacked
into one call, see :func:`nucleuseg.inference.predict_batch`), or, with ``--scout-zoom``, one
image per call with auto-scale measuring nuclei on a prediction at that zoom instead of at full
size (``InferenceConfig.scout_zoom``; the model must auto-scale). Each mode runs once untimed (the
first call on a new input shape allocates and picks kernels, and a jit backend compiles), then
``--repeats`` timed passes, alternating, of which the fastest counts. Each row reports megapixels of
input per second counting only the time inside the network's ``predict`` calls (*network*) and the
whole of ``predict_many`` (*end to end*: normalisation, padding, network and post-processing), and
the last row the ratio of the two. Without ``--model`` the network is the ``default`` preset's, freshly
initialised: the network's cost is that of a trained one, but post-processing untrained
probabilities costs more than post-processing a trained model's, so the end-to-end ratio is then a
lower bound.

Numbers depend on what else runs on the machine; run it on an otherwise idle one. The script
prints the processor's AVX2 / AVX-512 flags and the core count beside the table.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import cpu_summary, open_dsb

from nucleuseg.data.base import in_memory
from nucleuseg.errors import NucleusegError
from nucleuseg.models import resolve_model
from nucleuseg.segmenter import Segmenter
from nucleuseg.tiling import padded_shape, tile_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="DSB folder (default: see the module docstring)")
    parser.add_argument("--images", type=int, default=60, help="images to predict (default 60)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per call (default 8)")
    parser.add_argument("--backend", default="torch", help="backend to run on (default torch)")
    parser.add_argument(
        "--model", help="a model file or a shipped model's name (default: a fresh network)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per mode (best kept)")
    parser.add_argument("--shape", help="only images of this shape, as HxW (e.g. 520x696)")
    parser.add_argument(
        "--scout-zoom", type=float, help="compare auto-scale's scout at this zoom with full size"
    )
    args = parser.parse_args(argv)
    if min(args.images, args.batch_size, args.repeats) < 1:
        parser.error("--images, --batch-size and --repeats must be positive")

    dataset = open_dsb(args.path)
    if dataset is None:
        return 2
    ids = dataset.ids
    if args.shape:
        try:
            shape = tuple(int(n) for n in args.shape.lower().split("x"))
        except ValueError:
            parser.error(f"--shape must be HxW, got {args.shape!r}")
        ids = [i for i in ids if tuple(dataset.info(i)["shape"]) == shape]
        if not ids:
            parser.error(f"no image of {dataset.root} has the shape {args.shape}")
    samples = [dataset[i] for i in ids[: args.images]]
    images = in_memory(samples, dataset.name)

    try:
        if args.model:
            seg = Segmenter.load(resolve_model(args.model), backend=args.backend)
            origin = f"model {args.model}"
        else:
            seg = Segmenter(args.backend, preset="default")
            origin = "the default preset's freshly initialised network (no --model given)"
    except NucleusegError as err:
        print(f"cannot build the network: {err}", file=sys.stderr)
        return 2

    network_seconds = 0.0
    calls: list[int] = []
    predict = seg.network.predict

    def timed(batch):
        nonlocal network_seconds
        started = time.perf_counter()
        out = predict(batch)
        network_seconds += time.perf_counter() - started
        calls.append(len(batch))
        return out

    seg.network.predict = timed
    preset = seg.preset
    whole = tile_size(preset.inference.tile, preset.network.multiple)
    shapes = {padded_shape(*s.shape, preset.network.multiple) for s in samples}
    tiled = sum(max(padded_shape(*s.shape, preset.network.multiple)) > whole for s in samples)
    megapixels = sum(s.shape[0] * s.shape[1] for s in samples) / 1e6
    print(f"data: {len(samples)} images of {dataset.root}, {megapixels:.1f} megapixels, "
          f"{len(shapes)} padded shapes, {tiled} larger than the {whole}-pixel tile")  # fmt: skip
    print(
        f"network: {origin}; backend {seg.backend}, preset {preset.name}, tta {preset.inference.tta}"
    )
    print(f"cpu: {cpu_summary()}")

    base = seg.inference
    if args.scout_zoom is not None:
        if not base.auto_scale:
            parser.error("--scout-zoom needs a model that auto-scales")
        variant = (f"scout at {args.scout_zoom:g}", 1, base.replace(scout_zoom=args.scout_zoom))
    else:
        variant = (f"batch_size {args.batch_size}", args.batch_size, base)
    modes = (("one at a time", 1, base), variant)
    for _, batch_size, inference in modes:  # warm-up: first calls on a shape pick kernels
        seg.inference = inference
        seg.predict_many(images, progress=False, batch_size=batch_size)
    best: dict[str, tuple[int, float, float]] = {}
    for _ in range(args.repeats):
        for name, batch_size, inference in modes:
            seg.inference = inference
            network_seconds, calls[:] = 0.0, []
            started = time.perf_counter()
            seg.predict_many(images, progress=False, batch_size=batch_size)
            total = time.perf_counter() - started
            if name not in best or total < best[name][2]:
                best[name] = (len(calls), network_seconds, total)
    rows = [
        (name, n, megapixels / net, megapixels / total) for name, (n, net, total) in best.items()
    ]

    print("| prediction | network calls | network MP/s | end-to-end MP/s |")
    print("|---|---|---|---|")
    for name, n_calls, network, end_to_end in rows:
        print(f"| {name} | {n_calls} | {network:.2f} | {end_to_end:.2f} |")
    (_, _, net1, e2e1), (_, _, net2, e2e2) = rows
    print(f"| ratio | | {net2 / net1:.2f}x | {e2e2 / e2e1:.2f}x |")
    print(f"network share of the end-to-end time, one at a time: {e2e1 / net1:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
