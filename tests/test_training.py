"""The backend-agnostic training loop on a few synthetic steps."""

import logging

import numpy as np
import pytest

from nucleuseg.averaging import MovingAverage
from nucleuseg.backends import build_network
from nucleuseg.config import Preset
from nucleuseg.data import make_synthetic
from nucleuseg.errors import CheckpointError, ConfigError
from nucleuseg.training import (
    AVERAGE_EVERY,
    History,
    batches,
    learning_rate,
    make_example,
    prepare,
    train,
)


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


@pytest.mark.parametrize("ema_decay", [0.0, 0.95], ids=["last-weights", "moving-average"])
def test_resume_continues_exactly(synthetic, tiny_preset, tmp_path, ema_decay):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    preset = tiny_preset.replace(
        training=tiny_preset.training.replace(ema_decay=ema_decay, steps_per_epoch=3)
    )
    path = tmp_path / "state.safetensors"
    full = build_network("torch", preset.network, 0)
    train(full, synthetic, preset, epochs=3, progress=False, seed=4)

    def crash_in_epoch_3(line):
        if line.startswith("epoch 3"):
            raise KeyboardInterrupt

    part = build_network("torch", preset.network, 0)
    with pytest.raises(KeyboardInterrupt):
        train(
            part,
            synthetic,
            preset,
            epochs=3,
            progress=False,
            seed=4,
            resume_path=path,
            log=crash_in_epoch_3,
        )
    resumed = build_network("torch", preset.network, 9)
    history = train(resumed, synthetic, preset, epochs=3, progress=False, seed=4, resume_path=path)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    a, b = full.get_weights(), resumed.get_weights()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5


def _state_after_one_epoch(synthetic, preset, path, seed):
    net = build_network("torch", preset.network, 0)
    train(net, synthetic, preset, epochs=1, progress=False, seed=seed, resume_path=path)
    return path.read_bytes()


def test_resume_with_another_seed_is_refused(synthetic, tiny_preset, tmp_path):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    path = tmp_path / "state.safetensors"
    written = _state_after_one_epoch(synthetic, tiny_preset, path, seed=4)
    net = build_network("torch", tiny_preset.network, 0)
    with pytest.raises(CheckpointError, match=r"seed 4, not 5.*--seed 4.*another resume file"):
        train(net, synthetic, tiny_preset, epochs=2, progress=False, seed=5, resume_path=path)
    assert path.read_bytes() == written


def test_resume_with_another_preset_is_refused(synthetic, tiny_preset, tmp_path):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    path = tmp_path / "state.safetensors"
    written = _state_after_one_epoch(synthetic, tiny_preset, path, seed=4)
    recipe = tiny_preset.replace(training=tiny_preset.training.replace(learning_rate=5e-4))
    net = build_network("torch", tiny_preset.network, 0)
    with pytest.raises(CheckpointError) as caught:
        train(net, synthetic, recipe, epochs=2, progress=False, seed=4, resume_path=path)
    message = str(caught.value)
    assert "another preset" in message and "another resume file" in message
    assert "training.learning_rate: 0.001 in the file, 0.0005 now" in message
    assert "crop" not in message
    assert path.read_bytes() == written
    # the inference settings are part of the preset too
    tuned = tiny_preset.replace(inference=tiny_preset.inference.replace(threshold=0.4))
    with pytest.raises(CheckpointError, match=r"inference\.threshold: 0\.5 in the file, 0\.4"):
        train(net, synthetic, tuned, epochs=2, progress=False, seed=4, resume_path=path)


def test_resume_with_the_same_seed_and_preset_continues(synthetic, tiny_preset, tmp_path):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    path = tmp_path / "state.safetensors"
    _state_after_one_epoch(synthetic, tiny_preset, path, seed=4)
    same = Preset.from_json(tiny_preset.to_json())  # an equal preset, not the same object
    net = build_network("torch", tiny_preset.network, 0)
    history = train(net, synthetic, same, epochs=2, progress=False, seed=4, resume_path=path)
    assert [e.epoch for e in history.epochs] == [1, 2]


