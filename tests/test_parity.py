"""Cross-framework parity: the same canonical weights give the same numbers in every backend.

Each test compares a pair of backends and skips, with the reason, when either framework is
missing (so with fewer than two frameworks installed every test here skips). Networks are the
``seed`` and ``default`` presets, and ``default`` with batch norm, at reduced size (depth 3, 4
base filters, 32x32 inputs) without dropout, loaded with random weights (not just the initial
ones) and non-trivial batch-norm running statistics. A numpy transcription of the contract checks
each backend on its own, so the definitions (padding, the transposed convolution's kernel
orientation, concatenation order, batch norm) are tested even with one framework installed.

What is equal, and to what tolerance:

- inference probabilities: max abs difference <= 1e-4 (observed <= 4e-6);
- the loss in inference mode and the training-mode loss a step returns: relative 1e-4
  (observed <= 6e-7);
- the gradients, seen as Adam's first moment after one step: <= 1e-5 * max |m| (observed
  <= 1.4e-6 * max |m|);
- trainable weights after one Adam step: <= 1e-5 (observed <= 2.2e-6), except the biases of
  convolutions followed by batch norm. In training mode batch norm subtracts the batch mean, so
  those biases have an exact-zero gradient; each framework returns round-off (~1e-9) instead, and
  Adam's first step divides it by its own magnitude plus epsilon (1e-7), moving the bias by an
  arbitrary amount up to the learning rate. For them we check that the gradient is ~0 in every
  backend and the move is at most the learning rate (observed differences up to 6e-4 at
  lr = 1e-3);
- the running mean after a step: <= 1e-5 (observed <= 1.2e-7);
- the running variance after a step: PyTorch updates it with the unbiased batch variance,
  Keras and Flax with the biased one, so ``torch = keras + momentum * batch_var / (n - 1)`` with
  ``n`` the pixels in the batch at that level (observed differences before correction up to
  2.1e-3, after correction <= 4e-7). Keras and Flax agree directly (<= 4e-7).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import backend_or_skip, every_backend, random_weights
from nucleuseg.backends import get_backend
from nucleuseg.backends.base import (
    BN_EPSILON,
    BN_MOMENTUM,
    canonical_shapes,
    is_trainable,
)
from nucleuseg.checkpoint import load_model, save_model
from nucleuseg.config import get_preset
from nucleuseg.postprocess import to_instances

PAIRS = [("torch", "keras"), ("torch", "flax"), ("keras", "flax")]
# name -> (preset, network changes); "batchnorm" is the default recipe with batch norm on
PRESETS = {
    "seed": ("seed", {}),
    "default": ("default", {}),
    "batchnorm": ("default", {"normalization": "batch"}),
}
SIZE, BATCH, LR = 32, 2, 1e-3


def _preset(name: str):
    preset_name, changes = PRESETS[name]
    preset = get_preset(preset_name)
    network = preset.network.replace(depth=3, base_filters=4, dropout=(0.0,), **changes)
    return preset.replace(network=network)


def _batch(config, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, SIZE, SIZE, config.in_channels), dtype=np.float32)
    y = (rng.random((BATCH, SIZE, SIZE, config.out_channels)) > 0.7).astype(np.float32)
    return x, y


def _native_parameter_count(name: str, net) -> int:
    """Trainable parameters as the framework itself counts them."""
    if name == "torch":
        return sum(p.numel() for p in net.model.parameters() if p.requires_grad)
    if name == "keras":
        return sum(int(np.prod(v.shape)) for v in net.model.trainable_weights)
    import jax

    return sum(leaf.size for leaf in jax.tree.leaves(net.variables["params"]))


@pytest.fixture(scope="module")
def outcome():
    """``outcome(preset, backend)``: everything the tests compare, computed once per pair."""
    cache: dict[tuple[str, str], dict] = {}

    def run(preset_name: str, name: str) -> dict:
        key = (preset_name, name)
        if key not in cache:
            preset = _preset(preset_name)
            config = preset.network
            weights = random_weights(config)
            x, y = _batch(config)
            net = get_backend(name)(config, 0, loss=preset.training.loss)
            net.set_weights(weights)
            probs = net.predict(x)
            result = {
                "preset": preset,
                "initial": weights,
                "probs": probs,
                "loss": net.loss(x, y),
                "count": _native_parameter_count(name, net),
                "net": net,
            }
            result["train_loss"] = net.train_step(x, y, LR)
            result["trained"] = net.get_weights()
            result["adam"] = net.get_optimizer_state()
            cache[key] = result
        return cache[key]

    return run


def _pair(a: str, b: str) -> tuple[str, str]:
    return backend_or_skip(a), backend_or_skip(b)


def _max_diff(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.max(np.abs(u - v)))


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_same_weights_same_probabilities_and_loss(outcome, a, b, preset):
    ra, rb = (outcome(preset, n) for n in _pair(a, b))
    assert ra["probs"].shape == rb["probs"].shape == (BATCH, SIZE, SIZE, ra["probs"].shape[-1])
    assert _max_diff(ra["probs"], rb["probs"]) <= 1e-4
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_parameter_counts_agree(outcome, a, b, preset):
    ra, rb = (outcome(preset, n) for n in _pair(a, b))
    config = ra["preset"].network
    expected = sum(int(np.prod(s)) for n, s in canonical_shapes(config).items() if is_trainable(n))
    assert ra["count"] == rb["count"] == expected


def _bn_fed_bias(name: str, config) -> bool:
    return config.normalization == "batch" and ".conv" in name and name.endswith(".bias")


def _pixels(name: str) -> int:
    """Pixels per channel in the batch at the level of a canonical weight."""
    level = int(name.split(".")[0].lstrip("encd"))
    return BATCH * (SIZE // 2 ** (level - 1)) ** 2


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_one_training_step_agrees(outcome, a, b, preset):
    ra, rb = (outcome(preset, n) for n in _pair(a, b))
    config = ra["preset"].network
    initial = ra["initial"]
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
    assert float(ra["adam"]["adam.step"]) == float(rb["adam"]["adam.step"]) == 1

    moments = [k for k in ra["adam"] if k.startswith("adam.m.")]
    assert sorted(moments) == sorted(k for k in rb["adam"] if k.startswith("adam.m."))
    scale = max(float(np.abs(ra["adam"][k]).max()) for k in moments)
    for key in moments:
        assert _max_diff(ra["adam"][key], rb["adam"][key]) <= 1e-5 * scale, key

    for name in canonical_shapes(config):
        wa, wb = ra["trained"][name], rb["trained"][name]
        if _bn_fed_bias(name, config):
            # exact-zero gradient in theory; Adam's first step turns round-off into <= lr moves
            for r in (ra, rb):
                assert float(np.abs(r["adam"][f"adam.m.{name}"]).max()) <= 1e-6, name
                assert _max_diff(r["trained"][name], initial[name]) <= LR * 1.001, name
        elif name.endswith(".var"):
            unbiased = {"torch"} & {a, b}
            if unbiased:
                torch_w, other = (wa, wb) if a == "torch" else (wb, wa)
                n = _pixels(name)
                batch_var = (other - (1 - BN_MOMENTUM) * initial[name]) / BN_MOMENTUM
                other = other + BN_MOMENTUM * batch_var / (n - 1)
                wa, wb = torch_w, other
            assert _max_diff(wa, wb) <= 1e-5, name
        else:
            assert _max_diff(wa, wb) <= 1e-5, name
        if is_trainable(name) and not _bn_fed_bias(name, config):
            assert not np.array_equal(wa, initial[name]), f"{name} did not move"


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_model_file_from_one_backend_predicts_the_same_labels_in_another(
    outcome, a, b, preset, tmp_path
):
    a, b = _pair(a, b)
    for writer, reader in ((a, b), (b, a)):
        written = outcome(preset, writer)
        path = tmp_path / f"{writer}.safetensors"
        save_model(path, written["net"].get_weights(), written["preset"], writer)
        loaded = load_model(path)
        assert loaded.backend == writer
        net = outcome(preset, reader)["net"]
        net.set_weights(loaded.weights)
        x, _ = _batch(loaded.preset.network, seed=3)
        mine = written["net"].predict(x)
        theirs = net.predict(x)
        assert _max_diff(mine, theirs) <= 1e-4
        for p, q in zip(mine, theirs, strict=True):
            expected = to_instances(p, loaded.preset.inference)
            assert expected.max() > 0
            np.testing.assert_array_equal(to_instances(q, loaded.preset.inference), expected)


# -- the contract in numpy: every backend against a framework-free reference -----------------


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'Same' convolution (cross-correlation, zero padding) of NHWC ``x`` with an HWIO kernel."""
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for a in range(kh):
        for b in range(kw):
            out += padded[:, a : a + h, b : b + w] @ kernel[a, b]
    return out + bias


