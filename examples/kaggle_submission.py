"""Write a Kaggle submission CSV for a folder of test images, then score it.

With a trained model and Kaggle's ``stage1_test`` folder::

    python examples/kaggle_submission.py --model nuclei.safetensors --data /path/to/stage1_test

``--solution stage1_solution.csv`` (Kaggle's ``ImageId,EncodedPixels,Height,Width,Usage``) also
scores the submission. With no arguments the script trains a small model on synthetic nuclei,
writes a synthetic ``stage1_test``-style folder and its solution CSV, and runs the same steps on
them. Files go to ``--out`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nucleuseg as ns

QUICK = os.environ.get("NUCLEUSEG_EXAMPLES_QUICK") == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: train a small one on synthetic data)")
    parser.add_argument("--data", help="folder of <id>/images/<id>.png (default: synthetic)")
    parser.add_argument("--solution", help="solution CSV to score the submission against")
    parser.add_argument("--backend", help="backend to run the model on (default: its own)")
    parser.add_argument("--out", help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nucleuseg-submission-"))
    out.mkdir(parents=True, exist_ok=True)

    if args.model:
        seg = ns.Segmenter.load(args.model, backend=args.backend)
    else:
        seg = train_small(args.backend or "torch")
    data, solution = args.data, args.solution
    if data is None:
        data, solution = write_synthetic_test(out / "stage1_test", n=4 if QUICK else 20)

    # Predict every image of the folder (masks, if any, are ignored) and write the CSV.
    test = ns.data.load_dsb(data, masks=False, cache=False)
    predictions = seg.predict_many(test)  # {image_id: int32 label image}
    submission = out / "submission.csv"
    ns.rle.write_submission(predictions, submission)
    nuclei = sum(int(p.max()) for p in predictions.values())
    print(f"wrote {submission}: {len(predictions)} images, {nuclei} nuclei")
    print("".join(submission.read_text().splitlines(keepends=True)[:4]), end="")

    if solution is not None:  # score it as Kaggle did (what `nucleuseg score` does)
        truth_rows = ns.rle.read_rle_csv(solution)
        guess_rows = ns.rle.read_rle_csv(submission)
        truths = {i: ns.rle.labels_from_csv(entry) for i, entry in truth_rows.items()}
        preds = {
            # An image missing from the submission counts as "no nuclei found".
            i: ns.rle.labels_from_csv(
                guess_rows.get(i, ns.rle.RLEImage(())), truths[i].shape, overlap="first"
            )
            for i in truths
        }
        result = ns.metrics.score_dataset(truths, preds)
        print(f"DSB score of the submission: {result.score:.4f} on {len(truths)} images")


def train_small(backend: str) -> ns.Segmenter:
    """A small model of the default recipe, trained briefly on synthetic nuclei."""
    preset = ns.config.get_preset("default")
    preset = preset.replace(
        network=preset.network.replace(depth=3 if QUICK else 4, base_filters=4 if QUICK else 8),
        training=preset.training.replace(
            crop=32 if QUICK else 96, steps_per_epoch=2 if QUICK else 40
        ),
    )
    n, size = (8, 64) if QUICK else (100, 192)
    train, val = ns.data.make_synthetic(n, size=size, seed=0).split(0.2)
    seg = ns.Segmenter(backend, preset=preset)
    seg.fit(train, validation=val, epochs=1 if QUICK else 100, max_minutes=2, progress=False)
    return seg


def write_synthetic_test(root: Path, n: int) -> tuple[Path, Path]:
    """A ``stage1_test``-style folder of synthetic images, and the solution CSV of their nuclei."""
    truths = {}
    for sample in ns.data.make_synthetic(n, size=(96, 128) if QUICK else (256, 320), seed=3):
        folder = root / sample.image_id / "images"
        folder.mkdir(parents=True, exist_ok=True)
        ns.data.write_image(folder / f"{sample.image_id}.png", sample.image)
        truths[sample.image_id] = sample.labels
    solution = root.parent / "solution.csv"
    ns.rle.write_solution(truths, solution)  # ImageId,EncodedPixels,Height,Width
    return root, solution


if __name__ == "__main__":
    main()
