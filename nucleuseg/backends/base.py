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
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from nucleuseg.config import UNetConfig

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
