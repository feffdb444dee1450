"""The Flax backend: the canonical U-Net in Flax (linen) on JAX, jitted steps, optax Adam.

Imported only when the ``"flax"`` backend is first asked for. Flax keeps kernels in HWIO and names
its batch-norm statistics ``mean`` and ``var``, so the canonical dictionary maps onto the variable
trees name for name: ``enc1.norm2.scale`` is ``params["enc1"]["norm2"]["scale"]`` and
``enc1.norm2.mean`` is ``batch_stats["enc1"]["norm2"]["mean"]``.

The 2x2 stride-2 transposed convolution is written out as what it is, one matrix product to
``4 * out`` channels followed by depth-to-space: input pixel ``(i, j)`` goes to output pixels
``(2i + a, 2j + b)`` with ``kernel[a, b]``, exactly the contract's definition. (``flax.linen.
ConvTranspose`` without ``transpose_kernel`` applies the kernel spatially flipped.)

The training step (forward, loss, gradients, batch-norm statistics, Adam) is one jitted function,
compiled once per configuration and input shape (networks of the same configuration share it),
with the weights, statistics and optimizer state donated so XLA updates them in place. The
learning rate is a traced argument (changing it never recompiles) and the dropout key is carried
from step to step; :meth:`FlaxNetwork.reseed` resets it. Without batch norm the step runs the
network on two halves of the batch (see :data:`MICROBATCHES`), which XLA:CPU runs faster.

Batch norm follows Flax: the running variance is updated with the biased batch variance
(PyTorch uses the unbiased one).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from nucleuseg.backends import register_backend
from nucleuseg.backends.base import (
    ADAM_BETAS,
    ADAM_EPSILON,
    BN_EPSILON,
    BN_MOMENTUM,
    DICE_SMOOTH,
    canonical_shapes,
    check_weights,
    init_weights,
    is_trainable,
)
from nucleuseg.config import UNetConfig
from nucleuseg.errors import ConfigError

LOSSES = ("bce", "bce_dice")

Tree = dict[str, Any]


def _activation(name: str):
    return jax.nn.elu if name == "elu" else jax.nn.relu


class Block(nn.Module):
    """Two 3x3 convolutions, each followed by optional batch norm and the activation; dropout
    after the first."""

    features: int
    dropout: float
    config: UNetConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        act = _activation(self.config.activation)
        for k in (1, 2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", name=f"conv{k}")(x)
            if self.config.normalization == "batch":
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=1.0 - BN_MOMENTUM,
                    epsilon=BN_EPSILON,
                    use_fast_variance=False,
                    name=f"norm{k}",
                )(x)
            x = act(x)
            if k == 1 and self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class Upsample(nn.Module):
    """2x2 stride-2 transposed convolution: ``out[2i + a, 2j + b] = x[i, j] @ kernel[a, b]``."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        kernel = self.param("kernel", nn.initializers.zeros, (2, 2, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jnp.einsum("nhwc,abco->nhawbo", x, kernel)
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias


class UNet(nn.Module):
    """The canonical U-Net (see :mod:`nucleuseg.backends.base`), NHWC logits out."""

    config: UNetConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        config = self.config
        f = (0, *config.filters)
        skips = []
        for level in range(1, config.depth + 1):
            if level > 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = Block(f[level], config.dropout[level - 1], config, name=f"enc{level}")(x, train)
            skips.append(x)
        for level in range(config.depth - 1, 0, -1):
            if config.upsampling == "transpose":
                x = Upsample(f[level], name=f"up{level}")(x)
            else:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            x = jnp.concatenate([x, skips[level - 1]], axis=-1)
            x = Block(f[level], config.dropout[level - 1], config, name=f"dec{level}")(x, train)
        return nn.Conv(config.out_channels, (1, 1), name="head")(x)


def loss_from_logits(logits: jax.Array, y: jax.Array, kind: str) -> jax.Array:
    """The contract's loss (NHWC arrays)."""
    axes = (0, 1, 2)
    bce = jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    bce = bce.mean(axis=axes)
    if kind == "bce":
        return bce.mean()
    p = jax.nn.sigmoid(logits)
    inter = (p * y).sum(axis=axes)
    dice = (2 * inter + DICE_SMOOTH) / (p.sum(axis=axes) + y.sum(axis=axes) + DICE_SMOOTH)
    return (bce + 1 - dice).mean()


def _collection(name: str) -> str:
    return "batch_stats" if not is_trainable(name) else "params"


def _to_trees(weights: dict[str, np.ndarray], names: list[str]) -> dict[str, Tree]:
    """Canonical dict -> Flax variable trees (fresh device copies, safe to donate)."""
    trees: dict[str, Tree] = {"params": {}, "batch_stats": {}}
    for name in names:
        *path, leaf = name.split(".")
        node = trees[_collection(name)]
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = jnp.array(np.asarray(weights[name], np.float32), copy=True)
    return trees


def _leaf(tree: Tree, name: str) -> jax.Array:
    node = tree
    for key in name.split("."):
        node = node[key]
    return node


def _numpy(value: jax.Array) -> np.ndarray:
    return np.array(value, np.float32, copy=True)


#: Without batch norm, the training step runs the network on this many equal slices of the
#: batch (the loss is still taken over the whole batch, so the step is the same up to
#: round-off). XLA:CPU schedules the independent slices side by side and its convolutions do
#: better on the smaller tensors: about 1.2x faster on the ``seed`` preset (2 cores).
MICROBATCHES = 2


