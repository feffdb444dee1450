"""Weight averaging (``nucleuseg.averaging`` and ``nucleuseg average``) on tiny model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_preset
from nucleuseg import checkpoint, cli
from nucleuseg.averaging import MovingAverage, average_models
from nucleuseg.backends.base import init_weights
from nucleuseg.errors import InputError


def model_file(path: Path, seed: int, preset=None) -> Path:
    preset = preset or make_tiny_preset()
    checkpoint.save_model(path, init_weights(preset.network, seed), preset, "torch")
    return path


@pytest.fixture
def three(tmp_path) -> list[Path]:
    return [model_file(tmp_path / f"m{seed}.safetensors", seed) for seed in range(3)]


def test_the_average_is_the_weighted_sum_of_every_tensor(three):
    weights = [0.5, 0.3, 0.2]
    mean = average_models(three, weights)
    sources = [checkpoint.load_model(p).weights for p in three]
    assert set(mean.weights) == set(sources[0])
    for key, value in mean.weights.items():
        expected = sum(w * s[key] for w, s in zip(weights, sources, strict=True))
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
        assert value.dtype == np.float32


def test_equal_weights_by_default_and_the_first_model_s_preset(tmp_path):
    tuned = make_tiny_preset().replace(
        inference=make_tiny_preset().inference.replace(threshold=0.7, min_size=3)
    )
    a = model_file(tmp_path / "a.safetensors", 0, preset=tuned)
    b = model_file(tmp_path / "b.safetensors", 1)
    mean = average_models([a, b])
    wa, wb = checkpoint.load_model(a).weights, checkpoint.load_model(b).weights
    np.testing.assert_allclose(
        mean.weights["enc1.conv1.kernel"],
        (wa["enc1.conv1.kernel"] + wb["enc1.conv1.kernel"]) / 2,
        rtol=1e-6,
    )
    assert mean.preset == tuned
    assert mean.history is None
    assert average_models([b, a]).preset == make_tiny_preset()


def test_a_model_averaged_with_itself_is_unchanged(three):
    mean = average_models([three[0], three[0]], [0.25, 0.75])
    source = checkpoint.load_model(three[0]).weights
    for key, value in mean.weights.items():
        np.testing.assert_allclose(value, source[key], rtol=1e-6)


@pytest.mark.parametrize(
    ("count", "weights", "message"),
    [
        (1, None, "at least two models, got 1"),
        (2, [1.0], "1 weights for 2 models"),
        (2, [0.6, 0.6], "sum to 1"),
        (2, [1.5, -0.5], "non-negative"),
        (2, [float("nan"), 1.0], "non-negative"),
    ],
)
def test_bad_requests_are_refused(three, count, weights, message):
    with pytest.raises(InputError, match=message):
        average_models(three[:count], weights)


def test_models_of_different_networks_do_not_average(tmp_path, three):
    wider = make_tiny_preset().replace(network=make_tiny_preset().network.replace(base_filters=8))
    other = model_file(tmp_path / "wide.safetensors", 0, preset=wider)
    with pytest.raises(InputError, match="another network"):
        average_models([three[0], other])


def test_the_command_writes_a_model_file(three, tmp_path, capsys):
    out = tmp_path / "mean.safetensors"
    args = ["average", str(three[0]), str(three[1]), "--weights", "0.7", "0.3", "--out", str(out)]
    assert cli.main(args) == 0
    assert "0.7 x" in capsys.readouterr().out
    written = checkpoint.load_model(out)
    expected = average_models(three[:2], [0.7, 0.3])
    np.testing.assert_array_equal(
        written.weights["dec1.conv1.kernel"], expected.weights["dec1.conv1.kernel"]
    )


def test_the_command_reports_errors_without_writing(three, tmp_path, capsys):
    out = tmp_path / "mean.safetensors"
    args = ["average", str(three[0]), str(three[1]), "--weights", "0.9", "--out", str(out)]
    assert cli.main(args) == 2
    assert "1 weights for 2 models" in capsys.readouterr().err
    assert not out.exists()


def test_a_moving_average_starts_at_the_first_weights_and_follows_the_decay():
    average = MovingAverage(0.9)
    average.update({"w": np.full(3, 2.0, np.float32)}, step=100)
    assert np.array_equal(average.weights["w"], np.full(3, 2.0, np.float32))
    average.update({"w": np.zeros(3, np.float32)}, step=102)  # past the warm-up: decay 0.9
    np.testing.assert_allclose(average.weights["w"], 2.0 * 0.9**2, rtol=1e-6)
    assert average.weights["w"].dtype == np.float32 and average.step == 102


def test_a_skipped_step_counts_as_that_many_updates_at_the_current_decay():
    one, each = MovingAverage(0.99), MovingAverage(0.99)
    for average in (one, each):
        average.update({"w": np.zeros(2, np.float32)}, step=1000)
    one.update({"w": np.ones(2, np.float32)}, step=1004)
    for step in range(1001, 1005):
        each.update({"w": np.ones(2, np.float32)}, step=step)
    np.testing.assert_allclose(one.weights["w"], each.weights["w"], rtol=1e-6)
    np.testing.assert_allclose(one.weights["w"], 1 - 0.99**4, rtol=1e-6)


def test_early_weights_fade_quickly_while_the_decay_warms_up():
    average = MovingAverage(0.999)
    average.update({"w": np.zeros(1, np.float32)}, step=1)
    average.update({"w": np.ones(1, np.float32)}, step=2)  # decay (1 + 2) / (10 + 2)
    np.testing.assert_allclose(average.weights["w"], 0.75)


def test_a_moving_average_continues_from_given_weights_without_sharing_them():
    given = {"w": np.ones(2, np.float32)}
    average = MovingAverage(0.5, given, step=100)
    average.update({"w": np.zeros(2, np.float32)}, step=101)
    np.testing.assert_allclose(average.weights["w"], 0.5)
    assert np.array_equal(given["w"], np.ones(2, np.float32))


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_moving_average_needs_a_decay_between_0_and_1(decay):
    with pytest.raises(InputError, match="decay"):
        MovingAverage(decay)
