"""The backend contract: what a framework must provide, and the canonical weight layout.

A backend builds a :class:`Network` from a :class:`~nucleuseg.config.UNetConfig`. Everything
outside ``nucleuseg/backends/`` talks to it through this small protocol, on numpy arrays in NHWC
layout, so it never knows which framework runs.

Canonical weights
-----------------
One flat ``dict[str, numpy.ndarray]`` of ``float32`` arrays, named and shaped as
:func:`canonical_shapes` lists them. For a U-Net of ``depth`` levels with filters ``f[1..depth]``
(level ``depth`` is the bottleneck):

=============================  ========================  ============================================
name                           shape                     what
=============================  ========================  ============================================
``enc{l}.conv{1,2}.kernel``    ``(3, 3, in, out)``       encoder 3x3 convolutions, HWIO, l = 1..depth
``enc{l}.conv{1,2}.bias``      ``(out,)``
``enc{l}.norm{1,2}.scale``     ``(out,)``                batch norm gamma (``normalization="batch"``)
``enc{l}.norm{1,2}.bias``      ``(out,)``                batch norm beta
``enc{l}.norm{1,2}.mean``      ``(out,)``                running mean
``enc{l}.norm{1,2}.var``       ``(out,)``                running variance
``up{l}.kernel``               ``(2, 2, f[l+1], f[l])``  2x2 stride-2 transposed convolution, HWIO
``up{l}.bias``                 ``(f[l],)``               (``upsampling="transpose"``), l = 1..depth-1
``dec{l}.conv{1,2}.*``                                   decoder convolutions and norms, l = 1..depth-1
``head.kernel``                ``(1, 1, f[1], out)``     1x1 convolution to the output logits
``head.bias``                  ``(out,)``
=============================  ========================  ============================================

Kernels are HWIO, as Keras and Flax keep them (torch transposes on the way in and out). The
transposed convolution maps input pixel ``(i, j)`` to output pixels ``(2i + a, 2j + b)`` with
``kernel[a, b]``. The decoder concatenates ``[upsampled, skip]`` on the channel axis in that order.
Batch norm uses ``epsilon = 1e-3`` and ``momentum = 0.1`` (the weight of the new batch).

Optimizer state
---------------
Adam (``beta1 = 0.9``, ``beta2 = 0.999``, ``epsilon = 1e-7``), keyed ``adam.m.<weight>``,
``adam.v.<weight>`` in the weight's canonical layout, and ``adam.step`` (a 0-d array). Only
trainable weights (not the running statistics) have moments.

The loss
--------
For logits ``z`` and targets ``y`` with ``C`` channels, ``p = sigmoid(z)``:
``loss = mean_c [ BCE_c + (1 - Dice_c) ]`` for ``"bce_dice"`` and ``mean_c BCE_c`` for ``"bce"``,
where ``BCE_c`` is the mean binary cross-entropy of channel ``c`` over batch and pixels and
``Dice_c = (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)`` summed over batch and pixels.
:meth:`BaseNetwork.loss_from_logits` writes it once, over a few primitives each framework
provides.

The shared base
---------------
:class:`BaseNetwork` holds what every built-in backend does alike: the configuration, the loss
name (checked against :data:`LOSSES`), the device (see :mod:`nucleuseg.backends.device`), the
canonical and trainable weight names, the initial weights, weights and Adam state in and out of
the canonical layout, and the loss. A framework subclass overrides only what differs: how it
builds the network, reads and writes one weight and one weight's Adam moments, the loss
primitives, and the steps themselves.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from nucleuseg.backends.device import DeviceSpec, parse_device
from nucleuseg.config import LOSSES, UNetConfig
from nucleuseg.errors import ConfigError

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.1
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-7
DICE_SMOOTH = 1.0
RUNNING_STATS = ("mean", "var")


@runtime_checkable
class Network(Protocol):
    """What every backend's network provides (NHWC ``float32`` numpy arrays in and out)."""

    config: UNetConfig

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        """One Adam step on a batch; returns the loss before the step."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities ``(N, H, W, out_channels)`` in inference mode."""

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """The training loss in inference mode (no dropout, running batch-norm statistics)."""

    def reseed(self, seed: int) -> None:
        """Restart the network's own random streams (dropout) from ``seed``.

        The training loop calls it at the start of every epoch, so that a resumed run draws the
        same dropout masks as an uninterrupted one. A backend seeds only random state it owns,
        never a framework's global one.
        """

    def get_weights(self) -> dict[str, np.ndarray]:
        """Canonical weights (see the module docstring)."""

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load canonical weights; every name and shape must match :func:`canonical_shapes`."""

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam moments and step count in canonical layout."""

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_optimizer_state` returned."""


def _block_shapes(prefix: str, cin: int, cout: int, config: UNetConfig) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for k, c_in in ((1, cin), (2, cout)):
        shapes[f"{prefix}.conv{k}.kernel"] = (3, 3, c_in, cout)
        shapes[f"{prefix}.conv{k}.bias"] = (cout,)
        if config.normalization == "batch":
            for part in ("scale", "bias", *RUNNING_STATS):
                shapes[f"{prefix}.norm{k}.{part}"] = (cout,)
    return shapes


def canonical_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical weight name with its shape, in a fixed order.

    Examples
    --------
    >>> from nucleuseg.config import UNetConfig
    >>> shapes = canonical_shapes(UNetConfig(depth=2, base_filters=4, out_channels=1))
    >>> shapes["up1.kernel"], shapes["head.kernel"]
    ((2, 2, 8, 4), (1, 1, 4, 1))
    """
    f = (0, *config.filters)  # 1-based levels
    shapes: dict[str, tuple] = {}
    cin = config.in_channels
    for level in range(1, config.depth + 1):
        shapes.update(_block_shapes(f"enc{level}", cin, f[level], config))
        cin = f[level]
    for level in range(config.depth - 1, 0, -1):
        if config.upsampling == "transpose":
            shapes[f"up{level}.kernel"] = (2, 2, f[level + 1], f[level])
            shapes[f"up{level}.bias"] = (f[level],)
            dec_in = 2 * f[level]
        else:
            dec_in = f[level + 1] + f[level]
        shapes.update(_block_shapes(f"dec{level}", dec_in, f[level], config))
    shapes["head.kernel"] = (1, 1, f[1], config.out_channels)
    shapes["head.bias"] = (config.out_channels,)
    return shapes


def is_trainable(name: str) -> bool:
    """Whether a canonical weight is learned by the optimizer (running statistics are not)."""
    return name.rsplit(".", 1)[-1] not in RUNNING_STATS or ".norm" not in name


def parameter_count(config: UNetConfig) -> int:
    """Number of trainable parameters of the network ``config`` describes.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> parameter_count(get_preset("seed").network)
    1941105
    """
    return int(sum(np.prod(s) for n, s in canonical_shapes(config).items() if is_trainable(n)))


def check_weights(
    weights: dict[str, np.ndarray], config: UNetConfig, source: str = "weights"
) -> None:
    """Raise :class:`~nucleuseg.errors.CheckpointError` unless names and shapes are canonical."""
    from nucleuseg.errors import CheckpointError

    expected = canonical_shapes(config)
    missing = [n for n in expected if n not in weights]
    extra = [n for n in weights if n not in expected]
    wrong = [
        f"{n} {tuple(np.shape(weights[n]))} (expected {expected[n]})"
        for n in expected
        if n in weights and tuple(np.shape(weights[n])) != expected[n]
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    if extra:
        problems.append(f"unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}")
    if wrong:
        problems.append(f"misshapen {wrong[:4]}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    bad = [n for n in expected if not np.all(np.isfinite(weights[n]))]
    if bad:
        raise CheckpointError(f"{source}: non-finite values in {bad[:4]}")


def init_weights(config: UNetConfig, seed: int) -> dict[str, np.ndarray]:
    """Framework-independent initial weights: He-uniform kernels, zero biases, unit norms.

    Every backend starts from these, so the same seed gives the same starting point in every
    framework.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in canonical_shapes(config).items():
        part = name.rsplit(".", 1)[-1]
        if part == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            limit = np.sqrt(6.0 / fan_in)
            weights[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        elif part in ("scale", "var"):
            weights[name] = np.ones(shape, np.float32)
        else:
            weights[name] = np.zeros(shape, np.float32)
    return weights


class BaseNetwork:
    """What every built-in backend's :class:`Network` does alike; frameworks override the rest.

    In the spirit of einops' ``AbstractBackend``: the defaults live here and each framework's
    subclass overrides only what differs. Building one (``Subclass(config, seed, loss,
    device)``) checks ``loss`` against :data:`LOSSES`, settles ``device`` (see
    :mod:`nucleuseg.backends.device`) against the GPUs the framework sees, lists the canonical
    and trainable weight names, calls :meth:`_build`, loads :func:`init_weights` for ``seed`` and
    calls :meth:`reseed` with it.

    A subclass provides

    - ``framework`` (the name error messages use) and :meth:`_visible_gpus`;
    - :meth:`_build`: the network, its variables and the optimizer, on :attr:`device`;
    - :meth:`_read_weight` and :meth:`_write_weight`: one canonical weight out and in;
    - :meth:`_read_moments`, :meth:`_write_moments`, :meth:`_read_step`, :meth:`_write_step`:
      Adam's moments of one weight and the step count, on which :meth:`get_optimizer_state` and
      :meth:`set_optimizer_state` are built;
    - the loss primitives :meth:`_sigmoid`, :meth:`_bce_with_logits`, :meth:`_sum`,
      :meth:`_mean` and :attr:`PIXEL_AXES`, where the defaults (numpy functions and the arrays'
      own ``sum`` and ``mean``, NHWC) do not serve;
    - :meth:`train_step`, :meth:`predict`, :meth:`loss` and, when it draws random numbers,
      :meth:`reseed`.

    Attributes
    ----------
    config : UNetConfig
    loss_kind : str
        One of :data:`LOSSES`.
    device : DeviceSpec
        Where the network runs, settled: ``"cpu"`` or ``"gpu:N"``.
    """

    #: The deep-learning framework, as error messages name it.
    framework: ClassVar[str] = "the framework"
    #: The batch and pixel axes of the framework's tensors (NHWC; NCHW overrides it).
    PIXEL_AXES: ClassVar[tuple[int, ...]] = (0, 1, 2)

    def __init__(
        self,
        config: UNetConfig,
        seed: int = 0,
        loss: str = "bce_dice",
        device: DeviceSpec | str | int | None = None,
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.config = config
        self.loss_kind = loss
        self.device = parse_device(device).resolve(self._visible_gpus(), self.framework)
        self._names = list(canonical_shapes(config))
        self._trainable = [name for name in self._names if is_trainable(name)]
        self._build()
        self.set_weights(init_weights(config, seed))
        self.reseed(seed)

    # -- what a framework overrides -----------------------------------------------------------

    @staticmethod
    def _visible_gpus() -> int:
        """How many GPUs the framework sees (none by default)."""
        return 0

    def _build(self) -> None:
        """Create the network, its variables and the optimizer state on :attr:`device`."""

    def _read_weight(self, name: str) -> np.ndarray:
        """One weight, as a canonical ``float32`` array (a copy)."""
        raise NotImplementedError(f"{type(self).__name__} does not read weights")

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        """Load one canonical weight (already checked by :func:`check_weights`)."""
        raise NotImplementedError(f"{type(self).__name__} does not write weights")

    def _read_moments(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Adam's first and second moments of a trainable weight, canonical layout, or ``None``
        when the optimizer holds none for it."""
        raise NotImplementedError(f"{type(self).__name__} does not read optimizer state")

    def _write_moments(self, name: str, m: np.ndarray, v: np.ndarray) -> None:
        """Set Adam's moments of a trainable weight from canonical arrays."""
        raise NotImplementedError(f"{type(self).__name__} does not write optimizer state")

    def _read_step(self) -> float:
        """Adam's step count (0 before the first step)."""
        raise NotImplementedError(f"{type(self).__name__} does not read optimizer state")

    def _write_step(self, step: float) -> None:
        """Set Adam's step count (called after the moments are written)."""
        raise NotImplementedError(f"{type(self).__name__} does not write optimizer state")

    @staticmethod
    def _sigmoid(z: Any) -> Any:
        return 1.0 / (1.0 + np.exp(-z))

    @staticmethod
    def _bce_with_logits(z: Any, y: Any) -> Any:
        """Per element ``-y log sigmoid(z) - (1 - y) log(1 - sigmoid(z))``, stable for any
        ``z``."""
        return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))

    @staticmethod
    def _sum(x: Any, axes: tuple[int, ...]) -> Any:
        return x.sum(axes)

    @staticmethod
    def _mean(x: Any, axes: tuple[int, ...] | None = None) -> Any:
        return x.mean() if axes is None else x.mean(axes)

    # -- written once -------------------------------------------------------------------------

    @classmethod
    def loss_from_logits(cls, logits: Any, y: Any, kind: str) -> Any:
        """The contract's loss (see the module docstring) in the framework's tensors.

        Traced inside the compiled steps of the frameworks that compile them.

        Examples
        --------
        >>> z = np.array([[[[2.0], [-1.0]]]])  # NHWC: one image, 1x2 pixels, one channel
        >>> y = np.array([[[[1.0], [0.0]]]])
        >>> round(float(BaseNetwork.loss_from_logits(z, y, "bce")), 4)
        0.2201
        >>> round(float(BaseNetwork.loss_from_logits(z, y, "bce_dice")), 4)
        0.3433
        """
        axes = cls.PIXEL_AXES
        bce = cls._mean(cls._bce_with_logits(logits, y), axes)
        if kind == "bce":
            return cls._mean(bce)
        p = cls._sigmoid(logits)
        inter = cls._sum(p * y, axes)
        dice = (2 * inter + DICE_SMOOTH) / (cls._sum(p, axes) + cls._sum(y, axes) + DICE_SMOOTH)
        return cls._mean(bce + 1 - dice)

    def reseed(self, seed: int) -> None:
        """Restart the network's random streams from ``seed`` (none by default)."""

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not train")

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not predict")

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not compute the loss")

    def get_weights(self) -> dict[str, np.ndarray]:
        """Canonical weights (see the module docstring)."""
        return {name: self._read_weight(name) for name in self._names}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load canonical weights; every name and shape must match :func:`canonical_shapes`."""
        check_weights(weights, self.config)
        for name in self._names:
            self._write_weight(name, weights[name])

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        """Adam moments (``adam.m.<weight>``, ``adam.v.<weight>``, canonical layout) and
        ``adam.step``; no moments before the first step."""
        step = self._read_step()
        state: dict[str, np.ndarray] = {}
        if step > 0:
            for name in self._trainable:
                moments = self._read_moments(name)
                if moments is not None:
                    state[f"adam.m.{name}"], state[f"adam.v.{name}"] = moments
        state["adam.step"] = np.asarray(step, np.float32)
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`get_optimizer_state` returned (weights it lacks keep theirs)."""
        for name in self._trainable:
            if f"adam.m.{name}" in state:
                self._write_moments(name, state[f"adam.m.{name}"], state[f"adam.v.{name}"])
        self._write_step(float(state.get("adam.step", 0.0)))