def _microbatches(config: UNetConfig, batch: int) -> int:
    if config.normalization == "batch" or batch % MICROBATCHES:
        return 1  # batch statistics need the whole batch
    return MICROBATCHES


_ADAM = optax.scale_by_adam(b1=ADAM_BETAS[0], b2=ADAM_BETAS[1], eps=ADAM_EPSILON)


# The compiled steps take the (hashable) config and loss as static arguments, so networks of
# the same configuration share one compilation per input shape.
@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2, 3, 4, 5))
def _train_step(config: UNetConfig, kind: str, params, stats, opt_state, key, x, y, lr):
    model = UNet(config)
    key, dropout_key = jax.random.split(key)
    parts = _microbatches(config, x.shape[0])

    def objective(p):
        if parts == 1:
            logits, updates = model.apply(
                {"params": p, "batch_stats": stats},
                x,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            return loss_from_logits(logits, y, kind), updates.get("batch_stats", {})
        keys = jax.random.split(dropout_key, parts)
        logits = [
            model.apply({"params": p}, part, train=True, rngs={"dropout": k})
            for part, k in zip(jnp.split(x, parts), keys, strict=True)
        ]
        return loss_from_logits(jnp.concatenate(logits), y, kind), stats

    (loss, new_stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = _ADAM.update(grads, opt_state)
    params = jax.tree.map(lambda w, u: w - lr * u, params, updates)
    return params, new_stats, opt_state, key, loss


@partial(jax.jit, static_argnums=0)
def _predict_step(config: UNetConfig, params, stats, x):
    return jax.nn.sigmoid(
        UNet(config).apply({"params": params, "batch_stats": stats}, x, train=False)
    )


@partial(jax.jit, static_argnums=(0, 1))
def _loss_step(config: UNetConfig, kind: str, params, stats, x, y):
    logits = UNet(config).apply({"params": params, "batch_stats": stats}, x, train=False)
    return loss_from_logits(logits, y, kind)


@register_backend("flax", requires="flax", extra="flax")
class FlaxNetwork:
    """The ``"flax"`` backend's :class:`~nucleuseg.backends.base.Network`: the Flax U-Net for
    ``config``, initialised from ``seed`` (registered as the backend's factory).

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> net = FlaxNetwork(get_preset("seed").network.replace(depth=2, base_filters=2), seed=0)
    >>> net.predict(np.zeros((1, 8, 8, 3), np.float32)).shape
    (1, 8, 8, 1)
    """

    def __init__(self, config: UNetConfig, seed: int = 0, loss: str = "bce_dice") -> None:
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.config = config
        self.loss_kind = loss
        self.model = UNet(config)
        self._names = list(canonical_shapes(config))
        self._trainable = [n for n in self._names if is_trainable(n)]
        self.set_weights(init_weights(config, seed))
        self._opt_state = _ADAM.init(self._params)
        self.reseed(seed)

    @property
    def variables(self) -> dict[str, Tree]:
        """The Flax variable trees, ``{"params": ..., "batch_stats": ...}`` (read only: the
        training step donates these buffers, so copy what you keep)."""
        return {"params": self._params, "batch_stats": self._stats}

    def reseed(self, seed: int) -> None:
        """Seed the dropout random stream (called at every epoch start)."""
        self._key = jax.random.key(seed)

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        self._params, self._stats, self._opt_state, self._key, loss = _train_step(
            self.config,
            self.loss_kind,
            self._params,
            self._stats,
            self._opt_state,
            self._key,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y, jnp.float32),
            jnp.float32(learning_rate),
        )
        return float(loss)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _numpy(
            _predict_step(self.config, self._params, self._stats, jnp.asarray(x, jnp.float32))
        )

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
        return float(_loss_step(self.config, self.loss_kind, self._params, self._stats, x, y))

    def get_weights(self) -> dict[str, np.ndarray]:
        return {
            n: _numpy(_leaf(self._params if is_trainable(n) else self._stats, n))
            for n in self._names
        }

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(weights, self.config)
        trees = _to_trees(weights, self._names)
        self._params, self._stats = trees["params"], trees["batch_stats"]

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        step = int(self._opt_state.count)
        state: dict[str, np.ndarray] = {}
        if step > 0:
            for name in self._trainable:
                state[f"adam.m.{name}"] = _numpy(_leaf(self._opt_state.mu, name))
                state[f"adam.v.{name}"] = _numpy(_leaf(self._opt_state.nu, name))
        state["adam.step"] = np.asarray(step, np.float32)
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        current = {
            f"adam.{part}.{n}": _leaf(tree, n)
            for part, tree in (("m", self._opt_state.mu), ("v", self._opt_state.nu))
            for n in self._trainable
        }
        merged = {k: state.get(k, v) for k, v in current.items()}
        mu = _to_trees({n: merged[f"adam.m.{n}"] for n in self._trainable}, self._trainable)
        nu = _to_trees({n: merged[f"adam.v.{n}"] for n in self._trainable}, self._trainable)
        count = jnp.asarray(int(float(state.get("adam.step", 0))), jnp.int32)
        self._opt_state = self._opt_state._replace(count=count, mu=mu["params"], nu=nu["params"])
