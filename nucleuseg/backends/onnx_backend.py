"""The ONNX backend: the canonical U-Net as an ONNX graph, run by ONNX Runtime; inference only.

Imported only when the ``"onnx"`` backend is first asked for; it needs the ``onnx`` extra
(``pip install "nucleuseg[onnx]"``: the ``onnx`` package, which builds the graph, and
``onnxruntime``, which runs it) and no deep-learning framework.

:func:`build_onnx_model` writes the graph from canonical weights with ``onnx.helper``, the same
operations as the PyTorch reference network (:mod:`nucleuseg.backends.torch_backend`) in inference
mode: 3x3 convolutions, batch norm with its running statistics, ELU or ReLU, 2x2 max pooling,
transposed-convolution or nearest-neighbour upsampling, ``[upsampled, skip]`` concatenation, the
1x1 head and the sigmoid (dropout is the identity at inference, so the graph has none). It is the
one graph builder: :class:`OnnxNetwork` runs it and :func:`nucleuseg.export.export_onnx` writes it
to a file.

The graph
---------
- input ``image``: ``float32`` ``(batch, height, width, in_channels)``, NHWC as every backend
  takes it, normalised as :mod:`nucleuseg.inference` normalises images; ``height`` and ``width``
  are free (any multiple of ``2 ** (depth - 1)``), so one graph serves every tile size;
- output ``probabilities``: ``float32`` ``(batch, height, width, out_channels)``, the sigmoid
  probability channels (for the default presets: foreground, boundary, ...).

Opset :data:`OPSET` and IR version :data:`IR_VERSION`: older than the newest, so that the file
runs in older runtimes too (every ONNX Runtime the extra installs, 1.18 or later, runs it).

The network is built once per set of weights and serves every input shape; ONNX Runtime uses
its default of one intra-op thread per physical core, as PyTorch does, and its threads sleep
between runs instead of spinning, leaving the cores to post-processing. It cannot train:
:meth:`OnnxNetwork.train_step` raises :class:`~nucleuseg.errors.TrainingUnsupported` naming the
backends that train. Train with one of them, save the model file, and load it with
``Segmenter.load(path, backend="onnx")``.

Examples
--------
>>> from nucleuseg.config import get_preset
>>> config = get_preset("seed").network.replace(depth=2, base_filters=4)
>>> net = OnnxNetwork(config, seed=0)
>>> net.predict(np.zeros((1, 16, 24, 3), np.float32)).shape
(1, 16, 24, 1)
>>> model = build_onnx_model(config, net.get_weights())
>>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
(['image'], ['probabilities'])
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from nucleuseg.backends import builtin_backends, register_backend
from nucleuseg.backends.base import BN_EPSILON, BaseNetwork, check_weights
from nucleuseg.backends.device import DeviceSpec
from nucleuseg.config import UNetConfig
from nucleuseg.errors import TrainingUnsupported

#: The ONNX operator set the graph uses.
OPSET = 17
#: The ONNX IR version of the model (the one that goes with :data:`OPSET`).
IR_VERSION = 8
#: Names of the graph's input and outputs.
INPUT, OUTPUT, LOGITS = "image", "probabilities", "logits"


class _Graph:
    """Nodes and initializers of one graph, with unique names."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv(self, x: str, prefix: str, pad: int) -> str:
        """``prefix.kernel`` (HWIO) as an ONNX convolution (OIHW), with ``prefix.bias``."""
        kernel = self.weights[f"{prefix}.kernel"].transpose(3, 2, 0, 1)
        w = self.constant(f"{prefix}.kernel", kernel)
        b = self.constant(f"{prefix}.bias", self.weights[f"{prefix}.bias"])
        k = kernel.shape[-1]
        return self.node("Conv", [x, w, b], prefix, kernel_shape=[k, k], pads=[pad] * 4)

    def block(self, x: str, prefix: str, config: UNetConfig) -> str:
        """Two 3x3 convolutions, each followed by optional batch norm and the activation."""
        for k in (1, 2):
            x = self.conv(x, f"{prefix}.conv{k}", pad=1)
            if config.normalization == "batch":
                norm = f"{prefix}.norm{k}"
                parts = [
                    self.constant(f"{norm}.{part}", self.weights[f"{norm}.{part}"])
                    for part in ("scale", "bias", "mean", "var")
                ]
                x = self.node("BatchNormalization", [x, *parts], norm, epsilon=BN_EPSILON)
            act = "Elu" if config.activation == "elu" else "Relu"
            x = self.node(act, [x], f"{prefix}.act{k}")
        return x

    def upsample(self, x: str, level: int, config: UNetConfig) -> str:
        name = f"up{level}"
        if config.upsampling == "transpose":
            kernel = self.weights[f"{name}.kernel"].transpose(2, 3, 0, 1)  # HWIO -> IOHW
            w = self.constant(f"{name}.kernel", kernel)
            b = self.constant(f"{name}.bias", self.weights[f"{name}.bias"])
            return self.node("ConvTranspose", [x, w, b], name, kernel_shape=[2, 2], strides=[2, 2])
        scales = self.constant(f"{name}.scales", np.array([1, 1, 2, 2], np.float32))
        return self.node(
            "Resize",
            [x, "", scales],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )


