"""Weight averaging: one model from several trainings of the same network.

Networks fine-tuned from a common start stay close to it in weight space, and a weighted average
of their weights is often better than each of them: it keeps most of what the fine-tuning
learned and most of what the start knew (Wortsman et al., *Robust fine-tuning of zero-shot
models*, CVPR 2022, "WiSE-FT"; *Model soups*, ICML 2022). The shipped model ``nuclei`` is such an
average: 0.7 x ``dsb2018`` (the DSB 2018 model it started from) + 0.3 x ``he`` (see the models
page). After fine-tuning a shipped model on one's own images, averaging the result with the
model it started from is the cheap way to keep its skill on other images.

Averaging only makes sense for models of one network (the same :class:`~nucleuseg.config.UNetConfig`)
that share a start; two networks trained from different random initialisations do not average
into a working one, and nothing here can tell the two cases apart: score the result.

:class:`MovingAverage` averages one training over time instead: an exponential moving average of
the weights along the optimizer's path (Polyak & Juditsky, 1992), which the training loop keeps
when ``TrainingConfig.ema_decay`` is set. Late in a run the weights wander around a minimum with
the noise of their batches; their average sits nearer its middle and scores more steadily.

Examples
--------
>>> import tempfile
>>> from nucleuseg import checkpoint
>>> from nucleuseg.backends.base import init_weights
>>> from nucleuseg.config import get_preset
>>> preset = get_preset("seed").replace(network=get_preset("seed").network.replace(depth=2))
>>> folder = tempfile.mkdtemp()
>>> for seed in (0, 1):
...     checkpoint.save_model(f"{folder}/{seed}.safetensors", init_weights(preset.network, seed),
...                           preset, "torch")
>>> mean = average_models([f"{folder}/0.safetensors", f"{folder}/1.safetensors"], [0.75, 0.25])
>>> a, b = (checkpoint.load_model(f"{folder}/{s}.safetensors").weights for s in (0, 1))
>>> bool(np.allclose(mean.weights["enc1.conv1.kernel"],
...                  0.75 * a["enc1.conv1.kernel"] + 0.25 * b["enc1.conv1.kernel"]))
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from nucleuseg import checkpoint
from nucleuseg.errors import InputError


def average_models(
    models: Sequence[str | os.PathLike],
    weights: Sequence[float] | None = None,
) -> checkpoint.ModelFile:
    """The weighted average of several models' weights, as a model file's contents.

    Parameters
    ----------
    models : sequence of path or str
        Two or more model files or shipped models' names (:func:`nucleuseg.models.resolve_model`),
        all of the same network.
    weights : sequence of float, optional
        One non-negative weight per model, summing to 1 (within 1e-6); equal weights by default.

    Returns
    -------
    checkpoint.ModelFile
        The averaged weights with the first model's preset (its inference settings: thresholds,
        auto-scale, nucleus radius) and backend, and no training history. Write it with
        :func:`nucleuseg.checkpoint.save_model`.

    Raises
    ------
    InputError
        If fewer than two models are given, the weights do not fit the rule above, or the
        models' networks differ.
    CheckpointError
        If a model file is missing or invalid (a shipped model's weights failing their check
        included).

    Examples
    --------
    See the module's example; from the command line::

        nucleuseg average nuclei tuned.safetensors --weights 0.5 0.5 --out mine.safetensors
    """
    from nucleuseg.models import resolve_model

    models = list(models)
    if len(models) < 2:
        raise InputError(f"averaging needs at least two models, got {len(models)}")
    weights = [1.0 / len(models)] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise InputError(f"{len(weights)} weights for {len(models)} models: give one per model")
    if any(not math.isfinite(w) or w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise InputError(f"weights must be non-negative and sum to 1, got {weights}")
    files = [checkpoint.load_model(resolve_model(m)) for m in models]
    first = files[0]
    for name, model in zip(models[1:], files[1:], strict=True):
        if model.preset.network != first.preset.network:
            raise InputError(
                f"{name} has another network than {models[0]} "
                f"({model.preset.network} against {first.preset.network}); "
                "only models of one network average"
            )
    averaged = {
        key: np.sum(
            [w * f.weights[key] for w, f in zip(weights, files, strict=True)], axis=0
        ).astype(np.float32)
        for key in first.weights
    }
    return checkpoint.ModelFile(averaged, first.preset, first.backend, None)


class MovingAverage:
    """An exponential moving average of a network's weights, for the training loop.

    ``update(weights, step)`` folds in the weights after optimizer step ``step`` (counted from
    1). The decay used at step ``n`` is ``min(decay, (1 + n) / (10 + n))`` (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so early weights, still far from where
    the run goes, fade quickly. Updates may skip steps: ``k`` steps since the last update weigh
    the new weights as ``k`` single-step updates with the same weights at the current decay
    would. The average starts as a copy of the first weights given.

    Parameters
    ----------
    decay : float
        Decay per optimizer step, in ``(0, 1)``.
    weights : dict of str to ndarray, optional
        An average to continue (a resumed run's), with the step it was last updated at in
        ``step``.
    step : int

    Examples
    --------
    >>> average = MovingAverage(0.9)
    >>> average.update({"w": np.zeros(2, np.float32)}, step=1)
    >>> average.update({"w": np.ones(2, np.float32)}, step=2)
    >>> average.weights["w"]  # decay min(0.9, 3 / 12) = 0.25 at step 2
    array([0.75, 0.75], dtype=float32)
    """

    def __init__(
        self, decay: float, weights: dict[str, np.ndarray] | None = None, step: int = 0
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise InputError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.weights = None if weights is None else {k: v.copy() for k, v in weights.items()}
        self.step = int(step)

    def update(self, weights: dict[str, np.ndarray], step: int) -> None:
        """Fold in ``weights``, the network's weights after optimizer step ``step``."""
        if self.weights is None:
            self.weights = {k: np.array(v, np.float32) for k, v in weights.items()}
        else:
            keep = min(self.decay, (1.0 + step) / (10.0 + step)) ** max(step - self.step, 1)
            for name, average in self.weights.items():
                average *= keep
                average += (1.0 - keep) * weights[name]
        self.step = int(step)


__all__ = ["MovingAverage", "average_models"]
