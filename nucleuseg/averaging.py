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


__all__ = ["average_models"]
