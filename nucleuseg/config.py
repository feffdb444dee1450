"""Configuration of the network, the training recipe and inference, and the named presets.

Three small frozen dataclasses describe everything a :class:`~nucleuseg.Segmenter` needs to
rebuild a model: :class:`UNetConfig` (the network every backend builds the same way),
:class:`TrainingConfig` (the recipe) and :class:`InferenceConfig` (tiling, TTA, post-processing).
A :class:`Preset` bundles the three; :data:`PRESETS` holds the named ones:

``seed``
    The classic DSB 2018 starter U-Net: 16-32-64-128-256 filters, ELU, dropout 0.1-0.3,
    transposed-conv upsampling, one sigmoid foreground channel trained with BCE on images resized
    to 128x128, connected components at inference. The baseline.
``default``
    The recipe we stand behind: no resizing (random crops for training, full images at
    inference), foreground + contour + touching targets, BCE + soft Dice, augmentation, a moving
    average of the weights (``ema_decay`` 0.999) and marker-controlled watershed.

Examples
--------
>>> from nucleuseg.config import get_preset
>>> p = get_preset("seed")
>>> p.network.filters
(16, 32, 64, 128, 256)
>>> p.network.replace(base_filters=8).filters
(8, 16, 32, 64, 128)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nucleuseg.errors import ConfigError

ACTIVATIONS = ("relu", "elu")
NORMALIZATIONS = ("none", "batch")
UPSAMPLINGS = ("transpose", "nearest")
LOSSES = ("bce", "bce_dice")


class _Replaceable:
    def replace(self, **changes: Any):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown fields {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class UNetConfig(_Replaceable):
    """The U-Net that every backend builds identically.

    Parameters
    ----------
    depth : int
        Number of resolution levels (the bottleneck included); inputs are padded to a multiple of
        ``2 ** (depth - 1)``.
    base_filters : int
        Filters at the first level; each level doubles them.
    dropout : tuple of float
        Dropout rate after the first convolution of each level, encoder and decoder alike; one
        value per level, from the top. A shorter tuple repeats its last rate for the deeper
        levels, a longer one is cut to ``depth`` (so changing ``depth`` keeps a valid config).
    activation : {"relu", "elu"}
    normalization : {"none", "batch"}
        Batch normalisation after every 3x3 convolution (before the activation).
    upsampling : {"transpose", "nearest"}
        2x2 stride-2 transposed convolution, or nearest-neighbour repeat followed by the decoder
        convolutions.
    in_channels, out_channels : int
        Image channels in; sigmoid probability channels out.
    """

    depth: int = 5
    base_filters: int = 16
    dropout: tuple[float, ...] = (0.0,)
    activation: str = "elu"
    normalization: str = "none"
    upsampling: str = "transpose"
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self) -> None:
        if not 2 <= self.depth <= 7:
            raise ConfigError(f"depth must be between 2 and 7, got {self.depth}")
        if not 1 <= self.base_filters <= 512:
            raise ConfigError(f"base_filters must be between 1 and 512, got {self.base_filters}")
        dropout = tuple(float(d) for d in self.dropout)
        if dropout:
            # Fit the rates to the depth: extra levels repeat the last rate, fewer drop the tail.
            dropout = (dropout + dropout[-1:] * self.depth)[: self.depth]
        if len(dropout) != self.depth or not all(0.0 <= d < 1.0 for d in dropout):
            raise ConfigError(f"dropout needs {self.depth} rates in [0, 1), got {self.dropout}")
        object.__setattr__(self, "dropout", dropout)
        for name, allowed in (
            ("activation", ACTIVATIONS),
            ("normalization", NORMALIZATIONS),
            ("upsampling", UPSAMPLINGS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError("in_channels and out_channels must be positive")

    @property
    def filters(self) -> tuple[int, ...]:
        """Filters per level, from the top of the U to the bottleneck."""
        return tuple(self.base_filters * 2**i for i in range(self.depth))

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.depth - 1)


@dataclass(frozen=True)
class TrainingConfig(_Replaceable):
    """The training recipe.

    Parameters
    ----------
    resize : int or None
        Resize every image to ``resize x resize`` (the starter recipe); ``None`` trains on random
        crops of the images at their own scale.
    crop : int
        Side of the random training crops (ignored when ``resize`` is set).
    batch_size : int
    steps_per_epoch : int
        Optimizer steps between two validations.
    learning_rate : float
        Adam's peak learning rate; with ``schedule="cosine"`` it decays to 5 % of that over the
        run (by epochs, or by the time budget when one is set).
    schedule : {"constant", "cosine"}
    loss : {"bce", "bce_dice"}
        Binary cross-entropy, or BCE plus soft Dice, averaged over the output channels.
    augment : bool
        Flips, 90-degree rotations, scale, intensity and colour jitter, blur and noise.
    scale_range : (float, float)
        Range of the random rescaling of training crops (log-uniform).
    patience : int
        Stop after this many epochs without a better validation score.
    stain_augment : bool
        Stain jitter of colour training images before they are normalised
        (:func:`~nucleuseg.transforms.random_stain`: hematoxylin, eosin and DAB densities
        scaled and shifted), for stained tissue from many laboratories. Off by default; model
        files saved without this field load with it off.
    target_radius : float, optional
        Zoom each training image so that its median nucleus has about this radius (in pixels),
        by the rule that ``InferenceConfig.auto_scale`` applies when predicting
        (:func:`~nucleuseg.transforms.zoom_to_radius`: images whose median radius lies within
        ``target_radius / 1.5 .. target_radius * 1.5`` are left as they are, the zoom stays within
        0.5..2), before the random ``scale_range`` zoom. A model trained so should predict with
        ``auto_scale=True`` and the same ``target_radius`` (``nucleuseg train --init`` sets both).
        None (the default): images are used at their own scale.
    ema_decay : float
        Keep an exponential moving average of the weights, with this decay per optimizer step
        (0.999 averages over about the last 1,000 steps), and validate and keep the average
        instead of the weights of the last step (:func:`nucleuseg.training.train`). 0 keeps
        the last step's weights; the ``default`` preset uses 0.999. Model files saved without
        this field load with it off.
    """

    resize: int | None = None
    crop: int = 128
    batch_size: int = 8
    steps_per_epoch: int = 100
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    loss: str = "bce_dice"
    augment: bool = True
    scale_range: tuple[float, float] = (0.7, 1.4)
    patience: int = 8
    stain_augment: bool = False
    target_radius: float | None = None
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.target_radius is not None and not self.target_radius > 0:
            raise ConfigError(f"target_radius must be positive or None, got {self.target_radius}")
        if self.resize is not None and self.resize < 8:
            raise ConfigError(f"resize must be at least 8, got {self.resize}")
        if self.crop < 8 or self.batch_size < 1 or self.steps_per_epoch < 1:
            raise ConfigError("crop >= 8, batch_size >= 1 and steps_per_epoch >= 1 are required")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be 'bce' or 'bce_dice', got {self.loss!r}")
        low, high = (float(v) for v in self.scale_range)
        if not 0 < low <= high:
            raise ConfigError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        object.__setattr__(self, "scale_range", (low, high))
        if not isinstance(self.stain_augment, bool):
            raise ConfigError(f"stain_augment must be true or false, got {self.stain_augment!r}")


@dataclass(frozen=True)
class InferenceConfig(_Replaceable):
    """How probabilities are computed and turned into instances.

    Parameters
    ----------
    postprocess : str
        A registered post-processing method (see :mod:`nucleuseg.postprocess`):
        ``"components"`` (connected components of the thresholded foreground),
        ``"watershed"`` (marker-controlled watershed with markers from foreground minus contour
        and touching channels), or one added with
        :func:`~nucleuseg.postprocess.register_postprocess`.
    threshold : float
        Foreground probability threshold.
    seed_threshold : float
        Threshold on ``foreground - contour - touching`` for watershed markers.
    min_size : int
        Objects smaller than this (pixels) are removed.
    tile : int
        Images larger than ``tile`` on a side are predicted in overlapping tiles of this size.
    overlap : int
        Overlap between neighbouring tiles, in pixels.
    tta : bool
        Average predictions over flips (4 passes).
    auto_scale : bool
        Predict once, measure the median nucleus radius, and when it lies outside
        ``target_radius / 1.5 .. target_radius * 1.5`` predict again on the image rescaled so
        that nuclei have about ``target_radius`` (the factor is kept within 0.5..2).
    target_radius : float
        Nucleus radius, in pixels, that ``auto_scale`` rescales towards.
    scout_zoom : float
        Zoom of the first prediction, on which ``auto_scale`` measures the nuclei (in
        ``(0, 1]``). At 0.5 (the default) it costs a quarter of a full-size prediction. When it
        finds nuclei that call for a zoom below 1, the image is predicted at that zoom (the scout
        itself is kept when the zoom is its own); otherwise (small nuclei blur together at half
        size, or none were found) they are measured again on a full-size prediction. At 1 the
        full-size prediction is the only measurement, kept when no other zoom is needed.
    """

    postprocess: str = "watershed"
    threshold: float = 0.5
    seed_threshold: float = 0.5
    min_size: int = 8
    tile: int = 1024
    overlap: int = 64
    tta: bool = False
    auto_scale: bool = False
    target_radius: float = 10.0
    scout_zoom: float = 0.5

    def __post_init__(self) -> None:
        if not self.target_radius > 0:
            raise ConfigError(f"target_radius must be positive, got {self.target_radius}")
        if not 0 < self.scout_zoom <= 1:
            raise ConfigError(f"scout_zoom must be in (0, 1], got {self.scout_zoom}")
        # The registry lives with the methods in nucleuseg.postprocess, which uses this
        # module's InferenceConfig: it is looked up when a name is checked, so that neither
        # module imports the other as it loads.
        from nucleuseg.postprocess import list_postprocessing

        methods = tuple(list_postprocessing())
        if self.postprocess not in methods:
            raise ConfigError(
                f"postprocess must be one of {methods} (the registered post-processing "
                f"methods), got {self.postprocess!r}"
            )
        if not (0 < self.threshold < 1 and 0 < self.seed_threshold < 1):
            raise ConfigError("threshold and seed_threshold must be in (0, 1)")
        if self.min_size < 0 or self.tile < 32 or not 0 <= self.overlap < self.tile // 2:
            raise ConfigError("min_size >= 0, tile >= 32 and 0 <= overlap < tile/2 are required")


@dataclass(frozen=True)
class Preset(_Replaceable):
    """A network, a training recipe and an inference setting that belong together."""

    name: str
    network: UNetConfig = field(default_factory=UNetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_json(self) -> str:
        """Serialise to a JSON string (stored in checkpoint metadata)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        try:
            return cls(
                name=str(data["name"]),
                network=UNetConfig.from_dict(data["network"]),
                training=TrainingConfig.from_dict(data["training"]),
                inference=InferenceConfig.from_dict(data["inference"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"incomplete preset description: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Preset:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"preset JSON is malformed: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("preset JSON must be an object")
        return cls.from_dict(data)


PRESETS: dict[str, Preset] = {
    "seed": Preset(
        name="seed",
        network=UNetConfig(
            depth=5,
            base_filters=16,
            dropout=(0.1, 0.1, 0.2, 0.2, 0.3),
            activation="elu",
            normalization="none",
            upsampling="transpose",
            out_channels=1,
        ),
        training=TrainingConfig(
            resize=128,
            batch_size=16,
            steps_per_epoch=40,
            learning_rate=1e-3,
            schedule="constant",
            loss="bce",
            augment=False,
            patience=5,
        ),
        inference=InferenceConfig(postprocess="components", min_size=0),
    ),
    "default": Preset(
        name="default",
        network=UNetConfig(
            depth=5,
            base_filters=16,
            dropout=(0.0, 0.0, 0.1, 0.1, 0.2),
            activation="elu",
            normalization="none",
            upsampling="transpose",
            out_channels=3,
        ),
        training=TrainingConfig(steps_per_epoch=300, patience=20, ema_decay=0.999),
        inference=InferenceConfig(),
    ),
}
"""The named presets, see the module docstring."""


def get_preset(name: str | os.PathLike | Preset) -> Preset:
    """Look up a preset by name, or read one from a JSON file (a :class:`Preset` is returned
    unchanged).

    A name ending in ``.json`` (or any :class:`os.PathLike`) is a file written with
    :meth:`Preset.to_json` (as ``nucleuseg search`` writes its best preset); it is validated
    like any preset.

    Raises
    ------
    ConfigError
        If the name is unknown, or the file cannot be read or holds no valid preset.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mine.json"
    >>> _ = path.write_text(get_preset("seed").replace(name="mine").to_json())
    >>> get_preset(str(path)).name
    'mine'
    """
    if isinstance(name, Preset):
        return name
    if isinstance(name, os.PathLike) or str(name).lower().endswith(".json"):
        return _read_preset(Path(name))
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or give a .json file"
        )
    return PRESETS[name]


def _read_preset(path: Path) -> Preset:
    """The preset in a JSON file, with the file named in any error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such preset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read this preset file ({exc})") from None
    try:
        return Preset.from_json(text)
    except (AttributeError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise ConfigError(f"{path}: not a valid preset: {exc}") from None
