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
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from nucleuseg import checkpoint, metrics
from nucleuseg.backends import build_network
from nucleuseg.backends.base import Network
from nucleuseg.config import InferenceConfig, Preset, UNetConfig, get_preset
from nucleuseg.data.base import Dataset, Sample, in_memory
from nucleuseg.errors import BackendUnavailable
from nucleuseg.inference import (
    check_batch_size,
    predict_batch,
    predict_labels,
    predict_labels_batch,
    predict_probabilities,
)
from nucleuseg.large import LargeResult, segment_large
from nucleuseg.progress import progress_bar
from nucleuseg.training import EpochRecord, History, train
from nucleuseg.tuning import TuningResult, tune_postprocessing

# Images read ahead by predict_many, evaluate and tune so that same-shape ones can share network
# calls: this many batches' worth, or fewer once they hold this many pixels.
_READ_AHEAD_BATCHES = 4
_READ_AHEAD_PIXELS = 2**24

#: Epochs :meth:`Segmenter.fit` trains when given neither ``epochs`` nor ``max_minutes``.
DEFAULT_EPOCHS = 40
# With only a time budget, the budget ends the run: an epoch count no run reaches.
_NO_EPOCH_LIMIT = 1_000_000


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
    device : str or int, optional
        Where the network runs: ``None`` (auto), ``"cpu"``, ``"gpu"``, ``"gpu:N"`` or an int (a
        GPU number).

    Raises
    ------
    BackendUnavailable
        If the backend is unknown or its framework is not installed.
    ConfigError
        If ``device`` is not a device spec, or names a GPU the framework does not see.
    """

    def __init__(
        self,
        backend: str = "torch",
        preset: str | Preset = "default",
        config: UNetConfig | None = None,
        inference: InferenceConfig | None = None,
        seed: int = 0,
        device: str | int | None = None,
    ) -> None:
        chosen = get_preset(preset)
        if config is not None:
            chosen = chosen.replace(network=config)
        if inference is not None:
            chosen = chosen.replace(inference=inference)
        self.preset: Preset = chosen
        self.backend = backend
        self.seed = seed
        self.device = device
        self.network: Network = build_network(
            backend, chosen.network, seed, loss=chosen.training.loss, device=device
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
        epochs: int | None = None,
        max_minutes: float | None = None,
        progress: bool = True,
        resume: str | os.PathLike | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> History:
        """Train on ``train_set``, keeping the weights that score best on ``validation``.

        Parameters
        ----------
        train_set, validation : Dataset
            Labelled images; without ``validation`` the last weights are kept.
        epochs : int, optional
            Maximum number of epochs (``steps_per_epoch`` batches each). By default
            :data:`DEFAULT_EPOCHS` without ``max_minutes``, and no limit with it: the time
            budget (or the preset's ``patience``) ends the run.
        max_minutes : float, optional
            Wall-clock budget; training stops at the end of the epoch that spends it.
        progress : bool
            Show progress bars (the line of each epoch goes to the ``nucleuseg.training`` logger).
        resume : path, optional
            Training-state file: written after every epoch, continued from if it exists.
        on_epoch : callable, optional
            Called with each epoch's :class:`~nucleuseg.history.EpochRecord` after its
            validation; raising :class:`~nucleuseg.training.StopTraining` there ends training
            (see :func:`nucleuseg.training.train`).

        Returns
        -------
        History
            Loss and validation score per epoch (also kept as ``self.history``).
        """
        if epochs is None:
            epochs = DEFAULT_EPOCHS if max_minutes is None else _NO_EPOCH_LIMIT
        validate = None
        if validation is not None and len(validation):
            cached = in_memory(list(validation), validation.name)  # read once, scored every epoch

            def validate() -> float:
                return self.evaluate(cached, progress=False).score

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
            on_epoch=on_epoch,
        )
        return self.history

    # -- inference --------------------------------------------------------------------------

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel probabilities ``(H, W, C)`` (foreground first) for an image of any size.

        ``image`` may be ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, of any integer
        or float dtype. See :func:`nucleuseg.inference.predict_probabilities`.
        """
        return predict_probabilities(self.network.predict, image, self.preset)

    def predict(self, image: np.ndarray, diameter: float | None = None) -> np.ndarray:
        """Instance labels, ``(H, W)`` ``int32`` with 0 for background.

        ``diameter`` is the typical nucleus diameter of ``image`` in pixels, for nuclei of
        another size than the model's native ``2 * inference.target_radius``: the image is
        resized to the model's scale and the labels back to the image's shape (see
        :func:`nucleuseg.inference.predict_labels`).
        """
        return predict_labels(self.network.predict, image, self.preset, diameter=diameter)

    def predict_blocks(
        self,
        source: np.ndarray | str | os.PathLike,
        out: str | os.PathLike,
        *,
        block: int | None = None,
        halo: int = 64,
        scheduler: str = "threads",
        workers: int | None = None,
    ) -> LargeResult:
        """Segment an image larger than memory block by block into ``out`` (a folder).

        Writes ``out/labels.zarr`` (labels ``1..N``, ``uint32`` or ``uint64``) and
        ``out/nuclei.csv`` (one row of measurements per nucleus); a nucleus that crosses a block
        border gets one label. Calling it again after an interrupted run finishes the rest. See
        :func:`nucleuseg.large.segment_large` for the arguments; needs the ``large`` extra.
        """
        return segment_large(
            source,
            self.network.predict,
            self.preset,
            out,
            block=block,
            halo=halo,
            scheduler=scheduler,
            workers=workers,
        )

    def predict_many(
        self,
        images: Dataset | Iterable[Sample],
        progress: bool = True,
        batch_size: int = 1,
    ) -> dict[str, np.ndarray]:
        """``{image_id: labels}`` for every sample of a dataset.

        With ``batch_size`` above 1, images that share a shape are predicted that many per
        network call (the labels are those :meth:`predict` gives for each alone, see
        :func:`nucleuseg.inference.predict_batch`). That pays where a network call has much fixed
        cost, as on a GPU; on a CPU one image per call (the default) was as fast or faster.
        """
        return {
            sample.image_id: labels
            for sample, labels in self._predictions(
                images, "predicting", progress, batch_size, labels=True
            )
        }

    def evaluate(
        self, dataset: Dataset, progress: bool = True, batch_size: int = 1
    ) -> metrics.DatasetScore:
        """The DSB score (and every count behind it) of this model on a labelled dataset.

        Predicts as :meth:`predict_many` does (``batch_size`` as there); ``fit`` scores its
        validation set with this.
        """
        truths, preds = {}, {}
        for sample, labels in self._predictions(
            dataset, "evaluating", progress, batch_size, labels=True
        ):
            truths[sample.image_id] = sample.labels
            preds[sample.image_id] = labels
        return metrics.score_dataset(truths, preds)

    def _predictions(
        self,
        samples: Iterable[Sample],
        what: str,
        progress: bool,
        batch_size: int,
        labels: bool = False,
    ) -> Iterator[tuple[Sample, np.ndarray]]:
        """``(sample, probabilities)``, or ``(sample, labels)`` with ``labels``, in order, read
        ahead a few batches at a time."""
        batch_size = check_batch_size(batch_size)
        total = len(samples) if hasattr(samples, "__len__") else None
        chunk: list[Sample] = []
        pixels = 0
        for sample in progress_bar(samples, what, progress, total):
            chunk.append(sample)
            pixels += sample.image.shape[0] * sample.image.shape[1]
            if len(chunk) >= _READ_AHEAD_BATCHES * batch_size or pixels >= _READ_AHEAD_PIXELS:
                yield from self._predict_chunk(chunk, batch_size, labels)
                chunk, pixels = [], 0
        yield from self._predict_chunk(chunk, batch_size, labels)

    def _predict_chunk(
        self, chunk: list[Sample], batch_size: int, labels: bool
    ) -> Iterator[tuple[Sample, np.ndarray]]:
        images = [sample.image for sample in chunk]
        predict = predict_labels_batch if labels else predict_batch
        out = predict(self.network.predict, images, self.preset, batch_size=batch_size)
        yield from zip(chunk, out, strict=True)

    def tune(
        self, validation: Dataset, progress: bool = True, batch_size: int = 1, **grid
    ) -> TuningResult:
        """Choose the post-processing thresholds that score best on ``validation``, and keep them.

        Probabilities are predicted once per image; ``grid`` may override the values tried
        (``thresholds``, ``seed_thresholds``, ``min_sizes``, see
        :func:`nucleuseg.tuning.tune_postprocessing`). The chosen setting becomes
        :attr:`inference` and is saved with the model. ``batch_size`` is as for
        :meth:`predict_many`.
        """
        probs, truths = {}, {}
        for sample, p in self._predictions(validation, "tuning", progress, batch_size):
            probs[sample.image_id] = p
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
    def load(
        cls, path: str | os.PathLike, backend: str | None = None, device: str | int | None = None
    ) -> Segmenter:
        """Load a model file into ``backend`` (default: the backend that saved it).

        A file written by any backend loads into any other: the weights are canonical.
        ``device`` is as for :class:`Segmenter`: ``None`` (auto), ``"cpu"``, ``"gpu"``,
        ``"gpu:N"`` or an int.
        """
        model = checkpoint.load_model(path)
        try:
            segmenter = cls(backend or model.backend, preset=model.preset, device=device)
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

    @classmethod
    def pretrained(
        cls, name: str, backend: str | None = None, device: str | int | None = None
    ) -> Segmenter:
        """A shipped pretrained model by name (see :func:`nucleuseg.models.pretrained`).

        ``backend`` defaults to the first installed one; ``device`` is as for
        :class:`Segmenter`. Calling :meth:`fit` on the result fine-tunes the model on your own
        labelled images.

        Examples
        --------
        >>> seg = Segmenter.pretrained("nuclei", backend="flax")  # doctest: +SKIP
        >>> history = seg.fit(my_images, validation=my_validation, epochs=10)  # doctest: +SKIP
        >>> Segmenter.pretrained("no-such-model")
        Traceback (most recent call last):
        ...
        nucleuseg.errors.CheckpointError: no-such-model: no such model file, nor a shipped model ...
        """
        from nucleuseg.models import pretrained

        return pretrained(name, backend=backend, device=device)
