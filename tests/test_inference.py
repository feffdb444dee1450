"""The inference path (nucleuseg.inference): one image, batches of images, resize presets, auto-scale."""

import numpy as np
import pytest

from conftest import every_backend
from nucleuseg import inference
from nucleuseg.backends import build_network
from nucleuseg.config import InferenceConfig, get_preset
from nucleuseg.data import synthetic_sample
from nucleuseg.errors import ConfigError, InputError
from nucleuseg.postprocess import to_instances
from nucleuseg.tiling import predict_tiled
from nucleuseg.transforms import as_rgb, normalization_stats, normalize, resize


def _ramp(batch: np.ndarray) -> np.ndarray:
    """A network that is not flip-invariant: foreground rising from left to right, whatever the
    input; its flips average to one half."""
    ramp = np.linspace(0.0, 1.0, batch.shape[2], dtype=np.float32)
    return np.broadcast_to(ramp[None, None, :, None], (*batch.shape[:3], 1)).copy()


def _mixing(batch: np.ndarray) -> np.ndarray:
    """A deterministic stand-in that mixes neighbouring pixels (so flips and padding matter)."""
    x = batch.mean(axis=-1, keepdims=True)
    shifted = np.roll(x, 3, axis=2) * 0.7 + np.roll(x, -2, axis=1) * 0.3
    out = np.concatenate([shifted, x * 0.5, 1 - shifted], axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _counting(predict, calls: list[int]):
    def wrapped(batch):
        calls.append(len(batch))
        return predict(batch)

    return wrapped


@pytest.fixture
def seed_preset():
    preset = get_preset("seed")
    return preset.replace(network=preset.network.replace(depth=3, base_filters=4))


def test_resize_preset_applies_tta_to_the_resized_image(seed_preset):
    image = np.random.default_rng(0).integers(0, 255, (100, 37, 3), np.uint8)
    calls: list[int] = []
    plain = inference.predict_probabilities(_counting(_ramp, calls), image, seed_preset)
    assert calls == [1]
    flipped = seed_preset.replace(inference=seed_preset.inference.replace(tta=True))
    tta = inference.predict_probabilities(_counting(_ramp, calls), image, flipped)
    assert calls == [1, 1, 1, 1, 1]  # four flips of the one resized image
    assert plain.shape == tta.shape == (100, 37, 1)
    assert plain[:, -1].mean() - plain[:, 0].mean() > 0.9  # the ramp, resized back
    assert np.allclose(tta, 0.5, atol=1e-6)  # the flips cancel it


def test_resize_preset_without_tta_is_the_network_on_the_resized_image(seed_preset):
    image = np.random.default_rng(1).integers(0, 255, (90, 150), np.uint8)
    shapes: list[tuple[int, ...]] = []

    def net(batch):
        shapes.append(batch.shape)
        return _mixing(batch)[..., :1]

    x = normalize(image)
    small = _mixing(resize(x, (128, 128), order=1)[None])[0, ..., :1]
    expected = np.clip(resize(small, (90, 150), order=1), 0.0, 1.0)
    assert np.array_equal(inference.predict_probabilities(net, image, seed_preset), expected)
    assert shapes == [(1, 128, 128, 3)]


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("shape", [(37, 61), (64, 64), (150, 97)])
def test_one_image_is_the_tiled_prediction_of_the_normalised_image(tiny_preset, shape, tta):
    preset = tiny_preset.replace(inference=tiny_preset.inference.replace(tta=tta))
    image = np.random.default_rng(2).integers(0, 4096, (*shape, 3), np.uint16)
    expected = predict_tiled(_mixing, normalize(image), 4, tile=64, overlap=16, tta=tta)
    assert np.array_equal(inference.predict_probabilities(_mixing, image, preset), expected)
    labels = inference.predict_labels(_mixing, image, preset)
    assert np.array_equal(labels, to_instances(expected, preset.inference))


def test_stats_normalise_a_block_like_the_whole_image(tiny_preset):
    pointwise = lambda batch: batch  # noqa: E731
    image = synthetic_sample(seed=3, size=96).image
    stats = normalization_stats(as_rgb(image))
    whole = inference.predict_probabilities(pointwise, image, tiny_preset)  # tiled and blended
    block = inference.predict_probabilities(
        pointwise, image[10:50, 20:90], tiny_preset, stats=stats
    )
    assert np.allclose(block, whole[10:50, 20:90], atol=1e-6)
    own = inference.predict_probabilities(pointwise, image[10:50, 20:90], tiny_preset)
    assert not np.array_equal(own, block)  # its own statistics would differ


def test_batch_groups_images_by_padded_shape(tiny_preset):
    # multiple 4, tile 64: the first three pad to 64 x 64, the fourth to 32 x 32, the last is tiled
    shapes = [(64, 64), (61, 62), (63, 64), (30, 31), (70, 90), (64, 64)]
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 255, s, np.uint8) for s in shapes]
    calls: list[int] = []
    batched = inference.predict_batch(_counting(_mixing, calls), images, tiny_preset, batch_size=3)
    assert sorted(calls) == sorted([3, 1, 1, 4])  # 64 x 64 in 3 + 1, 32 x 32 alone, 4 tiles
    for image, probs in zip(images, batched, strict=True):
        alone = inference.predict_probabilities(_mixing, image, tiny_preset)
        assert np.array_equal(probs, alone) and probs.dtype == np.float32