def build_onnx_model(
    config: UNetConfig, weights: dict[str, np.ndarray], *, logits: bool = False
) -> onnx.ModelProto:
    """The U-Net of ``config`` with canonical ``weights`` as an ONNX model (see the module
    docstring for its input, output and operations).

    Parameters
    ----------
    config : UNetConfig
    weights : dict
        Canonical weights (:mod:`nucleuseg.backends.base`), checked against ``config``.
    logits : bool
        Also output the head's ``logits`` (NHWC, before the sigmoid), as the backend's
        :meth:`~OnnxNetwork.loss` needs them.

    Returns
    -------
    onnx.ModelProto
        Accepted by ``onnx.checker.check_model``; the weights are its initializers.

    Raises
    ------
    CheckpointError
        If ``weights`` are not the canonical ones of ``config``.

    Examples
    --------
    >>> from nucleuseg.backends.base import init_weights
    >>> config = UNetConfig(depth=2, base_filters=4, out_channels=2)
    >>> model = build_onnx_model(config, init_weights(config, seed=0))
    >>> onnx.checker.check_model(model)
    >>> [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    ['batch', 'height', 'width', 3]
    """
    check_weights(weights, config)
    graph = _Graph({name: np.asarray(value, np.float32) for name, value in weights.items()})
    x = graph.node("Transpose", [INPUT], "nchw", perm=[0, 3, 1, 2])
    skips = []
    for level in range(1, config.depth + 1):
        if level > 1:
            x = graph.node("MaxPool", [x], f"pool{level}", kernel_shape=[2, 2], strides=[2, 2])
        x = graph.block(x, f"enc{level}", config)
        skips.append(x)
    for level in range(config.depth - 1, 0, -1):
        x = graph.upsample(x, level, config)
        x = graph.node("Concat", [x, skips[level - 1]], f"cat{level}", axis=1)
        x = graph.block(x, f"dec{level}", config)
    head = graph.conv(x, "head", pad=0)
    probs = graph.node("Sigmoid", [head], "sigmoid")
    graph.node("Transpose", [probs], OUTPUT, perm=[0, 2, 3, 1])
    outputs = [(OUTPUT, config.out_channels)]
    if logits:
        graph.node("Transpose", [head], LOGITS, perm=[0, 2, 3, 1])
        outputs.append((LOGITS, config.out_channels))
    onnx_graph = helper.make_graph(
        graph.nodes,
        "nucleuseg_unet",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, _nhwc(config.in_channels))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, _nhwc(c)) for n, c in outputs],
        graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        producer_name="nucleuseg",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        doc_string=(
            f"nucleuseg U-Net (depth {config.depth}, {config.base_filters} base filters, "
            f"{config.activation}, normalization {config.normalization}, upsampling "
            f"{config.upsampling}): normalised NHWC image in, sigmoid probabilities out"
        ),
    )
    return model