def test_epoch_lines_go_to_the_logger_not_stdout(synthetic, tiny_preset, tmp_path, caplog, capsys):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    path = tmp_path / "state.safetensors"
    _state_after_one_epoch(synthetic, tiny_preset, path, seed=0)
    net = build_network("torch", tiny_preset.network, 0)
    with caplog.at_level(logging.INFO, logger="nucleuseg"):
        train(net, synthetic, tiny_preset, epochs=2, progress=False, resume_path=path)
    lines = [r.getMessage() for r in caplog.records if r.name == "nucleuseg.training"]
    assert lines[0] == f"resuming {path} at epoch 2"
    assert lines[1].startswith("epoch 2: loss ") and "val score -" in lines[1]
    assert capsys.readouterr().out == ""
    received = []
    caplog.clear()
    train(net, synthetic, tiny_preset, epochs=1, progress=False, log=received.append)
    assert [line.split(":")[0] for line in received] == ["epoch 1"]
    assert not [r for r in caplog.records if r.name == "nucleuseg.training"]


def test_the_command_line_shows_info_lines_while_a_command_runs(monkeypatch, capsys):
    from nucleuseg import cli

    package = logging.getLogger("nucleuseg")
    assert any(isinstance(h, logging.NullHandler) for h in package.handlers)
    before = list(package.handlers)

    def command(args):
        logging.getLogger("nucleuseg.training").info("epoch 1: loss 0.5000")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "backends", command)
    assert cli.main(["backends"]) == 0
    assert capsys.readouterr().out == "epoch 1: loss 0.5000\n"
    assert package.handlers == before
    logging.getLogger("nucleuseg.training").info("after the command")
    assert capsys.readouterr().out == ""


def test_on_epoch_sees_every_epoch_and_can_stop_training(synthetic, tiny_preset):
    from nucleuseg.training import StopTraining

    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    net = build_network("torch", tiny_preset.network, 0)
    scores = iter([0.2, 0.4, 0.3, 0.1, 0.5])
    seen = []
    history = train(
        net,
        synthetic,
        tiny_preset,
        validate=lambda: next(scores),
        epochs=5,
        progress=False,
        on_epoch=seen.append,
    )
    assert [r.epoch for r in seen] == [1, 2, 3, 4, 5]
    assert [r.score for r in seen] == [0.2, 0.4, 0.3, 0.1, 0.5]
    assert seen == history.epochs

    scores = iter([0.2, 0.4, 0.3, 0.1, 0.5])
    snapshots = []

    def validate():
        snapshots.append(net.get_weights())
        return next(scores)

    def stop_at_three(record):
        if record.epoch == 3:
            raise StopTraining("enough")

    history = train(
        net,
        synthetic,
        tiny_preset,
        validate=validate,
        epochs=5,
        progress=False,
        on_epoch=stop_at_three,
    )
    assert len(history.epochs) == 3 and history.stopped == "enough"
    assert history.best_epoch == 2  # the best weights are kept, as early stopping keeps them
    for name, value in net.get_weights().items():
        np.testing.assert_array_equal(value, snapshots[1][name])


def test_other_exceptions_of_on_epoch_propagate(synthetic, tiny_preset):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")

    class Pruned(Exception):
        pass

    def prune(record):
        raise Pruned(record.epoch)

    net = build_network("torch", tiny_preset.network, 0)
    with pytest.raises(Pruned):
        train(
            net,
            synthetic,
            tiny_preset,
            validate=lambda: 0.5,
            epochs=3,
            progress=False,
            on_epoch=prune,
        )


def _one_nucleus_sample(radius: int, size: int = 96):
    """A one-image training set: one bright disc of ``radius`` pixels in a dark square."""
    from nucleuseg.data.base import Sample

    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius**2
    image = np.where(disc, 200, 10).astype(np.uint8)
    return [Sample(f"r{radius}", image, disc.astype(np.int32), "fluorescence")]


@pytest.mark.parametrize(("radius", "zoom"), [(3, 2.0), (9, 1.0), (12, 1.0), (40, 0.5)])
def test_prepare_zooms_towards_the_target_radius_as_prediction_does(radius, zoom):
    (item,) = prepare(_one_nucleus_sample(radius), progress=False, target_radius=9.0)
    assert item.zoom == pytest.approx(zoom)
    (plain,) = prepare(_one_nucleus_sample(radius), progress=False)
    assert plain.zoom == 1.0


