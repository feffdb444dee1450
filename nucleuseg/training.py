"""The one training loop, shared by every backend.

Each epoch draws ``steps_per_epoch`` batches of augmented crops (prepared in a background thread
from an epoch-specific random stream, so a resumed run sees the same batches), takes one optimizer
step per batch, then scores the validation set with the DSB metric. The best-scoring weights are
kept, training stops early after ``patience`` epochs without improvement or when the time budget
is spent, and a :class:`History` records every epoch.

With ``resume_path`` the full training state (weights, optimizer, best weights, history, epoch) is
written atomically after every epoch, and a later call with the same path continues from there.

An ``on_epoch`` callback sees the :class:`EpochRecord` of every epoch once its validation is done
(a hyperparameter search reports the score from there and prunes). Raising :class:`StopTraining`
in it ends training after that epoch as early stopping does (the best weights are kept); any other
exception propagates out of :func:`train`.

With ``TrainingConfig.ema_decay`` set, a moving average of the weights
(:class:`~nucleuseg.averaging.MovingAverage`, updated every :data:`AVERAGE_EVERY` steps and at the
end of each epoch) is what each epoch validates and what the best weights are taken from; the
optimizer goes on from the last step's weights.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleuseg import checkpoint
from nucleuseg.averaging import MovingAverage
from nucleuseg.backends.base import Network
from nucleuseg.config import Preset
from nucleuseg.data.base import Dataset, Sample
from nucleuseg.errors import CheckpointError, DatasetError

# History and EpochRecord live in nucleuseg.history; importing them here keeps
# ``from nucleuseg.training import History`` working.
from nucleuseg.history import EpochRecord, History
from nucleuseg.masks import make_targets
from nucleuseg.progress import progress_bar
from nucleuseg.transforms import (
    NormalizationStats,
    as_rgb,
    median_radius,
    normalization_stats,
    normalize,
    random_crop,
    random_dihedral,
    random_intensity,
    random_stain,
    resize,
    zoom_to_radius,
)

logger = logging.getLogger(__name__)

AVERAGE_EVERY = 4
"""Optimizer steps between two updates of the moving average of the weights (each update costs
a copy of the weights out of the framework, 2-3 ms for the ``default`` network)."""


class StopTraining(Exception):
    """Raised by an ``on_epoch`` callback of :func:`train` to end training after this epoch.

    Not an error: training ends as early stopping ends it, with the best weights kept and the
    message (``"stopped by callback"`` when empty) as :attr:`History.stopped`.
    """


@dataclass(frozen=True)
class TrainItem:
    """One training image held in memory: raw pixels, its normalisation, labels and the zoom
    its crops are read at before the random one (1.0 unless ``TrainingConfig.target_radius``)."""

    image: np.ndarray
    stats: NormalizationStats
    labels: np.ndarray
    zoom: float = 1.0


def prepare(
    dataset: Dataset, progress: bool = True, target_radius: float | None = None
) -> list[TrainItem]:
    """Load every labelled sample of ``dataset`` for training.

    With ``target_radius``, each item's zoom brings its median nucleus towards that radius
    (:func:`~nucleuseg.transforms.zoom_to_radius`).
    """
    items = []
    for sample in progress_bar(dataset, "loading", enable=progress, total=len(dataset)):
        items.append(_item(sample, target_radius))
    if not items:
        raise DatasetError(f"{dataset.name}: no labelled images to train on")
    return items


def _item(sample: Sample, target_radius: float | None) -> TrainItem:
    if sample.labels is None:
        raise DatasetError(f"{sample.image_id}: has no labels, cannot train on it")
    image = as_rgb(sample.image)
    zoom = 1.0
    if target_radius is not None:
        zoom = zoom_to_radius(median_radius(sample.labels), target_radius)
    return TrainItem(image, normalization_stats(image), sample.labels, zoom)


def make_example(
    item: TrainItem, preset: Preset, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented ``(input, target)`` pair from a training image, as the preset prescribes."""
    training, channels = preset.training, preset.network.out_channels
    if training.resize:
        size = (training.resize, training.resize)
        image = random_stain(item.image, rng) if training.stain_augment else item.image
        x = resize(normalize(image, item.stats), size, order=1)
        labels = resize(item.labels, size, order=0)
        return x.astype(np.float32), make_targets(labels, channels)
    low, high = np.log(training.scale_range)
    scale = item.zoom * float(np.exp(rng.uniform(low, high)))
    image, labels = random_crop(item.image, item.labels, training.crop, scale, rng)
    if training.stain_augment:
        image = random_stain(image, rng)
    x = normalize(image, item.stats)
    if training.augment:
        x, labels = random_dihedral([x, labels], rng)
        x = random_intensity(x, rng)
    return x, make_targets(labels, channels)


