"""The synthetic nuclei generator: determinism, label exactness, realism checks, lazy datasets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from nucleuseg.data import synthetic
from nucleuseg.data.base import KINDS, Dataset, Sample
from nucleuseg.data.synthetic import make_synthetic, synthetic_sample
from nucleuseg.errors import InputError


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64).mean(axis=2)


def _touching_pairs(labels: np.ndarray) -> int:
    """Number of 4-neighbour pixel pairs that belong to two different nuclei."""
    pairs = 0
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        pairs += int(((a > 0) & (b > 0) & (a != b)).sum())
    return pairs


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_dtypes_and_kind(kind):
    s = synthetic_sample(seed=4, size=(72, 96), kind=kind)
    assert isinstance(s, Sample)
    assert s.image.shape == (72, 96, 3) and s.image.dtype == np.uint8
    assert s.labels.shape == (72, 96) and s.labels.dtype == np.int32
    assert s.kind == kind and s.shape == (72, 96)
    assert s.image_id == "synthetic-s4"
    assert synthetic_sample(4, 32, kind, image_id="mine").image_id == "mine"


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_sample(kind):
    a = synthetic_sample(11, 80, kind)
    b = synthetic_sample(11, 80, kind)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)


def test_random_kind_equals_the_named_kind():
    for seed in range(6):
        drawn = synthetic_sample(seed, 48)
        named = synthetic_sample(seed, 48, drawn.kind)
        assert np.array_equal(drawn.image, named.image)
        assert np.array_equal(drawn.labels, named.labels)


def test_different_seeds_differ():
    for kind in KINDS:
        a, b = synthetic_sample(1, 64, kind), synthetic_sample(2, 64, kind)
        assert not np.array_equal(a.image, b.image)
        assert not np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("size", [(37, 91), (91, 37), 8, (8, 200)])
def test_odd_and_tiny_sizes(size):
    shape = (size, size) if isinstance(size, int) else size
    for kind in KINDS:
        s = synthetic_sample(5, size, kind)
        assert s.image.shape == (*shape, 3) and s.labels.shape == shape


def test_label_ids_are_exactly_one_to_n_and_every_nucleus_is_visible():
    for seed in range(12):
        labels = synthetic_sample(seed, 96).labels
        ids = np.unique(labels)
        n = int(labels.max())
        assert n >= 1
        assert np.array_equal(ids, np.arange(n + 1))
        assert np.bincount(labels.ravel())[1:].min() >= 5


def test_labels_match_the_visible_nuclei():
    for seed in range(8):
        for kind in KINDS:
            s = synthetic_sample(seed, 96, kind)
            gray = _gray(s.image)
            inside = gray[s.labels > 0].mean()
            outside = gray[s.labels == 0].mean()
            if kind == "fluorescence":
                assert inside > outside + 5, (seed, kind, inside, outside)
            else:
                assert inside < outside - 5, (seed, kind, inside, outside)


def test_fluorescence_is_gray_and_histology_is_coloured():
    fluo = synthetic_sample(3, 64, "fluorescence").image
    assert np.array_equal(fluo[..., 0], fluo[..., 1]) and np.array_equal(fluo[..., 1], fluo[..., 2])
    he = synthetic_sample(3, 64, "histology").image.astype(int)
    # H&E: blue above green in both stains, so the tissue reads pink/purple.
    assert (he[..., 2] - he[..., 1]).mean() > 5


def test_fluorescence_brightness_ranges_from_dim_to_saturated():
    peaks = [np.percentile(synthetic_sample(s, 64, "fluorescence").image, 99.5) for s in range(40)]
    assert min(peaks) < 80 and max(peaks) == 255


def test_crowded_images_have_touching_nuclei():
    for kind in ("fluorescence", "histology"):
        touching = [_touching_pairs(synthetic_sample(s, 128, kind).labels) for s in range(10)]
        assert sum(t > 0 for t in touching) >= 2, (kind, touching)


def test_nucleus_sizes_vary_between_images():
    radii = []
    for seed in range(30):
        labels = synthetic_sample(seed, 128, "fluorescence").labels
        areas = np.bincount(labels.ravel())[1:]
        radii.append(np.sqrt(np.median(areas) / np.pi))
    assert min(radii) < 5 and max(radii) > 12


def test_overlapping_nuclei_the_later_one_owns_the_shared_pixels():
    # Nucleus 0 covers pixels 0..9, nucleus 1 covers pixels 6..15 of a 4x4 image.
    flat = np.concatenate([np.arange(0, 10), np.arange(6, 16)])
    owner = np.repeat([0, 1], 10)
    area = np.array([10, 10])
    labels, keep = synthetic._resolve_labels((4, 4), flat, owner, area, area)
    assert keep.all()
    assert np.array_equal(labels.ravel(), [1] * 6 + [2] * 10)


def test_mostly_hidden_nuclei_are_removed_and_ids_stay_sequential():
    # Nucleus 1 is hidden under nucleus 2 except for one pixel: it goes away entirely.
    flat = np.concatenate([np.arange(0, 4), np.arange(4, 14), np.arange(5, 14)])
    owner = np.repeat([0, 1, 2], [4, 10, 9])
    area = np.array([4, 10, 9])
    labels, keep = synthetic._resolve_labels((4, 4), flat, owner, area, area)
    assert keep.tolist() == [False, False, True] or keep.tolist() == [True, False, True]
    assert np.array_equal(np.unique(labels), np.arange(int(labels.max()) + 1))
    assert (labels.ravel()[5:14] == labels.max()).all()


def test_generation_is_fast():
    synthetic_sample(0, 256)  # warm-up
    started = time.perf_counter()
    for seed in range(8):
        synthetic_sample(seed, 256)
    # Typically ~15 ms each; the bound only guards against accidental per-pixel loops.
    assert (time.perf_counter() - started) / 8 < 0.25


def test_kind_odds_are_dsb_like():
    kinds = [synthetic._pick_kind(seed) for seed in range(2000)]
    share = {k: kinds.count(k) / len(kinds) for k in KINDS}
    assert abs(share["fluorescence"] - 0.65) < 0.05
    assert abs(share["histology"] - 0.2) < 0.04
    assert abs(share["brightfield"] - 0.15) < 0.04


def test_make_synthetic_is_a_lazy_dataset(monkeypatch):
    calls = []
    real = synthetic.synthetic_sample

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "synthetic_sample", counting)
    ds = make_synthetic(20, size=(40, 56), seed=3)
    assert isinstance(ds, Dataset) and len(ds) == 20
    assert ds.ids[:2] == ["synthetic-0000", "synthetic-0001"]
    assert ds.info("synthetic-0005") == {"kind": ds.kinds()["synthetic-0005"], "shape": (40, 56)}
    train, val = ds.split(0.25, seed=0)
    assert len(train) + len(val) == 20
    assert calls == []
    first = ds[0]
    assert len(calls) == 1 and first.image.shape == (40, 56, 3)
    again = ds["synthetic-0000"]
    assert len(calls) == 1, "a second access is served from the cache"
    assert np.array_equal(first.image, again.image) and again.kind == ds.info(ds.ids[0])["kind"]


def test_make_synthetic_returns_fresh_arrays():
    ds = make_synthetic(2, size=32, seed=0)
    a = ds[0]
    a.image[:] = 0
    a.labels[:] = 0
    b = ds[0]
    assert b.labels.max() > 0 and b.image.any()


def test_make_synthetic_images_do_not_depend_on_n():
    short, long = make_synthetic(3, size=40, seed=7), make_synthetic(9, size=40, seed=7)
    for i in range(3):
        assert short.ids[i] == long.ids[i]
        assert np.array_equal(short[i].image, long[i].image)
    other = make_synthetic(3, size=40, seed=8)
    assert not np.array_equal(short[0].image, other[0].image)


def test_make_synthetic_kinds_are_respected():
    only = make_synthetic(6, size=32, seed=1, kinds=["histology"])
    assert set(only.kinds().values()) == {"histology"}
    assert {s.kind for s in only} == {"histology"}
    two = make_synthetic(40, size=32, seed=1, kinds=("brightfield", "fluorescence"))
    assert set(two.kinds().values()) == {"brightfield", "fluorescence"}
    mixed = make_synthetic(60, size=32, seed=1)
    assert set(mixed.kinds().values()) == set(KINDS)


def test_make_synthetic_samples_match_synthetic_sample():
    ds = make_synthetic(3, size=48, seed=2)
    s = ds[1]
    direct = synthetic_sample(synthetic._child_seed(2, 1), 48, s.kind, image_id=s.image_id)
    assert np.array_equal(s.image, direct.image) and np.array_equal(s.labels, direct.labels)


def test_empty_and_large_dataset_ids():
    assert len(make_synthetic(0, size=16)) == 0
    assert make_synthetic(12000, size=16).ids[-1] == "synthetic-11999"


@pytest.mark.parametrize(
    "call",
    [
        lambda: synthetic_sample(-1),
        lambda: synthetic_sample(1.5),
        lambda: synthetic_sample(0, size=4),
        lambda: synthetic_sample(0, size=(32,)),
        lambda: synthetic_sample(0, size=(32, 32.0)),
        lambda: synthetic_sample(0, size=True),
        lambda: synthetic_sample(0, kind="phase-contrast"),
        lambda: make_synthetic(-1),
        lambda: make_synthetic(2, seed=-3),
        lambda: make_synthetic(2, kinds=[]),
        lambda: make_synthetic(2, kinds="histology"),
        lambda: make_synthetic(2, kinds=["histology", "h&e"]),
    ],
)
def test_bad_arguments_raise_input_error(call):
    with pytest.raises(InputError):
        call()


def test_kinds_are_recognised_by_the_kind_classifier():
    from nucleuseg.data.kinds import image_kind

    for kind in KINDS:
        found = [image_kind(synthetic_sample(s, 64, kind).image) for s in range(20)]
        assert found.count(kind) >= 16, (kind, found)
