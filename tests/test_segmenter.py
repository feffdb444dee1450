"""The Segmenter end to end on small synthetic data, over every installed backend."""

import dataclasses

import numpy as np
import pytest

import nucleuseg.segmenter
from nucleuseg import Segmenter, metrics
from nucleuseg.backends import canonical_shapes
from nucleuseg.data import in_memory, make_synthetic, synthetic_sample
from nucleuseg.errors import ConfigError, InputError
from nucleuseg.metrics import DatasetScore


@pytest.fixture(scope="module")
def tiny_data():
    return make_synthetic(6, size=64, seed=0).split(0.34, seed=0)


def test_fit_predict_evaluate_save_load(backend, tiny_preset, tiny_data, tmp_path):
    train, val = tiny_data
    seg = Segmenter(backend, preset=tiny_preset, seed=0)
    history = seg.fit(train, validation=val, epochs=2, progress=False)
    assert len(history.epochs) == 2
    assert all(np.isfinite(history.loss)) and all(0 <= s <= 1 for s in history.score)
    assert history.best_epoch in (1, 2)
    sample = val[0]
    labels = seg.predict(sample.image)
    assert labels.shape == sample.shape and labels.dtype == np.int32
    result = seg.evaluate(val, progress=False)
    assert isinstance(result, DatasetScore) and len(result.per_image) == len(val)

    path = tmp_path / "model.safetensors"
    seg.save(path)
    again = Segmenter.load(path)
    assert again.backend == backend and again.preset == seg.preset
    assert np.array_equal(again.predict(sample.image), labels)
    assert np.array_equal(again.predict_proba(sample.image), seg.predict_proba(sample.image))
    assert again.history.best_epoch == history.best_epoch


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((1, 1), np.uint8),
        ((5, 3, 3), np.uint8),
        ((37, 61, 4), np.uint8),
        ((64, 40, 1), np.uint16),
        ((33, 129), np.float32),
        ((1040, 1388, 3), np.uint8),
    ],
)
def test_predict_any_size_and_layout(shape, dtype, tiny_preset):
    pytest.importorskip("torch", reason="predict sizes are checked on the torch backend")
    seg = Segmenter("torch", preset=tiny_preset)
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * (255 if dtype != np.float32 else 1)).astype(dtype)
    labels = seg.predict(image)
    assert labels.shape == shape[:2] and labels.dtype == np.int32 and labels.min() >= 0


def test_seed_preset_resizes_and_maps_back(tiny_preset):
    pytest.importorskip("torch", reason="checked on the torch backend")
    seg = Segmenter(
        "torch", preset="seed", config=tiny_preset.network.replace(out_channels=1, depth=3)
    )
    probs = seg.predict_proba(np.zeros((100, 37, 3), np.uint8))
    assert probs.shape == (100, 37, 1)


def test_predict_rejects_bad_arrays(tiny_preset):
    pytest.importorskip("torch", reason="checked on the torch backend")
    from nucleuseg.errors import InputError

    seg = Segmenter("torch", preset=tiny_preset)
    with pytest.raises(InputError):
        seg.predict(np.zeros((4, 4, 2)))
    with pytest.raises(InputError):
        seg.predict(np.full((4, 4), np.inf))


def test_auto_scale_predicts_at_the_original_size(tiny_preset):
    pytest.importorskip("torch", reason="checked on the torch backend")
    seg = Segmenter("torch", preset=tiny_preset)
    seg.inference = seg.inference.replace(auto_scale=True)
    image = make_synthetic(1, size=(70, 90), seed=5)[0].image
    assert seg.predict_proba(image).shape == (70, 90, 3)


def test_tune_keeps_the_best_setting_and_saves_it(tiny_preset, tiny_data, tmp_path):
    pytest.importorskip("torch", reason="checked on the torch backend")
    _, val = tiny_data
    seg = Segmenter("torch", preset=tiny_preset)
    result = seg.tune(
        val, progress=False, thresholds=(0.3, 0.5), seed_thresholds=(0.5,), min_sizes=(0, 8)
    )
    assert len(result.trials) == 4
    assert seg.inference == result.best
    assert result.best_score == max(score for _, score in result.trials)
    seg.save(tmp_path / "tuned.safetensors")
    assert Segmenter.load(tmp_path / "tuned.safetensors").inference == result.best


