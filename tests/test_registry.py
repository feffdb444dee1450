import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nucleuseg.backends as registry
from nucleuseg.backends import (
    available_backends,
    builtin_backends,
    get_backend,
    register_backend,
    registered_backends,
)
from nucleuseg.backends.base import canonical_shapes, init_weights, parameter_count
from nucleuseg.errors import BackendUnavailable, CheckpointError

PLUGIN = '''
import numpy as np
from nucleuseg.backends.base import check_weights, init_weights


class ThresholdNetwork:
    """A framework-free network: foreground = sigmoid(gain * (mean intensity - 0.5))."""

    def __init__(self, config, seed=0, loss="bce_dice"):
        self.config = config
        self.weights = init_weights(config, seed)
        self.gain = 12.0

    def reseed(self, seed):
        pass  # no random streams

    def train_step(self, x, y, learning_rate):
        return self.loss(x, y)

    def predict(self, x):
        p = 1 / (1 + np.exp(-self.gain * (x.mean(axis=-1, keepdims=True) - 0.5)))
        channels = np.zeros(self.config.out_channels, np.float32)
        channels[0] = 1.0
        return (p * channels).astype(np.float32)

    def loss(self, x, y):
        p = np.clip(self.predict(x), 1e-6, 1 - 1e-6)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    def get_weights(self):
        return {k: v.copy() for k, v in self.weights.items()}

    def set_weights(self, weights):
        check_weights(weights, self.config)
        self.weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}

    def get_optimizer_state(self):
        return {"adam.step": np.asarray(0.0, np.float32)}

    def set_optimizer_state(self, state):
        pass


def build(config, seed=0, loss="bce_dice"):
    return ThresholdNetwork(config, seed, loss)
'''


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """An installed-looking distribution exposing backend 'threshold' through the entry point."""
    (tmp_path / "threshold_backend.py").write_text(PLUGIN)
    dist = tmp_path / "threshold_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: threshold-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[nucleuseg.backends]\nthreshold = threshold_backend:build\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_unknown_backend_names_the_registered_ones():
    with pytest.raises(BackendUnavailable, match="no backend named 'caffe'.*torch"):
        get_backend("caffe")


def test_missing_framework_names_the_extra(monkeypatch):
    register_backend("ghost", requires="a_framework_that_is_not_installed", extra="ghost")(
        lambda config, seed=0: None
    )
    try:
        with pytest.raises(BackendUnavailable, match=r'pip install "nucleuseg\[ghost\]"'):
            get_backend("ghost")
        info = {b.name: b for b in available_backends()}["ghost"]
        assert not info.available and info.version is None
    finally:
        registry._REGISTRY.pop("ghost")


