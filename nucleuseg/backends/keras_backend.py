"""The Keras backend: the canonical U-Net in Keras 3 on TensorFlow, NHWC, one compiled step.

Imported only when the ``"keras"`` backend is first asked for. Keras already keeps convolution
kernels in HWIO, so weights pass through unchanged, except the transposed convolution, whose Keras
kernel is ``(h, w, out, in)`` and is swapped to the canonical ``(h, w, in, out)`` here.

The training step (forward, loss, gradients and the Adam update) is one ``tf.function``; the
learning rate is an argument tensor, so changing it never retraces. Adam is written out here
rather than taken from ``keras.optimizers.Adam``, whose epsilon is added to the bias-uncorrected
root of the second moment; this one adds it after bias correction, as PyTorch and optax do, so a
step moves the weights by the same amount in every backend.

Batch norm follows Keras: the running variance is updated with the biased batch variance
(PyTorch uses the unbiased one; the two differ by a factor ``n / (n - 1)`` on the new-batch part).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import numpy as np

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
from nucleuseg.errors import BackendUnavailable, ConfigError

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to ``/dev/null`` for the block.

    TensorFlow's C++ runtime prints start-up notices (oneDNN on, no CUDA driver found, a failed
    ``cuInit`` on machines without a GPU) before it reads ``TF_CPP_MIN_LOG_LEVEL``. They are hidden
    while TensorFlow starts unless the user set ``TF_CPP_MIN_LOG_LEVEL`` to ``0`` or ``1``. Python
    exceptions are unaffected: they propagate and print after the descriptor is restored.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()  # where the runtime looks for CUDA and logs about it


if keras.backend.backend() != "tensorflow":
    raise BackendUnavailable(
        f"the keras backend needs Keras on TensorFlow, but KERAS_BACKEND is "
        f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras"
    )

#: Compile the steps with XLA (``tf.function(jit_compile=True)``). Off by default: on x86 CPUs
#: TensorFlow's own graph executor runs this network's convolutions through oneDNN and trains
#: it about 1.8x faster than the XLA build does (measured with ``benchmarks/train_throughput.py``).
JIT_COMPILE = False

LOSSES = ("bce", "bce_dice")

_KERAS_PART = {
    "kernel": "kernel",
    "bias": "bias",
    "scale": "gamma",
    "mean": "moving_mean",
    "var": "moving_variance",
}


def _layer_and_attribute(name: str) -> tuple[str, str]:
    """Canonical name -> (Keras layer name, variable attribute): ``enc1.norm2.mean`` ->
    (``enc1_norm2``, ``moving_mean``)."""
    *path, part = name.split(".")
    attribute = _KERAS_PART[part]
    if part == "bias" and path[-1].startswith("norm"):
        attribute = "beta"
    return "_".join(path), attribute


def _is_up_kernel(name: str) -> bool:
    return name.startswith("up") and name.endswith(".kernel")


def _to_canonical(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.float32)
    if _is_up_kernel(name):
        array = array.transpose(0, 1, 3, 2)  # (h, w, out, in) -> (h, w, in, out)
    return np.array(array, np.float32, order="C", copy=True)


def _from_canonical(name: str, array: np.ndarray) -> np.ndarray:
    return _to_canonical(name, array)  # swapping the last two axes is its own inverse


def _block(x, prefix: str, cout: int, dropout: float, config: UNetConfig):
    """Two 3x3 convolutions, each followed by optional batch norm and the activation; dropout
    after the first, as in every backend."""
    layers = keras.layers
    for k in (1, 2):
        x = layers.Conv2D(cout, 3, padding="same", name=f"{prefix}_conv{k}")(x)
        if config.normalization == "batch":
            x = layers.BatchNormalization(
                momentum=1.0 - BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{prefix}_norm{k}"
            )(x)
        x = layers.Activation(config.activation, name=f"{prefix}_act{k}")(x)
        if k == 1 and dropout > 0:
            # seeded for real by KerasNetwork.reseed
            x = layers.Dropout(dropout, seed=0, name=f"{prefix}_drop")(x)
    return x


def build_model(config: UNetConfig) -> keras.Model:
    """The canonical U-Net as a Keras functional model returning logits (NHWC, any size that is
    a multiple of ``config.multiple``)."""
    layers = keras.layers
    f = (0, *config.filters)
    inputs = keras.Input((None, None, config.in_channels), name="image")
    x = inputs
    skips = []
    for level in range(1, config.depth + 1):
        if level > 1:
            x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = _block(x, f"enc{level}", f[level], config.dropout[level - 1], config)
        skips.append(x)
    for level in range(config.depth - 1, 0, -1):
        if config.upsampling == "transpose":
            x = layers.Conv2DTranspose(f[level], 2, strides=2, name=f"up{level}")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"resize{level}")(x)
        x = layers.Concatenate(name=f"concat{level}")([x, skips[level - 1]])
        x = _block(x, f"dec{level}", f[level], config.dropout[level - 1], config)
    logits = layers.Conv2D(config.out_channels, 1, name="head")(x)
    return keras.Model(inputs, logits, name="unet")


def loss_from_logits(logits: tf.Tensor, y: tf.Tensor, kind: str) -> tf.Tensor:
    """The contract's loss (NHWC tensors)."""
    axes = (0, 1, 2)
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits), axes)
    if kind == "bce":
        return tf.reduce_mean(bce)
    p = tf.sigmoid(logits)
    inter = tf.reduce_sum(p * y, axes)
    dice = (2.0 * inter + DICE_SMOOTH) / (
        tf.reduce_sum(p, axes) + tf.reduce_sum(y, axes) + DICE_SMOOTH
    )
    return tf.reduce_mean(bce + 1.0 - dice)