def test_predict_many_and_evaluate_batch_what_predict_does_alone(tiny_preset):
    pytest.importorskip("torch", reason="checked on the torch backend")
    seg = Segmenter("torch", preset=tiny_preset)
    shapes = [(64, 64), (60, 62), (64, 64), (40, 50), (70, 90), (64, 64)]
    samples = [synthetic_sample(seed=i, size=s) for i, s in enumerate(shapes)]
    dataset = in_memory([dataclasses.replace(s, image_id=f"img{i}") for i, s in enumerate(samples)])
    calls: list[int] = []
    predict = seg.network.predict
    seg.network.predict = lambda batch: calls.append(len(batch)) or predict(batch)
    many = seg.predict_many(dataset, progress=False, batch_size=4)
    assert sorted(calls) == [1, 1, 3, 4]  # the three 64 x 64 images together, 70 x 90 in 4 tiles
    alone = {s.image_id: seg.predict(s.image) for s in dataset}
    assert many.keys() == alone.keys()
    assert all(np.array_equal(many[i], alone[i]) for i in alone)
    with pytest.raises(InputError, match="batch_size"):
        seg.predict_many(dataset, progress=False, batch_size=0)
    result = seg.evaluate(dataset, progress=False, batch_size=2)
    expected = metrics.score_dataset({s.image_id: s.labels for s in dataset}, alone)
    assert result.score == expected.score and len(result.per_image) == len(shapes)


def test_fit_validates_through_evaluate(tiny_preset, tiny_data, monkeypatch):
    pytest.importorskip("torch", reason="checked on the torch backend")
    train, val = tiny_data
    seg = Segmenter("torch", preset=tiny_preset)
    scores: list[tuple[int, bool, float]] = []
    evaluate = Segmenter.evaluate

    def spy(self, dataset, progress=True, **options):
        result = evaluate(self, dataset, progress=progress, **options)
        scores.append((len(dataset), progress, result.score))
        return result

    monkeypatch.setattr(Segmenter, "evaluate", spy)
    history = seg.fit(train, validation=val, epochs=2, progress=False)
    assert [(n, p) for n, p, _ in scores] == [(len(val), False)] * 2
    assert [score for *_, score in scores] == list(history.score)


def test_a_time_budget_alone_is_not_cut_short_by_an_epoch_count(
    tiny_preset, tiny_data, monkeypatch
):
    pytest.importorskip("torch", reason="checked on the torch backend")
    train_set, _ = tiny_data
    seen: list[tuple[int, float | None]] = []

    def record(network, data, preset, **options):
        seen.append((options["epochs"], options["max_minutes"]))
        return nucleuseg.segmenter.History()

    monkeypatch.setattr(nucleuseg.segmenter, "train", record)
    seg = Segmenter("torch", preset=tiny_preset)
    seg.fit(train_set, progress=False)
    seg.fit(train_set, max_minutes=60, progress=False)
    seg.fit(train_set, epochs=3, max_minutes=60, progress=False)
    assert seen[0] == (nucleuseg.segmenter.DEFAULT_EPOCHS, None)
    # 60 minutes of small epochs would be many more than 40: only the budget (or patience) ends it.
    assert seen[1][0] >= 100_000 and seen[1][1] == 60
    assert seen[2] == (3, 60)


def test_device_reaches_the_backend_factory(tiny_preset, monkeypatch, tmp_path):
    built: list[dict] = []

    class Recorded:
        def __init__(self, weights):
            self.weights = weights

        def get_weights(self):
            return self.weights

        def set_weights(self, weights):
            self.weights = weights

    def build(backend, config, seed, **options):
        built.append(options)
        return Recorded({k: np.zeros(v, np.float32) for k, v in canonical_shapes(config).items()})

    monkeypatch.setattr(nucleuseg.segmenter, "build_network", build)
    assert Segmenter("torch", preset=tiny_preset).device is None
    Segmenter("torch", preset=tiny_preset, device="gpu:1").save(tmp_path / "m.safetensors")
    Segmenter.load(tmp_path / "m.safetensors", device=0)
    loss = tiny_preset.training.loss
    devices = [None, "gpu:1", 0]
    assert built == [{"loss": loss, "device": device} for device in devices]


def test_device_cpu_and_a_bad_device(tiny_preset):
    pytest.importorskip("torch", reason="checked on the torch backend")
    image = np.zeros((20, 30), np.uint8)
    assert Segmenter("torch", preset=tiny_preset, device="cpu").predict(image).shape == (20, 30)
    with pytest.raises(ConfigError, match="device"):
        Segmenter("torch", preset=tiny_preset, device="tpu")
