"""Train the ``he`` model: a model fine-tuned on the DSB histology images and synthetic tissue.

Usage::

    python benchmarks/train_he.py --data stage1_train --init dsb2018.safetensors
        --out he.safetensors [--minutes 55]
        [--synthetic 60] [--learning-rate 2.5e-4] [--no-stain-augment] [--backend keras]
        [--seed 0] [--ema-decay 0.999]

The DSB folder is split as ``nucleuseg train`` splits it (``--val-fraction 0.15 --seed 0``), so
its validation part stays unseen. From the training part only the images of the histology kind
are kept; a fifth of them (``split(0.2, seed=1)``) with five synthetic tissue images choose the
best epoch and then the post-processing thresholds (:meth:`Segmenter.tune
<nucleuseg.segmenter.Segmenter.tune>`). The others train, together with ``--synthetic`` images of
the generator's ``tissue`` and ``histology`` kinds (two to one): dense tissue with no bright
background, which the DSB images lack. The recipe is the ``--init`` model's own (for ``he``:
``dsb2018``, the DSB 2018 model of the models page, whose crops are zoomed towards a nucleus
radius of 9 pixels) with the stain jitter on and half its learning rate. It prints the CPU's
flags, each epoch, the thresholds chosen, then the DSB score of the ``--init`` model and of the
new model on the histology images of the validation part.
"""

from __future__ import annotations

import argparse
import logging
import time

from common import cpu_summary

import nucleuseg as ns
from nucleuseg import metrics
from nucleuseg.data import Dataset, in_memory
from nucleuseg.data.synthetic import make_synthetic
from nucleuseg.models import pretrained


def histology(dataset: Dataset) -> Dataset:
    """The images of ``dataset`` of the DSB kind ``"histology"``."""
    kinds = dataset.kinds()
    return dataset.subset([i for i in dataset.ids if kinds[i] == "histology"])


def parts(data: str, synthetic: int, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """The training set, the set that chooses the epoch and thresholds, and the test set."""
    train, val = ns.data.load_dsb(data, progress=False).split(0.15, seed=0)
    fit_part, choose_part = histology(train).split(0.2, seed=1)
    kinds = ["tissue", "tissue", "histology"]
    drawn = list(make_synthetic(synthetic, size=256, seed=seed, kinds=kinds))
    choose_drawn = list(make_synthetic(5, size=256, seed=seed + 1, kinds=["tissue"]))
    print(
        f"training on {len(fit_part)} DSB histology + {len(drawn)} synthetic images; "
        f"epoch and thresholds chosen on {len(choose_part)} + {len(choose_drawn)}"
    )
    return (
        in_memory(list(fit_part) + drawn, "DSB histology + synthetic"),
        in_memory(list(choose_part) + choose_drawn, "DSB histology + synthetic tissue"),
        histology(val),
    )


def finish(
    seg: ns.Segmenter, choose: Dataset, test: Dataset, base: ns.Segmenter, base_name: str, out: str
):
    """Tune the thresholds on ``choose``, save to ``out``, score both models on ``test``."""
    tuned = seg.tune(choose, progress=False)
    inference = seg.inference
    print(
        f"thresholds {inference.threshold} / {inference.seed_threshold} / min size "
        f"{inference.min_size} (tuned score {tuned.best_score:.4f})"
    )
    seg.save(out)
    truths = {s.image_id: s.labels for s in test}
    for name, model in ((base_name, base), (out, seg)):
        result = metrics.score_dataset(truths, model.predict_many(test, progress=False))
        print(f"{name}: histology of the validation part ({len(test)} images) {result.score:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="stage1_train", help="DSB-style folder")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.add_argument(
        "--init",
        required=True,
        help="model to start from (he: dsb2018.safetensors, see the models page)",
    )
    parser.add_argument("--minutes", type=float, default=55.0, help="training budget")
    parser.add_argument("--synthetic", type=int, default=60, help="synthetic images to add")
    parser.add_argument("--learning-rate", type=float, default=2.5e-4)
    parser.add_argument("--no-stain-augment", action="store_true", help="train without jitter")
    parser.add_argument("--backend", default="keras")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="keep a moving average of the weights (TrainingConfig.ema_decay; 0: off)",
    )
    args = parser.parse_args()
    print(cpu_summary())
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one line per epoch

    train_set, choose_set, test = parts(args.data, args.synthetic, args.seed)
    base = pretrained(args.init, backend=args.backend)
    training = base.preset.training.replace(
        stain_augment=not args.no_stain_augment,
        learning_rate=args.learning_rate,
        patience=200,
        ema_decay=args.ema_decay,
    )
    preset = base.preset.replace(name="he", training=training)
    seg = ns.Segmenter(args.backend, preset=preset, seed=args.seed)
    seg.set_weights(base.get_weights())
    started = time.perf_counter()
    history = seg.fit(train_set, validation=choose_set, max_minutes=args.minutes, progress=False)
    print(history)
    print(f"trained {(time.perf_counter() - started) / 60:.1f} min, best {history.best_score:.4f}")
    finish(seg, choose_set, test, base, args.init, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