def batches(
    items: list[TrainItem], preset: Preset, rng: np.random.Generator, steps: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches, produced in a background thread one batch ahead of the consumer."""
    size = preset.training.batch_size
    out: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()

    def produce() -> None:
        try:
            for _ in range(steps):
                picks = rng.integers(0, len(items), size=size)
                pairs = [make_example(items[i], preset, rng) for i in picks]
                batch = (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
                while not stop.is_set():
                    try:
                        out.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # surfaced in the consumer
            out.put(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        for _ in range(steps):
            batch = out.get()
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stop.set()
        worker.join(timeout=5)


def learning_rate(preset: Preset, fraction: float) -> float:
    """The scheduled learning rate at ``fraction`` (0..1) of the run."""
    peak = preset.training.learning_rate
    if preset.training.schedule == "constant":
        return peak
    fraction = min(max(fraction, 0.0), 1.0)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * fraction)))


def train(
    network: Network,
    train_set: Dataset,
    preset: Preset,
    validate: Callable[[], float] | None = None,
    epochs: int = 40,
    max_minutes: float | None = None,
    seed: int = 0,
    progress: bool = True,
    resume_path: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> History:
    """Train ``network`` in place and return its :class:`History`.

    Parameters
    ----------
    network : Network
        A backend network; it ends up holding the best weights seen (by validation score, or the
        last ones without validation).
    train_set : Dataset
        Labelled training images.
    preset : Preset
        The recipe (crop, batch size, learning rate, ...).
    validate : callable, optional
        Returns the validation DSB score of the network's current weights.
    epochs : int
        Maximum number of epochs.
    max_minutes : float, optional
        Time budget for the whole run (a resumed run counts the time already spent). The cosine
        schedule then follows the budget rather than the epoch count.
    seed : int
        Seeds the batches of every epoch (a resumed run reproduces them).
    progress : bool
        Show progress bars (loading, and the steps of each epoch).
    resume_path : path, optional
        Training-state file written after every epoch and read at the start if it exists. A
        file written with another ``seed`` or ``preset`` is refused.
    log : callable, optional
        Receives the line of each epoch (and the "resuming" line) instead of the
        ``nucleuseg.training`` logger, which logs them at ``INFO`` level.
    on_epoch : callable, optional
        Called with the :class:`EpochRecord` of each epoch, after its validation (and after the
        training state is written). It may raise :class:`StopTraining` to end training there,
        as early stopping would; any other exception it raises propagates out of ``train``
        (the network then holds the weights of that epoch's last step, not the moving average
        that ``ema_decay`` validates).

    Raises
    ------
    CheckpointError
        If ``resume_path`` exists but is not a training state of this network, or was written
        with another seed or preset.
    """
    say = log or logger.info
    radius, inference = preset.training.target_radius, preset.inference
    if radius is not None and not (inference.auto_scale and inference.target_radius == radius):
        logger.warning(
            "training.target_radius is %s but the inference does not auto-scale to it "
            "(auto_scale=%s, target_radius=%s): validation and prediction see other scales "
            "than training",
            radius,
            inference.auto_scale,
            inference.target_radius,
        )
    history = History()
    best_weights: dict[str, np.ndarray] | None = None
    decay = preset.training.ema_decay
    average = MovingAverage(decay) if decay else None
    steps_done = 0
    start_epoch = 1
    if resume_path is not None and Path(resume_path).exists():
        state = checkpoint.read_training_state(resume_path, network.config)
        _check_resume(resume_path, state, preset, seed)
        network.set_weights(state.weights)
        network.set_optimizer_state(state.optimizer)
        history, best_weights = state.history, state.best_weights
        if average is not None and state.averaged_weights is not None:
            average = MovingAverage(decay, state.averaged_weights, state.averaged_step)
            steps_done = state.averaged_step
        history.stopped = ""
        start_epoch = len(history.epochs) + 1
        say(f"resuming {resume_path} at epoch {start_epoch}")
    items = prepare(train_set, progress, preset.training.target_radius)
    steps = preset.training.steps_per_epoch
    budget = None if max_minutes is None else 60.0 * max_minutes
    stale = 0
    if history.best_epoch is not None:
        stale = len(history.epochs) - history.best_epoch

    for epoch in range(start_epoch, epochs + 1):
        if budget is not None and history.train_seconds >= budget:
            history.stopped = f"time budget of {max_minutes} min spent"
            break
        began = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        network.reseed(seed * 100_003 + epoch)
        losses = []
        lr = preset.training.learning_rate
        bar = progress_bar(batches(items, preset, rng, steps), f"epoch {epoch}", progress, steps)
        for step, (x, y) in enumerate(bar):
            fraction = ((epoch - 1) * steps + step) / (epochs * steps)
            if budget is not None:
                spent = history.train_seconds + time.perf_counter() - began
                if spent >= budget and losses:
                    break
                fraction = max(fraction, spent / budget)
            lr = learning_rate(preset, fraction)
            losses.append(network.train_step(x, y, lr))
            steps_done += 1
            if average is not None and steps_done % AVERAGE_EVERY == 0:
                average.update(network.get_weights(), steps_done)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        last_weights = None
        if average is not None:
            last_weights = network.get_weights()
            if average.step < steps_done:
                average.update(last_weights, steps_done)
            network.set_weights(average.weights)
        score = float(validate()) if validate is not None else None
        seconds = time.perf_counter() - began
        history.train_seconds += seconds
        history.epochs.append(EpochRecord(epoch, float(np.mean(losses)), score, lr, seconds))
        improved = score is not None and (history.best_score is None or score > history.best_score)
        if improved or validate is None:
            history.best_epoch, history.best_score = epoch, score
            best_weights = network.get_weights()
            stale = 0
        else:
            stale += 1
        if last_weights is not None:
            network.set_weights(last_weights)
        score_text = "-" if score is None else f"{score:.4f}"
        say(f"epoch {epoch}: loss {np.mean(losses):.4f}  val score {score_text}  ({seconds:.0f} s)")
        if stale >= preset.training.patience:
            history.stopped = f"no improvement for {stale} epochs"
        elif epoch == epochs:
            history.stopped = f"{epochs} epochs done"
        if resume_path is not None:
            checkpoint.write_training_state(
                resume_path,
                network,
                preset,
                history,
                best_weights or network.get_weights(),
                seed,
                None if average is None else average.weights,
                steps_done,
            )
        if on_epoch is not None:
            try:
                on_epoch(history.epochs[-1])
            except StopTraining as stop:
                history.stopped = str(stop) or "stopped by callback"
        if history.stopped:
            break
    else:
        if not history.stopped:
            history.stopped = f"{epochs} epochs done"
    if best_weights is not None:
        network.set_weights(best_weights)
    return history


def _check_resume(
    path: str | Path, state: checkpoint.TrainingState, preset: Preset, seed: int
) -> None:
    """Raise CheckpointError unless the training state at ``path`` was written by a run with
    this ``seed`` and this ``preset`` (a resumed run must continue the same run)."""
    restart = "or give another resume file (--resume) to start a new run"
    if state.seed != seed:
        raise CheckpointError(
            f"{path}: this training state was written with seed {state.seed}, not {seed}; "
            f"resume with the same seed (--seed {state.seed}), {restart}"
        )
    if state.preset != preset:
        changes = "; ".join(_differences(state.preset.to_dict(), preset.to_dict()))
        raise CheckpointError(
            f"{path}: this training state was written with another preset ({changes}); resume "
            f"with the preset it was written with ({state.preset.name!r}), {restart}"
        )


def _differences(written: dict, given: dict, where: str = "") -> list[str]:
    """``"key: A in the file, B now"`` for each leaf where two nested dicts differ."""
    out = []
    for key in sorted(set(written) | set(given)):
        a, b = written.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{where}{key}.")
        elif a != b:
            out.append(f"{where}{key}: {a!r} in the file, {b!r} now")
    return out