def test_builtin_backends_are_registered_without_importing_frameworks():
    code = textwrap.dedent(
        """
        import sys, nucleuseg
        names = [b.name for b in nucleuseg.available_backends()]
        assert {"torch", "keras", "flax", "onnx"} <= set(names), names
        leaked = {"torch", "tensorflow", "jax", "flax", "keras", "onnx", "onnxruntime"}
        leaked &= set(sys.modules)
        assert not leaked, leaked
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_point_backend_drives_a_segmenter(plugin_on_path, tiny_preset, tmp_path):
    from nucleuseg import Segmenter
    from nucleuseg.data import make_synthetic

    assert "threshold" in registered_backends()
    info = {b.name: b for b in available_backends()}["threshold"]
    assert info.source == "entry point"
    seg = Segmenter("threshold", preset=tiny_preset)
    sample = make_synthetic(1, size=48, seed=3, kinds=["fluorescence"])[0]
    labels = seg.predict(sample.image)
    assert labels.shape == sample.shape and labels.dtype == np.int32 and labels.max() > 0
    seg.save(tmp_path / "t.safetensors")
    again = Segmenter.load(tmp_path / "t.safetensors")
    assert again.backend == "threshold"
    assert np.array_equal(again.predict(sample.image), labels)


def test_canonical_shapes_and_parameter_counts(tiny_preset):
    shapes = canonical_shapes(tiny_preset.network)
    assert shapes["enc1.conv1.kernel"] == (3, 3, 3, 4)
    assert shapes["enc3.conv2.kernel"] == (3, 3, 16, 16)
    assert shapes["up2.kernel"] == (2, 2, 16, 8)
    assert shapes["dec1.conv1.kernel"] == (3, 3, 8, 4)
    assert not any(".norm" in name for name in shapes)
    with_norm = canonical_shapes(tiny_preset.network.replace(normalization="batch"))
    assert with_norm["enc1.norm1.mean"] == (4,) and with_norm["dec2.norm2.var"] == (8,)
    # the seed U-Net of the DSB starter notebooks has 1,941,105 parameters
    from nucleuseg.config import get_preset

    assert parameter_count(get_preset("seed").network) == 1_941_105
    weights = init_weights(tiny_preset.network, 0)
    assert set(weights) == set(shapes)


def test_check_weights_reports_missing_extra_misshapen(tiny_preset):
    from nucleuseg.backends.base import check_weights

    weights = init_weights(tiny_preset.network, 0)
    weights.pop("head.bias")
    weights["bogus"] = np.zeros(1, np.float32)
    weights["enc1.conv1.kernel"] = np.zeros((3, 3, 3, 5), np.float32)
    with pytest.raises(CheckpointError, match="missing.*head.bias.*unexpected.*bogus.*misshapen"):
        check_weights(weights, tiny_preset.network)


def test_builtin_backends_in_order_of_preference():
    builtin = builtin_backends()
    assert list(builtin) == ["torch", "keras", "flax", "onnx"]
    assert [(b.framework, b.extra, b.trains) for b in builtin.values()] == [
        ("torch", "torch", True),
        ("tensorflow", "keras", True),
        ("flax", "flax", True),
        ("onnxruntime", "onnx", False),
    ]
    infos = {b.name: b for b in available_backends()}
    for name, backend in builtin.items():
        assert infos[name].source == "builtin" and infos[name].framework == backend.framework
        assert backend.module == f"nucleuseg.backends.{name}_backend"


def test_test_and_doctest_conftests_list_the_registry(monkeypatch):
    import importlib.util
    import runpy
    from pathlib import Path

    from conftest import FRAMEWORKS

    assert FRAMEWORKS == {name: b.framework for name, b in builtin_backends().items()}
    root = Path(__file__).parents[1]
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "tensorflow" else find_spec(name)
    )
    ignored = runpy.run_path(str(root / "conftest.py"))["collect_ignore"]
    ignored = [path for path in ignored if path.startswith("nucleuseg/backends/")]  # not extras
    missing = [  # tensorflow hidden above, and whatever is really not installed here
        f"{b.module.replace('.', '/')}.py"
        for b in builtin_backends().values()
        if b.framework == "tensorflow" or find_spec(b.framework) is None
    ]
    assert ignored == missing and "nucleuseg/backends/keras_backend.py" in ignored
    assert all((root / path).is_file() for path in ignored)


def test_the_default_backend_is_the_first_installed_in_the_registry_order(monkeypatch):
    def installed(*names):
        infos = [registry.BackendInfo(n, n, "1", n in names, "builtin") for n in ("flax", "keras")]
        infos.append(registry.BackendInfo("torch", "torch", None, "torch" in names, "builtin"))
        monkeypatch.setattr(registry, "available_backends", lambda: infos)

    installed("flax", "keras")
    assert registry.default_backend() == "keras"
    installed("flax", "torch")
    assert registry.default_backend() == "torch"
    installed()
    with pytest.raises(
        BackendUnavailable, match=r'no backend installed: pip install "nucleuseg\[torch\]"'
    ):
        registry.default_backend()


def test_the_demo_default_is_a_backend_that_trains(monkeypatch):
    infos = [
        registry.BackendInfo(n, n, "1", n in ("onnx", "flax"), "builtin")
        for n in registry.builtin_backends()
    ]
    monkeypatch.setattr(registry, "available_backends", lambda: infos)
    assert registry.default_backend() == "flax"
    infos[-2] = registry.BackendInfo("flax", "flax", None, False, "builtin")
    assert registry.default_backend() == "onnx"  # predicts a pretrained model
    with pytest.raises(
        BackendUnavailable, match=r"no backend that trains is installed: pip .*\[torch"
    ):
        registry.default_backend(trains=True)


def test_a_factory_without_device_builds_when_no_device_is_asked_for(plugin_on_path, tiny_preset):
    from nucleuseg.backends import build_network

    net = build_network("threshold", tiny_preset.network, seed=0)
    assert net.predict(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 8, 8, 3)


def test_a_network_missing_a_contract_method_is_refused_by_name(tiny_preset):
    from nucleuseg.backends import build_network

    class NoReseed:
        def __init__(self, config, seed=0):
            self.config = config

        def train_step(self, x, y, learning_rate):
            return 0.0

        def predict(self, x):
            return x[..., :1]

    register_backend("half-done", requires="numpy")(NoReseed)
    try:
        with pytest.raises(BackendUnavailable, match=r"NoReseed without loss, reseed, get_weights"):
            build_network("half-done", tiny_preset.network)
    finally:
        registry._REGISTRY.pop("half-done")
