"""Tune the post-processing thresholds of a trained model on a validation set.

The network's probabilities are computed once per image; every combination of foreground
threshold, marker threshold and minimum object size is then scored with the DSB metric on those
cached probabilities, so a grid of a few dozen settings costs a few post-processing passes, not
a few dozen predictions. Only the parameters the post-processing method declares when it is
registered (:func:`nucleuseg.postprocess.register_postprocess`) are varied: ``"components"``
ignores the marker threshold, so its grid keeps that one fixed.

Examples
--------
>>> import numpy as np
>>> truth = np.zeros((8, 8), np.int32); truth[2:6, 2:6] = 1
>>> probs = {"a": np.where(truth[..., None] > 0, 0.7, 0.1).astype(np.float32)}
>>> result = tune_postprocessing(probs, {"a": truth}, thresholds=(0.5, 0.8))
>>> result.best.threshold, result.best_score
(0.5, 1.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nucleuseg import metrics
from nucleuseg.config import InferenceConfig
from nucleuseg.postprocess import PARAMETERS, get_postprocess, to_instances


@dataclass(frozen=True)
class TuningResult:
    """The best setting found and the score of every setting tried."""

    best: InferenceConfig
    best_score: float
    trials: tuple[tuple[InferenceConfig, float], ...]

    def table(self) -> str:
        """One line per setting, best first."""
        lines = ["threshold  seed_threshold  min_size  DSB score"]
        for config, score in sorted(self.trials, key=lambda t: -t[1]):
            lines.append(
                f"{config.threshold:9.2f}  {config.seed_threshold:14.2f}  {config.min_size:8d}"
                f"  {score:.4f}"
            )
        return "\n".join(lines)


def tune_postprocessing(
    probabilities: Mapping[str, np.ndarray],
    truths: Mapping[str, np.ndarray],
    base: InferenceConfig | None = None,
    thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    seed_thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    min_sizes: Sequence[int] = (4, 8, 16),
) -> TuningResult:
    """Grid-search the post-processing settings that maximise the mean DSB score.

    Parameters
    ----------
    probabilities : mapping of str to array
        ``{image_id: (H, W, C) probabilities}`` from :meth:`Segmenter.predict_proba`.
    truths : mapping of str to array
        ``{image_id: labels}`` with the same ids.
    base : InferenceConfig, optional
        The setting whose other fields (post-processing kind, tiling, TTA) are kept.
    thresholds, seed_thresholds, min_sizes : sequences
        The values tried for ``threshold``, ``seed_threshold`` and ``min_size``. A parameter
        that the method of ``base.postprocess`` does not read (see
        :attr:`~nucleuseg.postprocess.PostprocessMethod.parameters`) keeps its value in
        ``base``: ``seed_thresholds`` only matter for ``"watershed"``.

    Returns
    -------
    TuningResult
        Ties keep the earliest setting in grid order, so list the defaults first.
    """
    base = base or InferenceConfig()
    method = get_postprocess(base.postprocess)
    grid = {"threshold": thresholds, "seed_threshold": seed_thresholds, "min_size": min_sizes}
    values = [grid[p] if p in method.parameters else (getattr(base, p),) for p in PARAMETERS]
    trials = []
    for threshold, seed_threshold, min_size in itertools.product(*values):
        config = base.replace(
            threshold=float(threshold), seed_threshold=float(seed_threshold), min_size=int(min_size)
        )
        preds = {i: to_instances(p, config) for i, p in probabilities.items()}
        trials.append((config, metrics.score_dataset(truths, preds).score))
    best, best_score = max(trials, key=lambda t: t[1])
    return TuningResult(best, best_score, tuple(trials))