def _reference_logits(w: dict[str, np.ndarray], config, x: np.ndarray) -> np.ndarray:
    """The canonical U-Net in inference mode, as the contract in nucleuseg.backends.base says."""

    def block(x, prefix):
        for k in (1, 2):
            x = _conv(x, w[f"{prefix}.conv{k}.kernel"], w[f"{prefix}.conv{k}.bias"])
            if config.normalization == "batch":
                norm = f"{prefix}.norm{k}"
                x = (x - w[f"{norm}.mean"]) / np.sqrt(w[f"{norm}.var"] + BN_EPSILON)
                x = x * w[f"{norm}.scale"] + w[f"{norm}.bias"]
            x = (
                np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
                if config.activation == "elu"
                else (np.maximum(x, 0))
            )
        return x

    x = x.astype(np.float64)
    skips = []
    for level in range(1, config.depth + 1):
        if level > 1:
            n, h, wd, c = x.shape
            x = x.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
        x = block(x, f"enc{level}")
        skips.append(x)
    for level in range(config.depth - 1, 0, -1):
        n, h, wd, _ = x.shape
        if config.upsampling == "transpose":
            # input pixel (i, j) -> output pixels (2i + a, 2j + b) through kernel[a, b]
            up = np.einsum("nijc,abco->niajbo", x, w[f"up{level}.kernel"])
            x = up.reshape(n, 2 * h, 2 * wd, -1) + w[f"up{level}.bias"]
        else:
            x = x.repeat(2, axis=1).repeat(2, axis=2)
        x = block(np.concatenate([x, skips[level - 1]], axis=-1), f"dec{level}")
    return _conv(x, w["head.kernel"], w["head.bias"])


