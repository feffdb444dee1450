"""Inference-time ablations of a trained model on the validation split: TTA, auto-scale, thresholds.

    python benchmarks/inference_options.py nuclei.safetensors --data stage1_train

Each row re-predicts the validation split (the same stratified split ``nucleuseg train`` uses)
with one inference setting changed, and reports the DSB score per kind and the end-to-end
prediction throughput (network + post-processing) in megapixels per second.
"""

from __future__ import annotations

import argparse
import sys
import time

import nucleuseg as ns
from nucleuseg import metrics, models


def settings(base: ns.InferenceConfig) -> dict[str, ns.InferenceConfig]:
    """The inference variants compared, each one change from the model's own setting."""
    return {
        "as saved": base,
        "flip TTA": base.replace(tta=True),
        "auto-scale (radius 10)": base.replace(auto_scale=True, target_radius=10.0),
        "auto-scale (radius 14)": base.replace(auto_scale=True, target_radius=14.0),
        "auto-scale + TTA": base.replace(auto_scale=True, tta=True),
        "auto-scale, full-size scout": base.replace(auto_scale=True, scout_zoom=1.0),
        "components only": base.replace(postprocess="components"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file (.safetensors) or a shipped model's name")
    parser.add_argument("--data", default="stage1_train", help="DSB-style folder")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", help="backend to run on (default: the one that trained it)")
    parser.add_argument("--only", nargs="*", help="names of the settings to run")
    args = parser.parse_args(argv)

    _, val = ns.data.load_dsb(args.data, progress=False).split(args.val_fraction, seed=args.seed)
    samples = list(val)
    truths = {s.image_id: s.labels for s in samples}
    megapixels = sum(t.size for t in truths.values()) / 1e6
    seg = ns.Segmenter.load(models.resolve_model(args.model), backend=args.backend)
    base = seg.inference
    print(f"{len(samples)} validation images, {megapixels:.1f} megapixels, {seg.backend}")
    print("| setting | DSB | fluorescence | brightfield | histology | megapixels/s |")
    print("|---|---|---|---|---|---|")
    for name, config in settings(base).items():
        if args.only and name not in args.only:
            continue
        seg.inference = config
        started = time.perf_counter()
        preds = {s.image_id: seg.predict(s.image) for s in samples}
        speed = megapixels / (time.perf_counter() - started)
        result = metrics.score_dataset(truths, preds)
        kinds = result.by_kind(val.kinds())
        print(
            f"| {name} | {result.score:.4f} | {kinds.get('fluorescence', float('nan')):.4f} | "
            f"{kinds.get('brightfield', float('nan')):.4f} | "
            f"{kinds.get('histology', float('nan')):.4f} | {speed:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
