"""Normalisation, tiling and post-processing: the framework-free half of prediction."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from nucleuseg.config import InferenceConfig
from nucleuseg.errors import InputError
from nucleuseg.postprocess import (
    check_probabilities,
    components,
    fill_holes,
    to_instances,
    watershed_split,
)
from nucleuseg.tiling import fitted_tile, pad_to_multiple, predict_tiled, tile_starts
from nucleuseg.transforms import as_rgb, normalization_stats, normalize, resize


def test_as_rgb_layouts_and_errors():
    assert as_rgb(np.zeros((3, 4), np.uint16)).shape == (3, 4, 3)
    assert as_rgb(np.zeros((3, 4, 1))).shape == (3, 4, 3)
    assert as_rgb(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
    with pytest.raises(InputError, match="shape"):
        as_rgb(np.zeros((3, 4, 2)))
    with pytest.raises(InputError, match="dtype"):
        as_rgb(np.zeros((3, 4), bool))
    with pytest.raises(InputError, match="NaN"):
        as_rgb(np.full((3, 4), np.nan))
    with pytest.raises(InputError, match="shape"):
        as_rgb(np.zeros((2, 3, 4, 5)))


def test_normalize_inverts_bright_backgrounds_only():
    dark = np.zeros((20, 20, 3), np.uint8)
    dark[5:10, 5:10] = 200
    bright = 255 - dark
    assert not normalization_stats(dark).invert
    assert normalization_stats(bright).invert
    # nuclei end up bright in both
    assert normalize(dark)[7, 7, 0] > 0.9 and normalize(bright)[7, 7, 0] > 0.9
    assert normalize(bright)[0, 0, 0] < 0.1


def test_normalize_handles_uint16_and_constant_images():
    img = (np.arange(400).reshape(20, 20) * 100).astype(np.uint16)
    x = normalize(img)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    flat = normalize(np.full((5, 5), 7, np.uint8))
    assert np.all(np.isfinite(flat))


@given(st.integers(1, 70), st.integers(1, 70), st.sampled_from([8, 16]))
@settings(max_examples=40, deadline=None)
def test_pad_to_multiple_any_size(h, w, multiple):
    x = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    padded, shape = pad_to_multiple(x, multiple)
    assert shape == (h, w)
    assert padded.shape[0] % multiple == 0 and padded.shape[1] % multiple == 0
    assert np.array_equal(padded[:h, :w], x)


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (150, 97), (64, 64)])
@pytest.mark.parametrize("tta", [False, True])
def test_predict_tiled_reproduces_a_pointwise_network(shape, tta):
    # a pointwise "network" gives the same output tiled or not, with or without flips
    def net(batch):
        assert batch.shape[1] % 16 == 0 and batch.shape[2] % 16 == 0
        return batch[..., :2] * 0.5

    x = np.random.default_rng(1).random((*shape, 3)).astype(np.float32)
    out = predict_tiled(net, x, 16, tile=64, overlap=16, tta=tta)
    assert out.shape == (*shape, 2)
    assert np.allclose(out, x[..., :2] * 0.5, atol=1e-6)


@given(st.integers(1, 5000), st.sampled_from([64, 256, 1024]), st.sampled_from([1, 16]))
@settings(max_examples=200, deadline=None)
def test_fitted_tiles_are_as_few_cover_the_side_and_keep_the_overlap(length, tile, multiple):
    length = -(-length // multiple) * multiple  # predict_tiled pads to the multiple first
    overlap = tile // 8
    fitted = fitted_tile(length, tile, overlap, multiple)
    assert fitted % multiple == 0 and fitted <= tile
    full = tile_starts(length, tile, overlap, multiple)
    starts = tile_starts(length, min(fitted, length), overlap, multiple)
    assert len(starts) == len(full)
    assert starts[0] == 0 and starts[-1] + min(fitted, length) == length
    shared = [min(fitted, length) - (b - a) for a, b in itertools.pairwise(starts)]
    assert all(s >= overlap for s in shared)


def test_a_side_just_over_the_tile_is_not_computed_twice():
    # a 1040 x 1392 image (a 520 x 696 DSB image zoomed twice by auto-scale) in tiles of 1024
    seen = []

    def net(batch):
        seen.append(batch.shape[0] * batch.shape[1] * batch.shape[2])
        return batch[..., :1]

    x = np.random.default_rng(2).random((1040, 1392, 3)).astype(np.float32)
    out = predict_tiled(net, x, 16, tile=1024, overlap=64)
    assert np.allclose(out, x[..., :1], atol=1e-6)
    assert sum(seen) < 1.2 * x.shape[0] * x.shape[1]  # full tiles of 1024 would be 2.9x


def test_probabilities_are_validated():
    with pytest.raises(InputError, match="NaN"):
        check_probabilities(np.full((3, 3), np.nan))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        check_probabilities(np.full((3, 3), 1.5))
    with pytest.raises(InputError, match="floating"):
        check_probabilities(np.ones((3, 3), np.int64))
    with pytest.raises(InputError, match="shape"):
        check_probabilities(np.ones((1, 3, 3, 1)))


def _touching_pair():
    fg = np.zeros((20, 30), np.float32)
    fg[5:15, 3:14] = 0.95
    fg[5:15, 14:26] = 0.95
    touch = np.zeros_like(fg)
    touch[5:15, 13:15] = 0.9
    return np.stack([fg, np.zeros_like(fg), touch], axis=-1)


def test_watershed_splits_what_components_merge():
    probs = _touching_pair()
    assert components(probs[..., 0]).max() == 1
    labels = watershed_split(probs)
    assert labels.max() == 2
    assert np.count_nonzero(labels) == np.count_nonzero(probs[..., 0] > 0.5)


def test_postprocess_removes_small_objects_and_fills_holes():
    fg = np.zeros((20, 20), np.float32)
    fg[2:12, 2:12] = 0.9
    fg[6, 6] = 0.1  # a hole
    fg[17, 17] = 0.9  # a speck
    labels = to_instances(fg, InferenceConfig(postprocess="components", min_size=4))
    assert labels.max() == 1
    assert labels[6, 6] == 1 and labels[17, 17] == 0


def test_watershed_falls_back_for_one_channel():
    probs = _touching_pair()[..., :1]
    assert to_instances(probs, InferenceConfig(postprocess="watershed")).max() == 1


def test_fill_holes_fills_exactly_the_enclosed_background():
    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 25, 2))
        labels, _ = ndi.label(rng.random(shape) < 0.6)
        labels = labels.astype(np.int32)
        filled = fill_holes(labels)
        holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
        assert np.array_equal(filled > 0, (labels > 0) | holes)
        assert np.array_equal(filled[labels > 0], labels[labels > 0])
        # a hole pixel takes the label of a labelled pixel as near as any other
        distance = ndi.distance_transform_edt(labels == 0)
        for y, x in zip(*np.nonzero(holes), strict=True):
            ys, xs = np.nonzero(labels == filled[y, x])
            assert np.hypot(ys - y, xs - x).min() == pytest.approx(distance[y, x])


def test_fill_holes_gives_a_hole_between_two_nuclei_to_the_nearer():
    labels = np.zeros((7, 9), np.int32)
    labels[1:6, 1:5] = 1
    labels[1:6, 5:8] = 2
    labels[3, 3:7] = 0  # a hole across the border of the two
    assert fill_holes(labels)[3, 3:7].tolist() == [1, 1, 2, 2]
    labels[3, 0:3] = 0  # now open to the image's edge: not a hole
    assert np.array_equal(fill_holes(labels), labels)


@pytest.mark.parametrize(
    "source, shape",
    [((52, 69, 3), (26, 35)), ((52, 69, 3), (101, 140)), ((37, 10), (11, 64)), ((5, 7, 2), (5, 9))],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_resize_gives_scipy_zooms_values(source, shape, dtype):
    array = np.random.default_rng(3).random(source).astype(dtype)
    factors = [shape[0] / source[0], shape[1] / source[1]] + [1] * (len(source) - 2)
    zoomed = ndi.zoom(array, factors, order=1, mode="nearest", grid_mode=True)
    resized = resize(array, shape, order=1)
    assert resized.shape == (*shape, *source[2:]) and resized.dtype == dtype
    assert np.allclose(resized, zoomed[: shape[0], : shape[1]], atol=1e-6)


def test_linear_resize_to_the_same_shape_is_a_copy():
    array = np.ones((4, 6), np.float32)
    same = resize(array, (4, 6), order=1)
    assert np.array_equal(same, array) and same is not array
