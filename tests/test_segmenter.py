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