def test_batch_calls_hold_no_more_pixels_than_four_tiles(tiny_preset):
    images = [np.zeros((64, 64), np.uint8)] * 6  # 4 tiles of 64 x 64 = 4 images per call
    calls: list[int] = []
    inference.predict_batch(_counting(_mixing, calls), images, tiny_preset, batch_size=16)
    assert calls == [4, 2]


def _blobs(radius: int, size: int) -> np.ndarray:
    """Two discs of ``radius`` in a ``size`` square."""
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.uint8)
    for cy, cx in ((size // 4, size // 4), (3 * size // 4, 3 * size // 4)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 220
    return image


def _foreground(batch: np.ndarray) -> np.ndarray:
    """A stand-in whose foreground is the image itself, with no contours."""
    fg = batch[..., :1]
    return np.concatenate([fg, np.zeros_like(fg), np.zeros_like(fg)], axis=-1)


def _auto_scaled(preset):
    """``preset`` auto-scaled towards radius 10, measuring nuclei on the full-size prediction."""
    return preset.replace(
        inference=preset.inference.replace(
            auto_scale=True, target_radius=10.0, min_size=0, scout_zoom=1.0
        )
    )


# zoomed 2x, 1x (left alone), 2x and 0.5x by auto-scale at radius 10
_BLOBS = [(3, 48), (10, 60), (3, 48), (30, 200)]


def test_batch_with_auto_scale_matches_one_at_a_time(tiny_preset):
    preset = _auto_scaled(tiny_preset)
    images = [_blobs(*args) for args in _BLOBS]
    calls: list[int] = []
    batched = inference.predict_batch(_counting(_foreground, calls), images, preset, batch_size=8)
    single: list[int] = []
    for image, probs in zip(images, batched, strict=True):
        alone = inference.predict_probabilities(_counting(_foreground, single), image, preset)
        assert probs.shape == (*image.shape, 3)
        assert np.array_equal(probs, alone)
    assert len(calls) == len(single) - 1  # the two 48 x 48 images shared their first call


def test_labels_of_an_image_auto_scale_leaves_alone_are_found_once(tiny_preset, monkeypatch):
    preset = _auto_scaled(tiny_preset)
    images = [_blobs(*args) for args in _BLOBS]
    expected = [
        to_instances(p, preset.inference)
        for p in inference.predict_batch(_foreground, images, preset)
    ]
    post_processed: list[tuple[int, int]] = []

    def counted(probs, config=None):
        post_processed.append(probs.shape[:2])
        return to_instances(probs, config)

    monkeypatch.setattr(inference, "to_instances", counted)
    found = inference.predict_labels_batch(_foreground, images, preset, batch_size=2)
    for labels, want in zip(found, expected, strict=True):
        assert np.array_equal(labels, want)
        assert int(labels.max()) == 2
    # each image once to measure its nuclei, then again only the three predicted at a new scale
    assert len(post_processed) == len(images) + 3
    post_processed.clear()
    alone = inference.predict_labels(_foreground, images[1], preset)
    assert np.array_equal(alone, expected[1]) and len(post_processed) == 1


def _shapes(predict, shapes: list[tuple[int, int]]):
    def wrapped(batch):
        shapes.append(batch.shape[1:3])
        return predict(batch)

    return wrapped


def _scouting(preset, scout_zoom: float = 0.5):
    """``preset`` auto-scaled, with one window up to 256 pixels and the given scout zoom."""
    preset = _auto_scaled(preset)
    return preset.replace(inference=preset.inference.replace(tile=256, scout_zoom=scout_zoom))


def test_a_scout_at_half_size_is_kept_for_large_nuclei(tiny_preset):
    preset, scouting = _scouting(tiny_preset, 1.0), _scouting(tiny_preset)
    image = _blobs(30, 200)  # radius 30: predicted at zoom 0.5 with or without a scout
    full: list[tuple[int, int]] = []
    scout: list[tuple[int, int]] = []
    want = inference.predict_labels(_shapes(_foreground, full), image, preset)
    got = inference.predict_labels(_shapes(_foreground, scout), image, scouting)
    assert full == [(200, 200), (100, 100)]
    assert scout == [(100, 100)]  # the scout is the prediction at zoom 0.5: one call only
    assert int(got.max()) == int(want.max()) == 2
    assert np.mean(got == want) > 0.99


@pytest.mark.parametrize(
    "radius, size, after",
    [
        (10, 64, [(64, 64)]),  # measured again at full size, and kept
        (3, 48, [(48, 48), (96, 96)]),  # measured again at full size, then zoomed 2x
        (16, 120, [(80, 80)]),  # zoomed by what the scout measured (15 px, where full size: 16)
    ],
)
def test_a_scout_leaves_to_full_size_all_but_the_zooms_below_one(tiny_preset, radius, size, after):
    preset, scouting = _scouting(tiny_preset, 1.0), _scouting(tiny_preset)
    image = _blobs(radius, size)
    shapes: list[tuple[int, int]] = []
    scouted = inference.predict_probabilities(_shapes(_foreground, shapes), image, scouting)
    assert shapes == [(size // 2, size // 2), *after]
    plain = inference.predict_probabilities(_foreground, image, preset)
    if radius < 16:  # the same predictions as without a scout
        assert np.abs(scouted - plain).max() < 1e-6
    found = to_instances(scouted, scouting.inference)
    assert int(found.max()) == int(to_instances(plain, preset.inference).max()) == 2


def test_a_scout_that_finds_nothing_predicts_at_the_image_scale(tiny_preset):
    scouting = _scouting(tiny_preset)
    shapes: list[tuple[int, int]] = []
    empty = np.zeros((64, 80), np.uint8)
    inference.predict_probabilities(_shapes(_foreground, shapes), empty, scouting)
    assert shapes == [(32, 40), (64, 80)]


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_scout_zoom_must_lie_in_zero_to_one(bad):
    with pytest.raises(ConfigError, match="scout_zoom"):
        InferenceConfig(scout_zoom=bad)


@pytest.mark.parametrize("radius, factor", [(3, 2.0), (10, 1.0), (14, 1.0), (30, 0.5)])
def test_auto_scale_factor_targets_the_median_radius(radius, factor):
    size = 96 if radius < 20 else 200
    yy, xx = np.mgrid[:size, :size]
    fg = np.zeros((size, size), np.float32)
    for cy, cx in ((25, 25), (25, 70), (70, 25), (70, 70)):
        fg[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 0.9
    probs = np.stack([fg, np.zeros_like(fg), np.zeros_like(fg)], axis=-1)
    config = InferenceConfig(auto_scale=True, target_radius=10.0, min_size=0)
    assert inference.rescale_factor(probs, config) == pytest.approx(factor, rel=0.05)
    assert inference.rescale_factor(probs, config.replace(auto_scale=False)) == 1.0


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
def test_batch_size_must_be_a_positive_integer(tiny_preset, bad):
    with pytest.raises(InputError, match="batch_size"):
        inference.predict_batch(_mixing, [np.zeros((8, 8))], tiny_preset, batch_size=bad)


def test_batch_names_the_bad_image(tiny_preset):
    with pytest.raises(InputError, match=r"images\[1\]"):
        inference.predict_batch(_mixing, [np.zeros((8, 8)), np.zeros((8, 8, 2))], tiny_preset)
    assert inference.predict_batch(_mixing, [], tiny_preset) == []


@every_backend
def test_batched_network_predictions_match_one_at_a_time(backend, tiny_preset):
    network = build_network(backend, tiny_preset.network, 0, loss=tiny_preset.training.loss)
    calls: list[int] = []
    predict = _counting(network.predict, calls)
    shapes = [(64, 64), (62, 61), (48, 64), (64, 64), (47, 62), (80, 70), (30, 30)]
    images = [synthetic_sample(seed=i, size=s).image for i, s in enumerate(shapes)]
    batched = inference.predict_batch(predict, images, tiny_preset, batch_size=4)
    assert 3 in calls and len(calls) == 4  # 64 x 64 (3 images), 48 x 64 (2), 32 x 32, 4 tiles
    for image, probs in zip(images, batched, strict=True):
        alone = inference.predict_probabilities(network.predict, image, tiny_preset)
        assert probs.shape == alone.shape and np.abs(probs - alone).max() <= 1e-5
        labels = to_instances(probs, tiny_preset.inference)
        assert labels.max() > 0  # something to compare
        assert np.array_equal(labels, to_instances(alone, tiny_preset.inference))