@pytest.mark.parametrize(
    "changes",
    [
        {"preset": "seed"},
        {"preset": "batchnorm"},
        {"preset": "default", "activation": "relu", "upsampling": "nearest"},
    ],
    ids=["seed", "batchnorm", "relu-nearest"],
)
@every_backend
def test_predictions_match_a_numpy_reference_of_the_contract(backend, changes):
    changes = dict(changes)
    preset = _preset(changes.pop("preset"))
    config = preset.network.replace(depth=3, base_filters=2, **changes)
    weights = random_weights(config, seed=4)
    x, _ = _batch(config, seed=5)
    x = x[:1, :16, :16]
    net = get_backend(backend)(config, 0)
    net.set_weights(weights)
    expected = 1 / (1 + np.exp(-_reference_logits(weights, config, x)))
    assert _max_diff(net.predict(x), expected) <= 1e-5


def test_reseed_repeats_the_dropout_stream(backend):
    config = _preset("seed").network.replace(dropout=(0.3,))
    x, y = _batch(config)
    build = get_backend(backend)
    first = build(config, 0, loss="bce")
    weights = first.get_weights()
    runs = []
    for net in (first, build(config, 1, loss="bce"), build(config, 2, loss="bce")):
        net.set_weights(weights)
        net.reseed(7 if len(runs) < 2 else 8)
        runs.append([net.train_step(x, y, 1e-3) for _ in range(2)])
    assert runs[0] == runs[1]
    assert runs[2][0] != runs[0][0]
