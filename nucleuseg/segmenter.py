"""The :class:`Segmenter`: train, predict, evaluate, save and load, over any backend.

Examples
--------
>>> import nucleuseg as ns
>>> train, val = ns.data.make_synthetic(8, size=64, seed=0).split(0.25)
>>> tiny = ns.config.get_preset("default").network.replace(depth=3, base_filters=4)
>>> seg = ns.Segmenter("torch", config=tiny)  # doctest: +SKIP
>>> history = seg.fit(train, validation=val, epochs=1, progress=False)  # doctest: +SKIP
>>> seg.predict(val[0].image).dtype  # doctest: +SKIP
dtype('int32')
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from nucleuseg import checkpoint, metrics
from nucleuseg.backends import build_network
from nucleuseg.backends.base import Network
from nucleuseg.config import InferenceConfig, Preset, UNetConfig, get_preset
from nucleuseg.data.base import Dataset, Sample
from nucleuseg.errors import BackendUnavailable
from nucleuseg.postprocess import to_instances
from nucleuseg.progress import progress_bar
from nucleuseg.tiling import predict_tiled
from nucleuseg.training import History, train
from nucleuseg.transforms import as_rgb, normalize, resize
from nucleuseg.tuning import TuningResult, tune_postprocessing


class Segmenter:
    """A U-Net nucleus segmenter on a named backend.

    Parameters
    ----------
    backend : str
        ``"torch"``, ``"keras"``, ``"flax"`` or any registered backend
        (:func:`nucleuseg.available_backends`).
    preset : str or Preset
        ``"default"`` (the recommended recipe) or ``"seed"`` (the DSB 2018 starter U-Net), see
        :mod:`nucleuseg.config`.
    config : UNetConfig, optional
        Replaces the preset's network.
    inference : InferenceConfig, optional
        Replaces the preset's inference settings (tiling, TTA, thresholds, post-processing).
    seed : int
        Seeds the initial weights and the training batches.

    Raises
    ------
    BackendUnavailable
        If the backend is unknown or its framework is not installed.
    """

    def __init__(
        self,
        backend: str = "torch",
        preset: str | Preset = "default",
        config: UNetConfig | None = None,
        inference: InferenceConfig | None = None,
        seed: int = 0,
    ) -> None:
        chosen = get_preset(preset)
        if config is not None:
            chosen = chosen.replace(network=config)
        if inference is not None:
            chosen = chosen.replace(inference=inference)
        self.preset: Preset = chosen
        self.backend = backend
        self.seed = seed
        self.network: Network = build_network(
            backend, chosen.network, seed, loss=chosen.training.loss
        )
        self.history: History | None = None

    def __repr__(self) -> str:
        return f"Segmenter(backend={self.backend!r}, preset={self.preset.name!r})"

    @property
    def inference(self) -> InferenceConfig:
        """The inference settings; assign a new :class:`InferenceConfig` to change them."""
        return self.preset.inference

    @inference.setter
    def inference(self, value: InferenceConfig) -> None:
        self.preset = self.preset.replace(inference=value)

    # -- training ---------------------------------------------------------------------------

    def fit(
        self,
        train_set: Dataset,
        validation: Dataset | None = None,
        epochs: int = 40,
        max_minutes: float | None = None,
        progress: bool = True,
        resume: str | os.PathLike | None = None,
    ) -> History:
        """Train on ``train_set``, keeping the weights that score best on ``validation``.

        Parameters
        ----------
        train_set, validation : Dataset
            Labelled images; without ``validation`` the last weights are kept.
        epochs : int
            Maximum number of epochs (``steps_per_epoch`` batches each).
        max_minutes : float, optional
            Wall-clock budget; training stops at the end of the epoch that spends it.
        progress : bool
            Show progress bars (the line of each epoch goes to the ``nucleuseg.training`` logger).
        resume : path, optional
            Training-state file: written after every epoch, continued from if it exists.

        Returns
        -------
        History
            Loss and validation score per epoch (also kept as ``self.history``).
        """
        validate = None
        if validation is not None and len(validation):
            cached = [(s.image_id, s) for s in validation]

            def validate() -> float:
                truths = {i: s.labels for i, s in cached}
                preds = {i: self.predict(s.image) for i, s in cached}
                return metrics.score_dataset(truths, preds).score

        self.history = train(
            self.network,
            train_set,
            self.preset,
            validate=validate,
            epochs=epochs,
            max_minutes=max_minutes,
            seed=self.seed,
            progress=progress,
            resume_path=resume,
        )
        return self.history

    # -- inference --------------------------------------------------------------------------

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel probabilities ``(H, W, C)`` (foreground first) for an image of any size.

        ``image`` may be ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, of any integer
        or float dtype.
        """
        x = normalize(as_rgb(image))
        size = self.preset.training.resize
        if size:
            small = resize(x, (size, size), order=1)
            probs = self.network.predict(small[None])[0]
            return np.clip(resize(probs, x.shape[:2], order=1), 0.0, 1.0)
        probs = self._predict_scaled(x, 1.0)
        factor = self._rescale_factor(probs)
        if factor != 1.0:
            probs = self._predict_scaled(x, factor)
        return probs

    def _predict_scaled(self, x: np.ndarray, factor: float) -> np.ndarray:
        inference = self.preset.inference
        scaled = x
        if factor != 1.0:
            shape = (max(1, round(x.shape[0] * factor)), max(1, round(x.shape[1] * factor)))
            scaled = resize(x, shape, order=1)
        probs = predict_tiled(
            self.network.predict,
            scaled,
            self.preset.network.multiple,
            tile=inference.tile,
            overlap=inference.overlap,
            tta=inference.tta,
        )
        if factor != 1.0:
            probs = np.clip(resize(probs, x.shape[:2], order=1), 0.0, 1.0)
        return probs

    def _rescale_factor(self, probs: np.ndarray) -> float:
        """The zoom that brings the median nucleus to ``target_radius`` (1.0 when close enough)."""
        inference = self.preset.inference
        if not inference.auto_scale:
            return 1.0
        labels = to_instances(probs, inference)
        if labels.max() == 0:
            return 1.0
        areas = np.bincount(labels.ravel())[1:]
        radius = float(np.sqrt(np.median(areas[areas > 0]) / np.pi))
        target = inference.target_radius
        if target / 1.5 <= radius <= target * 1.5:
            return 1.0
        return float(np.clip(target / radius, 0.5, 2.0))

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Instance labels, ``(H, W)`` ``int32`` with 0 for background."""
        return to_instances(self.predict_proba(image), self.preset.inference)

    def predict_many(
        self, images: Dataset | Iterable[Sample], progress: bool = True
    ) -> dict[str, np.ndarray]:
        """``{image_id: labels}`` for every sample of a dataset."""
        total = len(images) if hasattr(images, "__len__") else None
        return {
            s.image_id: self.predict(s.image)
            for s in progress_bar(images, "predicting", progress, total)
        }

    def evaluate(self, dataset: Dataset, progress: bool = True) -> metrics.DatasetScore:
        """The DSB score (and every count behind it) of this model on a labelled dataset."""
        truths, preds = {}, {}
        for sample in progress_bar(dataset, "evaluating", progress, len(dataset)):
            truths[sample.image_id] = sample.labels
            preds[sample.image_id] = self.predict(sample.image)
        return metrics.score_dataset(truths, preds)

    def tune(self, validation: Dataset, progress: bool = True, **grid) -> TuningResult:
        """Choose the post-processing thresholds that score best on ``validation``, and keep them.

        Probabilities are predicted once per image; ``grid`` may override the values tried
        (``thresholds``, ``seed_thresholds``, ``min_sizes``, see
        :func:`nucleuseg.tuning.tune_postprocessing`). The chosen setting becomes
        :attr:`inference` and is saved with the model.
        """
        probs, truths = {}, {}
        for sample in progress_bar(validation, "tuning", progress, len(validation)):
            probs[sample.image_id] = self.predict_proba(sample.image)
            truths[sample.image_id] = sample.labels
        result = tune_postprocessing(probs, truths, self.preset.inference, **grid)
        self.inference = result.best
        return result

    # -- persistence ------------------------------------------------------------------------

    def get_weights(self) -> dict[str, np.ndarray]:
        """The canonical weights (see :mod:`nucleuseg.backends.base`)."""
        return self.network.get_weights()

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load canonical weights (from any backend)."""
        self.network.set_weights(weights)

    def save(self, path: str | os.PathLike) -> None:
        """Write weights, preset and history to one safetensors file (atomically)."""
        history = self.history.to_dict() if self.history is not None else None
        checkpoint.save_model(path, self.get_weights(), self.preset, self.backend, history)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None) -> Segmenter:
        """Load a model file into ``backend`` (default: the backend that saved it).

        A file written by any backend loads into any other: the weights are canonical.
        """
        model = checkpoint.load_model(path)
        try:
            segmenter = cls(backend or model.backend, preset=model.preset)
        except BackendUnavailable as err:
            if backend is not None:
                raise
            raise BackendUnavailable(
                f"{path}: saved by backend {model.backend!r}, which cannot be used here ({err}); "
                "pass backend= to load it into another"
            ) from None
        segmenter.set_weights(model.weights)
        if model.history is not None:
            segmenter.history = History.from_dict(model.history)
        return segmenter
