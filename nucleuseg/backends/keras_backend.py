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
from nucleuseg.backends.base import ADAM_BETAS, ADAM_EPSILON, BN_EPSILON, BN_MOMENTUM, BaseNetwork
from nucleuseg.backends.threads import usable_cores
from nucleuseg.config import UNetConfig
from nucleuseg.errors import BackendUnavailable

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

    if tf.config.threading.get_intra_op_parallelism_threads() == 0 and usable_cores() < (
        os.cpu_count() or 1
    ):
        # TensorFlow sizes its pool from the machine's cores, not the process's share of them.
        with contextlib.suppress(RuntimeError):  # the runtime had already started
            tf.config.threading.set_intra_op_parallelism_threads(usable_cores())
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


@register_backend("keras", requires="tensorflow", extra="keras")
class KerasNetwork(BaseNetwork):
    """The ``"keras"`` backend's :class:`~nucleuseg.backends.base.Network`: the Keras U-Net for
    ``config``, initialised from ``seed``, on ``device`` (see :mod:`nucleuseg.backends.device`;
    by default the first GPU TensorFlow sees, else the CPU); registered as the backend's factory.

    Variables are created, and the compiled steps run, inside a ``tf.device`` scope of that
    device.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> config = get_preset("seed").network.replace(depth=2, base_filters=2)
    >>> net = KerasNetwork(config, seed=0, device="cpu")
    >>> net.device, net.predict(np.zeros((1, 8, 8, 3), np.float32)).shape
    (DeviceSpec(kind='cpu', index=0), (1, 8, 8, 1))
    """

    framework = "tensorflow"

    _sigmoid = staticmethod(tf.sigmoid)
    _sum = staticmethod(tf.reduce_sum)
    _mean = staticmethod(tf.reduce_mean)

    @staticmethod
    def _bce_with_logits(z: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)

    @staticmethod
    def _visible_gpus() -> int:
        return len(tf.config.list_physical_devices("GPU"))

    def _build(self) -> None:
        config = self.config
        gpu = self.device.kind == "gpu"
        self._tf_device = f"/GPU:{self.device.index}" if gpu else "/CPU:0"
        with tf.device(self._tf_device):
            self.model = build_model(config)
            self._variables = {
                name: getattr(self.model.get_layer(layer), attribute)
                for name, (layer, attribute) in ((n, _layer_and_attribute(n)) for n in self._names)
            }
            self._moments = {
                name: (self._zeros(name), self._zeros(name)) for name in self._trainable
            }
            self._step = tf.Variable(0.0, trainable=False)
        self._dropouts = [
            layer for layer in self.model.layers if isinstance(layer, keras.layers.Dropout)
        ]
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

    def _zeros(self, name: str) -> tf.Variable:
        return tf.Variable(tf.zeros(self._variables[name].shape), trainable=False)

    # -- compiled steps ---------------------------------------------------------------------

    def _train_step(self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor) -> tf.Tensor:
        train_vars = [self._variables[n] for n in self._trainable]
        with tf.GradientTape() as tape:
            loss = self.loss_from_logits(self.model(x, training=True), y, self.loss_kind)
        grads = tape.gradient(loss, train_vars)
        beta1, beta2 = ADAM_BETAS
        step = self._step.assign_add(1.0)
        step_size = lr / (1.0 - tf.pow(beta1, step))
        root_correction = tf.sqrt(1.0 - tf.pow(beta2, step))
        for name, var, grad in zip(self._trainable, train_vars, grads, strict=True):
            m, v = self._moments[name]
            m_new = m.assign(beta1 * m + (1.0 - beta1) * grad)
            v_new = v.assign(beta2 * v + (1.0 - beta2) * tf.square(grad))
            var.assign_sub(step_size * m_new / (tf.sqrt(v_new) / root_correction + ADAM_EPSILON))
        return loss

    def _predict_step(self, x: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(self.model(x, training=False))

    def _loss_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self.loss_from_logits(self.model(x, training=False), y, self.loss_kind)

    # -- the Network protocol ---------------------------------------------------------------

    def reseed(self, seed: int) -> None:
        """Seed the dropout random streams (called at every epoch start)."""
        states = np.random.SeedSequence(seed).generate_state(max(1, len(self._dropouts)))
        for layer, state in zip(self._dropouts, states, strict=False):
            layer.seed_generator.state.assign(np.array([state, 0], np.int64))

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        with tf.device(self._tf_device):
            loss = self._train(
                tf.constant(x, tf.float32),
                tf.constant(y, tf.float32),
                tf.constant(learning_rate, tf.float32),
            )
        return float(loss)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with tf.device(self._tf_device):
            probs = self._predict(tf.constant(x, tf.float32))
        return np.asarray(probs, np.float32)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        with tf.device(self._tf_device):
            return float(self._loss(tf.constant(x, tf.float32), tf.constant(y, tf.float32)))

    def _read_weight(self, name: str) -> np.ndarray:
        return _to_canonical(name, self._variables[name].numpy())

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        self._variables[name].assign(_from_canonical(name, value))

    def _read_moments(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        m, v = self._moments[name]
        return _to_canonical(name, m.numpy()), _to_canonical(name, v.numpy())

    def _write_moments(self, name: str, m: np.ndarray, v: np.ndarray) -> None:
        for variable, value in zip(self._moments[name], (m, v), strict=True):
            variable.assign(_from_canonical(name, value))

    def _read_step(self) -> float:
        return float(self._step.numpy())

    def _write_step(self, step: float) -> None:
        self._step.assign(step)
