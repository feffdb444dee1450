"""The Segmenter end to end on small synthetic data, over every installed backend."""

import numpy as np
import pytest

from nucleuseg import Segmenter
from nucleuseg.data import make_synthetic
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


def _blobs(radius: int, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    fg = np.zeros((size, size), np.float32)
    for cy, cx in ((25, 25), (25, 70), (70, 25), (70, 70)):
        fg[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 0.9
    return np.stack([fg, np.zeros_like(fg), np.zeros_like(fg)], axis=-1)


@pytest.mark.parametrize("radius, factor", [(3, 2.0), (10, 1.0), (14, 1.0), (30, 0.5)])
def test_auto_scale_factor_targets_the_median_radius(tiny_preset, radius, factor):
    pytest.importorskip("torch", reason="checked on the torch backend")
    seg = Segmenter("torch", preset=tiny_preset)
    seg.inference = seg.inference.replace(auto_scale=True, target_radius=10.0, min_size=0)
    size = 96 if radius < 20 else 200
    assert seg._rescale_factor(_blobs(radius, size)) == pytest.approx(factor, rel=0.05)
    seg.inference = seg.inference.replace(auto_scale=False)
    assert seg._rescale_factor(_blobs(radius, size)) == 1.0


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