@register_backend("keras", requires="tensorflow", extra="keras")
class KerasNetwork:
    """The ``"keras"`` backend's :class:`~nucleuseg.backends.base.Network`: the Keras U-Net for
    ``config``, initialised from ``seed`` (registered as the backend's factory).

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> net = KerasNetwork(get_preset("seed").network.replace(depth=2, base_filters=2), seed=0)
    >>> net.predict(np.zeros((1, 8, 8, 3), np.float32)).shape
    (1, 8, 8, 1)
    """

    def __init__(self, config: UNetConfig, seed: int = 0, loss: str = "bce_dice") -> None:
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.config = config
        self.loss_kind = loss
        self.model = build_model(config)
        self._names = list(canonical_shapes(config))
        self._variables = {
            name: getattr(self.model.get_layer(layer), attribute)
            for name, (layer, attribute) in ((n, _layer_and_attribute(n)) for n in self._names)
        }
        self._trainable = [n for n in self._names if is_trainable(n)]
        train_vars = [self._variables[n] for n in self._trainable]
        self._m = [tf.Variable(tf.zeros(v.shape), trainable=False) for v in train_vars]
        self._v = [tf.Variable(tf.zeros(v.shape), trainable=False) for v in train_vars]
        self._step = tf.Variable(0.0, trainable=False)
        self._dropouts = [
            layer for layer in self.model.layers if isinstance(layer, keras.layers.Dropout)
        ]
        self.set_weights(init_weights(config, seed))
        self.reseed(seed)
        # One trace serves every batch and image size (no retracing as tile shapes change).
        images = tf.TensorSpec([None, None, None, config.in_channels], tf.float32)
        targets = tf.TensorSpec([None, None, None, config.out_channels], tf.float32)
        rate = tf.TensorSpec([], tf.float32)
        compiled = {"jit_compile": JIT_COMPILE}
        self._train = tf.function(
            self._train_step, input_signature=[images, targets, rate], **compiled
        )
        self._predict = tf.function(self._predict_step, input_signature=[images], **compiled)
        self._loss = tf.function(self._loss_step, input_signature=[images, targets], **compiled)

    # -- compiled steps ---------------------------------------------------------------------

    def _train_step(self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor) -> tf.Tensor:
        train_vars = [self._variables[n] for n in self._trainable]
        with tf.GradientTape() as tape:
            loss = loss_from_logits(self.model(x, training=True), y, self.loss_kind)
        grads = tape.gradient(loss, train_vars)
        beta1, beta2 = ADAM_BETAS
        step = self._step.assign_add(1.0)
        step_size = lr / (1.0 - tf.pow(beta1, step))
        root_correction = tf.sqrt(1.0 - tf.pow(beta2, step))
        for var, grad, m, v in zip(train_vars, grads, self._m, self._v, strict=True):
            m_new = m.assign(beta1 * m + (1.0 - beta1) * grad)
            v_new = v.assign(beta2 * v + (1.0 - beta2) * tf.square(grad))
            var.assign_sub(step_size * m_new / (tf.sqrt(v_new) / root_correction + ADAM_EPSILON))
        return loss

    def _predict_step(self, x: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(self.model(x, training=False))

    def _loss_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return loss_from_logits(self.model(x, training=False), y, self.loss_kind)

    # -- the Network protocol ---------------------------------------------------------------

    def reseed(self, seed: int) -> None:
        """Seed the dropout random streams (called at every epoch start)."""
        states = np.random.SeedSequence(seed).generate_state(max(1, len(self._dropouts)))
        for layer, state in zip(self._dropouts, states, strict=False):
            layer.seed_generator.state.assign(np.array([state, 0], np.int64))

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        loss = self._train(
            tf.constant(x, tf.float32),
            tf.constant(y, tf.float32),
            tf.constant(learning_rate, tf.float32),
        )
        return float(loss)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(tf.constant(x, tf.float32)), np.float32)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._loss(tf.constant(x, tf.float32), tf.constant(y, tf.float32)))

    def get_weights(self) -> dict[str, np.ndarray]:
        return {n: _to_canonical(n, self._variables[n].numpy()) for n in self._names}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        check_weights(weights, self.config)
        for name in self._names:
            self._variables[name].assign(_from_canonical(name, weights[name]))

    def get_optimizer_state(self) -> dict[str, np.ndarray]:
        step = float(self._step.numpy())
        state: dict[str, np.ndarray] = {}
        if step > 0:
            for name, m, v in zip(self._trainable, self._m, self._v, strict=True):
                state[f"adam.m.{name}"] = _to_canonical(name, m.numpy())
                state[f"adam.v.{name}"] = _to_canonical(name, v.numpy())
        state["adam.step"] = np.asarray(step, np.float32)
        return state

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._step.assign(float(state.get("adam.step", 0.0)))
        for name, m, v in zip(self._trainable, self._m, self._v, strict=True):
            if f"adam.m.{name}" in state:
                m.assign(_from_canonical(name, state[f"adam.m.{name}"]))
                v.assign(_from_canonical(name, state[f"adam.v.{name}"]))
