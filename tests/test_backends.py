"""The backend contract, checked for every installed backend (each skipped with a reason if missing)."""

import numpy as np
import pytest

from conftest import every_backend
from nucleuseg.backends import Network, build_network
from nucleuseg.backends.base import canonical_shapes, init_weights
from nucleuseg.config import get_preset
from nucleuseg.errors import ConfigError
from nucleuseg.masks import make_targets


def _batch(config, n=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, config.in_channels), dtype=np.float32)
    labels = np.zeros((n, size, size), np.int32)
    labels[:, 4:14, 4:14] = 1
    labels[:, 14:26, 10:24] = 2
    y = np.stack([make_targets(lab, config.out_channels) for lab in labels])
    return x, y


@every_backend
@pytest.mark.parametrize("preset", ["seed", "default"])
def test_weights_round_trip_and_shapes(backend, preset):
    config = get_preset(preset).network.replace(base_filters=4, depth=3)
    net = build_network(backend, config, seed=1)
    weights = net.get_weights()
    shapes = canonical_shapes(config)
    assert {k: v.shape for k, v in weights.items()} == shapes
    assert all(v.dtype == np.float32 for v in weights.values())
    # initial weights are the framework-independent ones
    reference = init_weights(config, 1)
    assert all(np.array_equal(weights[k], reference[k]) for k in shapes)
    changed = {k: v + 0.01 for k, v in weights.items()}
    net.set_weights(changed)
    again = net.get_weights()
    assert all(np.allclose(again[k], changed[k]) for k in shapes)


@every_backend
def test_predict_shape_range_and_determinism(backend, tiny_preset):
    net = build_network(backend, tiny_preset.network, seed=0)
    x, _ = _batch(tiny_preset.network, n=3, size=48)
    p = net.predict(x)
    assert p.shape == (3, 48, 48, 3) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    assert np.array_equal(p, net.predict(x))


def test_train_steps_lower_the_loss_on_a_fixed_batch(backend, tiny_preset):
    net = build_network(backend, tiny_preset.network, seed=0)
    x, y = _batch(tiny_preset.network)
    before = net.loss(x, y)
    for _ in range(15):
        net.train_step(x, y, 3e-3)
    assert net.loss(x, y) < before


def test_optimizer_state_round_trip_continues_identically(backend, tiny_preset):
    config = tiny_preset.network.replace(dropout=(0.0,))
    x, y = _batch(config)
    a = build_network(backend, config, seed=0)
    for _ in range(2):
        a.train_step(x, y, 1e-3)
    weights, state = a.get_weights(), a.get_optimizer_state()
    assert float(state["adam.step"]) == 2
    b = build_network(backend, config, seed=5)
    b.set_weights(weights)
    b.set_optimizer_state(state)
    a.train_step(x, y, 1e-3)
    b.train_step(x, y, 1e-3)
    wa, wb = a.get_weights(), b.get_weights()
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-5


SYNTHETIC_FLOOR = 0.25
"""DSB score every backend must reach after 150 steps on synthetic fluorescence (observed about
0.38 for torch and keras, 0.46 for flax)."""


def test_short_synthetic_run_reaches_the_floor(backend):
    from nucleuseg import Segmenter
    from nucleuseg.data import make_synthetic

    preset = get_preset("default")
    preset = preset.replace(
        network=preset.network.replace(depth=3, base_filters=8, dropout=(0.0,)),
        training=preset.training.replace(
            crop=64, batch_size=8, steps_per_epoch=150, learning_rate=3e-3
        ),
    )
    train = make_synthetic(24, size=96, seed=0, kinds=["fluorescence"])
    test = make_synthetic(6, size=96, seed=1, kinds=["fluorescence"])
    seg = Segmenter(backend, preset=preset, seed=0)
    seg.fit(train, epochs=1, progress=False)
    assert seg.evaluate(test, progress=False).score > SYNTHETIC_FLOOR


@every_backend
def test_starting_a_backend_prints_no_native_log_lines(backend):
    """Building a network and predicting prints no native start-up notices (TensorFlow's C++
    runtime writes several, such as a failed ``cuInit`` on CPU machines, before it reads its log
    level). On this project's CI machines the backends print nothing at all."""
    import os
    import re
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from nucleuseg.backends import build_network\n"
        "from nucleuseg.config import get_preset\n"
        "config = get_preset('seed').network.replace(depth=2, base_filters=2)\n"
        f"net = build_network({backend!r}, config)\n"
        "net.predict(np.zeros((1, 8, 8, 3), np.float32))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    native = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN custom operations", re.M)
    assert not native.search(done.stderr), done.stderr


@pytest.mark.parametrize("p", [0.1, 0.3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_dropout_drops_p_and_keeps_the_mean(p, channels_last):
    torch = pytest.importorskip("torch", reason='pip install "nucleuseg[torch]"')
    from nucleuseg.backends.torch_backend import _Dropout

    x = torch.ones(4, 8, 64, 64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    drop = _Dropout(p, torch.Generator().manual_seed(0)).train()
    y = drop(x)
    assert y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.01  # 131,072 draws: the standard error is below 0.0013
    assert abs(y.mean().item() - 1.0) < 0.02
    # masks differ from call to call and element to element, and eval mode is the identity
    assert not torch.equal(drop(x) == 0, y == 0)
    assert torch.equal(drop.eval()(x), x)


@every_backend
def test_every_backend_is_a_network_with_reseed(backend, tiny_preset):
    net = build_network(backend, tiny_preset.network)
    assert isinstance(net, Network)
    assert callable(net.reseed) and net.reseed(3) is None


@every_backend
@pytest.mark.parametrize("loss", ["dice", "BCE", ""])
def test_an_unknown_loss_name_is_refused(backend, tiny_preset, loss):
    with pytest.raises(ConfigError, match=r"loss must be one of \('bce', 'bce_dice'\), got"):
        build_network(backend, tiny_preset.network, loss=loss)


def test_torch_leaves_the_global_random_state_alone(tiny_preset):
    """The torch network draws dropout masks from its own generator: building, reseeding,
    training and predicting neither read nor seed PyTorch's global random state, and its
    stream repeats after a reseed however much the global generator was used in between."""
    torch = pytest.importorskip("torch", reason='pip install "nucleuseg[torch]"')
    config = tiny_preset.network.replace(dropout=(0.3,))
    x, y = _batch(config)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    net = build_network("torch", config, seed=0)
    net.reseed(5)
    first = [net.train_step(x, y, 0.0) for _ in range(3)]
    net.predict(x)
    net.loss(x, y)
    assert torch.equal(torch.random.get_rng_state(), before)

    torch.rand(1000)  # the global stream moves; the network's does not follow it
    net.reseed(5)
    assert [net.train_step(x, y, 0.0) for _ in range(3)] == first
    assert len(set(first)) == 3  # dropout masks differ from step to step