def _nhwc(channels: int) -> list:
    return ["batch", "height", "width", channels]


def training_backends() -> list[str]:
    """The built-in backends that train, in order of preference.

    Examples
    --------
    >>> training_backends()
    ['torch', 'keras', 'flax']
    """
    return [name for name, backend in builtin_backends().items() if backend.trains]


def _cannot_train(what: str) -> TrainingUnsupported:
    return TrainingUnsupported(
        f"the onnx backend runs inference only and cannot {what}; train with a backend that "
        f"trains ({', '.join(training_backends())}), save the model file and load it with "
        "backend='onnx'"
    )


class OnnxNetwork(BaseNetwork):
    """The ``"onnx"`` backend's :class:`~nucleuseg.backends.base.Network`: the U-Net for
    ``config`` as an ONNX Runtime session on the CPU, initialised from ``seed``.

    Predicts, computes the loss in inference mode and moves canonical weights in and out; the
    training methods (:meth:`train_step`, :meth:`set_optimizer_state`) raise
    :class:`~nucleuseg.errors.TrainingUnsupported`. The session is built on the first
    prediction after the weights change and serves every input shape.

    Examples
    --------
    >>> from nucleuseg.config import get_preset
    >>> net = OnnxNetwork(get_preset("seed").network.replace(depth=2, base_filters=4))
    >>> x = np.zeros((1, 8, 8, 3), np.float32)
    >>> net.train_step(x, x[..., :1], 1e-3)
    Traceback (most recent call last):
    ...
    nucleuseg.errors.TrainingUnsupported: the onnx backend runs inference only and cannot train; ...
    """

    framework = "onnxruntime"

    def _build(self) -> None:
        self._weights: dict[str, np.ndarray] = {}
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()  # block-wise prediction calls predict from many threads

    def _read_weight(self, name: str) -> np.ndarray:
        return self._weights[name].copy()

    def _write_weight(self, name: str, value: np.ndarray) -> None:
        self._weights[name] = np.array(value, np.float32)
        self._session = None

    def _read_step(self) -> float:
        return 0.0

    def session(self) -> ort.InferenceSession:
        """The ONNX Runtime session of the current weights (built on first use; running it from
        several threads at once is safe)."""
        with self._lock:
            return self._session or self._new_session()

    def _new_session(self) -> ort.InferenceSession:
        model = build_onnx_model(self.config, self._weights, logits=True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 0  # ONNX Runtime's default: one per physical core
        # Threads that wait between runs sleep rather than spin: spinning threads took the
        # cores from the post-processing that follows each prediction (1.3 to 1.7x slower
        # end to end on a 1024x1024 image, measured on 2 cores shared with other work).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no native log lines on the console
        self._session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return self._session

    def _run(self, output: str, x: np.ndarray) -> np.ndarray:
        feed = {INPUT: np.ascontiguousarray(x, np.float32)}
        return self.session().run([output], feed)[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._run(OUTPUT, x)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        logits = self._run(LOGITS, x).astype(np.float64)
        return float(self.loss_from_logits(logits, np.asarray(y, np.float64), self.loss_kind))

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        raise _cannot_train("train")

    def set_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        raise _cannot_train("resume training (set optimizer state)")


@register_backend("onnx", requires="onnxruntime", extra="onnx")
def build(
    config: UNetConfig,
    seed: int = 0,
    loss: str = "bce_dice",
    device: DeviceSpec | str | int | None = None,
) -> OnnxNetwork:
    """Build the ONNX Runtime U-Net for ``config``, initialised from ``seed``, on the CPU (the
    only device it runs on; ``device="gpu"`` is refused)."""
    return OnnxNetwork(config, seed, loss, device)
