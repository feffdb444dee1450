"""``nucleuseg demo``: what nucleuseg does, on built-in synthetic nuclei, with no download.

Two demos:

- :func:`run_pretrained_demo` (``nucleuseg demo``): the shipped model ``nuclei`` segments a few
  built-in sample images (synthetic fluorescence, brightfield and H&E-like nuclei, written as PNG
  files), as ``nucleuseg predict`` would segment a user's: label images, overlays, a measurements
  table and a summary; the samples' true labels give each its DSB score. Seconds, no training.
- :func:`run_demo` (``nucleuseg demo --train``): generates a synthetic training set, trains a
  small U-Net of the ``default`` recipe within a time budget (two minutes by default), scores it
  with the DSB metric on held-out synthetic images, and writes a comparison figure, the training
  curves, a Kaggle submission CSV and the model file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from nucleuseg import metrics, rle, viz
from nucleuseg.config import get_preset
from nucleuseg.data.images import read_labels, write_image
from nucleuseg.data.synthetic import make_synthetic, synthetic_sample
from nucleuseg.models import DEFAULT_MODEL
from nucleuseg.segmenter import Segmenter

logger = logging.getLogger(__name__)

DEMO_NETWORK = get_preset("default").network.replace(depth=4, base_filters=8)
DEMO_TRAINING = get_preset("default").training.replace(crop=96, batch_size=8, steps_per_epoch=40)

#: The built-in sample images of the pretrained demo: (file stem, generator kind, seed).
SAMPLES = (
    ("fluorescence", "fluorescence", 2),
    ("brightfield", "brightfield", 2),
    ("histology", "histology", 5),
)


def run_pretrained_demo(
    model: str = DEFAULT_MODEL,
    backend: str | None = None,
    out: Path = Path("nucleuseg-demo"),
    device: str | int | None = None,
    progress: bool = True,
):
    """Segment the built-in samples with a shipped model; returns their
    :class:`~nucleuseg.metrics.DatasetScore`.

    Writes into ``out``: ``samples/`` (the sample images as PNG), and what
    :func:`nucleuseg.batch.segment_files` writes for them (``<name>_labels.png``,
    ``<name>_overlay.png``, ``measurements.csv``, ``summary.csv``), plus ``predictions.png``
    (each sample beside its predicted outlines). ``model`` is a shipped model's name or a model
    file; ``backend`` by default the first installed.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> score = run_pretrained_demo(out=pathlib.Path(tempfile.mkdtemp()), progress=False)
    >>> 0.0 <= score.score <= 1.0
    True
    """
    from nucleuseg.batch import segment_files
    from nucleuseg.models import pretrained

    seg = pretrained(model, backend=backend, device=device)
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    samples = [
        synthetic_sample(seed, size=256, kind=kind, image_id=name) for name, kind, seed in SAMPLES
    ]
    for sample in samples:
        write_image(folder / f"{sample.image_id}.png", sample.image)
    logger.info(
        "nucleuseg demo: the shipped model %r (%s backend) segments %d built-in sample images",
        model,
        seg.backend,
        len(samples),
    )
    report = segment_files(seg, folder, out, overlay=True, progress=progress)
    if not report.ok:
        raise RuntimeError("; ".join(f"{r.path}: {r.error}" for r in report.failures))
    results = {result.path.stem: result for result in report.images}
    predictions = {name: read_labels(result.labels) for name, result in results.items()}
    score = metrics.score_dataset({s.image_id: s.labels for s in samples}, predictions)
    for sample, image_score in zip(samples, score.per_image, strict=True):
        logger.info(
            "  %-13s %3d nuclei found (%3d true), DSB score %.3f -> %s",
            sample.image_id,
            results[sample.image_id].nuclei,
            len(np.unique(sample.labels)) - 1,
            image_score.score,
            results[sample.image_id].overlay.name,
        )
    logger.info("DSB score on the %d samples: %.3f", len(samples), score.score)
    viz.save_figure(
        viz.plot_predictions(samples, [predictions[s.image_id] for s in samples]),
        out / "predictions.png",
    )
    logger.info(
        "wrote %s/: samples/, *_labels.png, *_overlay.png, %s, %s, predictions.png",
        out,
        report.measurements.name,
        report.summary.name,
    )
    logger.info(
        "your own images: nucleuseg predict %s IMAGES_OR_FOLDER --out results --overlay", model
    )
    return score


def run_demo(
    backend: str,
    minutes: float = 2.0,
    out: Path = Path("nucleuseg-demo"),
    seed: int = 0,
    device: str | int | None = None,
):
    """Train, score and write the training demo's outputs; returns the
    :class:`~nucleuseg.metrics.DatasetScore`.

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
