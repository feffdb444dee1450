"""``nucleuseg demo``: the whole workflow on built-in synthetic nuclei, in about two minutes.

Generates a synthetic training set (fluorescence, brightfield and H&E-like images), trains a small
U-Net of the ``default`` recipe on the given backend within a time budget, scores it with the DSB
metric on held-out synthetic images, and writes a comparison figure, the training curves, a Kaggle
submission CSV and the model file into the output folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from nucleuseg import metrics, rle, viz
from nucleuseg.config import get_preset
from nucleuseg.data.synthetic import make_synthetic
from nucleuseg.segmenter import Segmenter

logger = logging.getLogger(__name__)

DEMO_NETWORK = get_preset("default").network.replace(depth=4, base_filters=8)
DEMO_TRAINING = get_preset("default").training.replace(crop=96, batch_size=8, steps_per_epoch=40)


def run_demo(
    backend: str,
    minutes: float = 2.0,
    out: Path = Path("nucleuseg-demo"),
    seed: int = 0,
    device: str | int | None = None,
):
    """Train, score and write the demo outputs; returns the :class:`~nucleuseg.metrics.DatasetScore`.

    ``device`` is where the network runs, as for :class:`~nucleuseg.Segmenter` (``None``: a GPU
    when the framework sees one, else the CPU).

    What it does and the scores are logged at ``INFO`` level on the ``nucleuseg.demo`` logger
    (``nucleuseg demo`` shows them).
    """
    out.mkdir(parents=True, exist_ok=True)
    train_set = make_synthetic(120, size=192, seed=seed)
    val_set = make_synthetic(8, size=192, seed=seed + 1)
    test_set = make_synthetic(16, size=256, seed=seed + 2)
    preset = get_preset("default").replace(
        name="demo", network=DEMO_NETWORK, training=DEMO_TRAINING
    )
    seg = Segmenter(backend, preset=preset, seed=seed, device=device)
    logger.info(
        "nucleuseg demo: training a %s U-Net on %d synthetic images for up to %g min",
        backend,
        len(train_set),
        minutes,
    )
    started = time.perf_counter()
    history = seg.fit(train_set, validation=val_set, epochs=100, max_minutes=minutes)
    logger.info("trained %d epochs in %.0f s", len(history.epochs), time.perf_counter() - started)

    preds = seg.predict_many(test_set, progress=False)
    truths = {s.image_id: s.labels for s in test_set}
    result = metrics.score_dataset(truths, preds)
    logger.info("%s", result.table())
    logger.info("DSB score on %d held-out synthetic images: %.3f", len(test_set), result.score)
    for kind, score in sorted(result.by_kind(test_set.kinds()).items()):
        logger.info("  %-13s %.3f", kind, score)

    seg.save(out / "demo.safetensors")
    rle.write_submission(preds, out / "submission.csv")
    samples = [test_set[i] for i in range(3)]
    viz.save_figure(
        viz.plot_predictions(samples, [preds[s.image_id] for s in samples]), out / "predictions.png"
    )
    viz.save_figure(viz.plot_history(history), out / "training.png")
    logger.info("wrote %s/: demo.safetensors, submission.csv, predictions.png, training.png", out)
    return result
