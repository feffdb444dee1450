"""The backend-agnostic training loop on a few synthetic steps."""

import numpy as np
import pytest

from nucleuseg.backends import build_network
from nucleuseg.data import make_synthetic
from nucleuseg.training import History, batches, learning_rate, make_example, prepare, train


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(4, size=48, seed=2)


def test_batches_are_shaped_and_reproducible(synthetic, tiny_preset):
    items = prepare(synthetic, progress=False)
    first = list(batches(items, tiny_preset, np.random.default_rng(7), steps=3))
    again = list(batches(items, tiny_preset, np.random.default_rng(7), steps=3))
    assert len(first) == 3
    x, y = first[0]
    assert x.shape == (2, 32, 32, 3) and y.shape == (2, 32, 32, 3)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(first, again, strict=True)
    )


def test_seed_preset_examples_are_resized(synthetic):
    from nucleuseg.config import get_preset

    x, y = make_example(
        prepare(synthetic, progress=False)[0], get_preset("seed"), np.random.default_rng(0)
    )
    assert x.shape == (128, 128, 3) and y.shape == (128, 128, 1)


def test_learning_rate_schedule(tiny_preset):
    assert learning_rate(tiny_preset, 0.0) == pytest.approx(tiny_preset.training.learning_rate)
    assert learning_rate(tiny_preset, 1.0) == pytest.approx(
        0.05 * tiny_preset.training.learning_rate
    )
    constant = tiny_preset.replace(training=tiny_preset.training.replace(schedule="constant"))
    assert learning_rate(constant, 0.7) == constant.training.learning_rate


def test_train_keeps_best_weights_and_stops_early(synthetic, tiny_preset):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    preset = tiny_preset.replace(training=tiny_preset.training.replace(patience=2))
    net = build_network("torch", preset.network, 0)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    snapshots = []

    def validate():
        snapshots.append(net.get_weights())
        return next(scores)

    history = train(net, synthetic, preset, validate=validate, epochs=5, progress=False)
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4]
    assert history.best_epoch == 2 and history.best_score == 0.7
    assert "no improvement for 2 epochs" in history.stopped
    best = snapshots[1]
    final = net.get_weights()
    assert all(np.array_equal(final[k], best[k]) for k in best)
    assert History.from_dict(history.to_dict()).to_dict() == history.to_dict()


def test_time_budget_stops_training(synthetic, tiny_preset):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    net = build_network("torch", tiny_preset.network, 0)
    history = train(net, synthetic, tiny_preset, epochs=50, max_minutes=0.0001, progress=False)
    assert len(history.epochs) == 1
    assert "time budget" in history.stopped


def test_resume_continues_exactly(synthetic, tiny_preset, tmp_path):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    path = tmp_path / "state.safetensors"
    full = build_network("torch", tiny_preset.network, 0)
    train(full, synthetic, tiny_preset, epochs=3, progress=False, seed=4)

    def crash_in_epoch_3(line):
        if line.startswith("epoch 3"):
            raise KeyboardInterrupt

    part = build_network("torch", tiny_preset.network, 0)
    with pytest.raises(KeyboardInterrupt):
        train(
            part,
            synthetic,
            tiny_preset,
            epochs=3,
            progress=False,
            seed=4,
            resume_path=path,
            log=crash_in_epoch_3,
        )
    resumed = build_network("torch", tiny_preset.network, 9)
    history = train(
        resumed, synthetic, tiny_preset, epochs=3, progress=False, seed=4, resume_path=path
    )
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    a, b = full.get_weights(), resumed.get_weights()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
