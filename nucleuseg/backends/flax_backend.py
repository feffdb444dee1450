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
    BaseNetwork,
    canonical_shapes,
    is_trainable,
)
from nucleuseg.config import UNetConfig

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


def _leaf(tree: Tree, name: str) -> jax.Array:
    node = tree
    for key in name.split("."):
        node = node[key]
    return node


def _set_leaf(tree: Tree, name: str, value: jax.Array) -> None:
    """Put ``value`` at the canonical ``name`` of a variable tree, making the path if needed."""
    *path, leaf = name.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


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
            return FlaxNetwork.loss_from_logits(logits, y, kind), updates.get("batch_stats", {})
        keys = jax.random.split(dropout_key, parts)
        logits = [
            model.apply({"params": p}, part, train=True, rngs={"dropout": k})
            for part, k in zip(jnp.split(x, parts), keys, strict=True)
        ]
        return FlaxNetwork.loss_from_logits(jnp.concatenate(logits), y, kind), stats

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
    return FlaxNetwork.loss_from_logits(logits, y, kind)


@register_backend("flax", requires="flax", extra="flax")
class FlaxNetwork(BaseNetwork):
    """The ``"flax"`` backend's :class:`~nucleuseg.backends.base.Network`: the Flax U-Net for
    ``config``, initialised from ``seed``, on ``device`` (see :mod:`nucleuseg.backends.device`;
    by default the first GPU JAX sees, else the CPU); registered as the backend's factory.

    The weights, statistics and optimizer state are put on that device, and so is every batch,
    so the compiled steps run there.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> net = FlaxNetwork(get_preset("default").network.replace(depth=2, base_filters=2))
    >>> sorted(net.variables), float(net.get_optimizer_state()["adam.step"])
    (['batch_stats', 'params'], 0.0)
    >>> net.predict(np.zeros((2, 16, 16, 3), np.float32)).shape
    (2, 16, 16, 3)
    """

    framework = "jax"

    _sigmoid = staticmethod(jax.nn.sigmoid)

    @staticmethod
    def _bce_with_logits(z: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))

    @staticmethod
    def _visible_gpus() -> int:
        try:
            return len(jax.devices("gpu"))
        except RuntimeError:  # no GPU platform in this JAX installation
            return 0

    def _build(self) -> None:
        spec = self.device
        self._jax_device = jax.devices(spec.kind)[spec.index if spec.kind == "gpu" else 0]
        self.model = UNet(self.config)
        self._params: Tree = {}
        self._stats: Tree = {}
        for name, shape in canonical_shapes(self.config).items():
            self._write_weight(name, np.zeros(shape, np.float32))
        self._opt_state = _ADAM.init(self._params)

    def _put(self, value: np.ndarray) -> jax.Array:
        """A fresh copy of ``value`` on the network's device (safe to donate)."""
        return jax.device_put(np.array(value, np.float32, copy=True), self._jax_device)

    def _batch(self, x: np.ndarray) -> jax.Array:
        """A batch on the network's device, so that the compiled step runs there."""
        return jax.device_put(np.asarray(x, np.float32), self._jax_device)

    @property
    def variables(self) -> dict[str, Tree]:
        """The Flax variable trees, ``{"params": ..., "batch_stats": ...}`` (read only: the
        training step donates these buffers, so copy what you keep)."""
        return {"params": self._params, "batch_stats": self._stats}

    def reseed(self, seed: int) -> None:
        """Seed the dropout random stream (called at every epoch start)."""
        self._key = jax.device_put(jax.random.key(seed), self._jax_device)

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        self._params, self._stats, self._opt_state, self._key, loss = _train_step(
            self.config,
            self.loss_kind,
            self._params,
            self._stats,
            self._opt_state,
            self._key,
            self._batch(x),
            self._batch(y),
            jnp.float32(learning_rate),
        )
        return float(loss)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _numpy(_predict_step(self.config, self._params, self._stats, self._batch(x)))

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        x, y = self._batch(x), self._batch(y)
        return float(_loss_step(self.config, self.loss_kind, self._params, self._stats, x, y))

    def _tree(self, name: str) -> Tree:
        return self._params if is_trainable(name) else self._stats

    def _read_weight(self, name: str) -> np.ndarray:
        return _numpy(_leaf(self._tree(name), name))

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        _set_leaf(self._tree(name), name, self._put(value))

    def _read_moments(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return _numpy(_leaf(self._opt_state.mu, name)), _numpy(_leaf(self._opt_state.nu, name))

    def _write_moments(self, name: str, m: np.ndarray, v: np.ndarray) -> None:
        _set_leaf(self._opt_state.mu, name, self._put(m))
        _set_leaf(self._opt_state.nu, name, self._put(v))

    def _read_step(self) -> float:
        return float(int(self._opt_state.count))

    def _write_step(self, step: float) -> None:
        count = jax.device_put(jnp.asarray(int(step), jnp.int32), self._jax_device)
        self._opt_state = self._opt_state._replace(count=count)