def test_examples_are_read_at_the_item_zoom(tiny_preset):
    preset = tiny_preset.replace(
        training=tiny_preset.training.replace(
            crop=64, augment=False, scale_range=(1.0, 1.0), target_radius=9.0
        )
    )
    (item,) = prepare(_one_nucleus_sample(4, size=32), progress=False, target_radius=9.0)
    assert item.zoom == 2.0
    _, target = make_example(item, preset, np.random.default_rng(0))
    # the 32-pixel image is read whole and doubled: the disc of radius 4 now has radius ~8
    area = float(target[..., 0].sum())
    assert np.sqrt(area / np.pi) == pytest.approx(8.0, rel=0.15)


def test_a_target_radius_without_auto_scale_is_warned_about(synthetic, tiny_preset, caplog):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    preset = tiny_preset.replace(training=tiny_preset.training.replace(target_radius=6.0))
    net = build_network("torch", preset.network, 0)
    with caplog.at_level(logging.WARNING, logger="nucleuseg.training"):
        train(net, synthetic, preset, epochs=1, progress=False)
    assert "does not auto-scale to it" in caplog.text
    caplog.clear()
    scaled = preset.replace(inference=preset.inference.replace(auto_scale=True, target_radius=6.0))
    with caplog.at_level(logging.WARNING, logger="nucleuseg.training"):
        train(net, synthetic, scaled, epochs=1, progress=False)
    assert "auto-scale" not in caplog.text


def test_target_radius_is_validated_and_optional_in_preset_files(tiny_preset):
    import json

    from nucleuseg.config import TrainingConfig
    from nucleuseg.errors import ConfigError

    assert TrainingConfig().target_radius is None
    with pytest.raises(ConfigError, match="target_radius"):
        TrainingConfig(target_radius=0.0)
    scaled = tiny_preset.replace(training=tiny_preset.training.replace(target_radius=9.0))
    assert Preset.from_json(scaled.to_json()).training.target_radius == 9.0
    old = json.loads(scaled.to_json())
    del old["training"]["target_radius"]  # a preset written before the option existed
    assert Preset.from_dict(old).training.target_radius is None


def _averaging(preset, decay=0.9, steps=6):
    return preset.replace(
        training=preset.training.replace(ema_decay=decay, steps_per_epoch=steps, patience=10)
    )


def _record_steps(net) -> list[dict[str, np.ndarray]]:
    """Make ``net`` record its weights after every optimizer step."""
    seen, step = [], net.train_step

    def recording(*args):
        loss = step(*args)
        seen.append(net.get_weights())
        return loss

    net.train_step = recording
    return seen


def test_validation_sees_the_moving_average_and_the_optimizer_the_last_weights(
    synthetic, tiny_preset
):
    pytest.importorskip("torch", reason="the loop is exercised on the torch backend")
    preset = _averaging(tiny_preset)
    plain = build_network("torch", preset.network, 0)
    plain_steps = _record_steps(plain)
    train(
        plain,
        synthetic,
        tiny_preset.replace(training=preset.training.replace(ema_decay=0.0)),
        epochs=2,
        progress=False,
    )
    net = build_network("torch", preset.network, 0)
    steps = _record_steps(net)
    validated = []

    def validate():
        validated.append(net.get_weights())
        return -len(validated)  # the first epoch stays the best

    train(net, synthetic, preset, validate=validate, epochs=2, progress=False)
    assert len(steps) == len(plain_steps) == 12
    for a, b in zip(steps, plain_steps, strict=True):  # the average never feeds the optimizer
        assert all(np.array_equal(a[k], b[k]) for k in a)
    expected = MovingAverage(0.9)
    for step, weights in enumerate(steps, 1):
        if step % AVERAGE_EVERY == 0 or step % 6 == 0:
            expected.update(weights, step)
        if step % 6 == 0:
            got = validated[step // 6 - 1]
            assert all(np.allclose(got[k], expected.weights[k], atol=1e-6) for k in got)
            assert not all(np.array_equal(got[k], weights[k]) for k in got)
    final = net.get_weights()  # the best epoch's average, not the last step's weights
    assert all(np.array_equal(final[k], validated[0][k]) for k in final)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2.0])
def test_ema_decay_is_validated(tiny_preset, decay):
    with pytest.raises(ConfigError, match="ema_decay"):
        tiny_preset.training.replace(ema_decay=decay)


def test_preset_files_without_ema_decay_load_with_it_off(tiny_preset):
    data = tiny_preset.to_dict()
    del data["training"]["ema_decay"]
    assert Preset.from_dict(data).training.ema_decay == 0.0
