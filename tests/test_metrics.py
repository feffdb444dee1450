import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleuseg.errors import InputError
from nucleuseg.metrics import (
    THRESHOLDS,
    DatasetScore,
    ImageScore,
    dsb_score,
    iou_matrix,
    pixel_accuracy,
    score_dataset,
    score_image,
)


def reference_score(true: np.ndarray, pred: np.ndarray) -> float:
    """The metric from its definition: pairwise IoU with boolean masks, one-to-one matching."""
    true_ids = [i for i in np.unique(true) if i != 0]
    pred_ids = [j for j in np.unique(pred) if j != 0]
    iou = {}
    for i in true_ids:
        for j in pred_ids:
            a, b = true == i, pred == j
            iou[i, j] = Fraction(int((a & b).sum()), int((a | b).sum()))
    scores = []
    for t in (Fraction(50 + 5 * k, 100) for k in range(10)):
        # Greedy one-to-one matching; with IoU > 1/2 any matching is the only one.
        used_true, used_pred, tp = set(), set(), 0
        for (i, j), value in iou.items():
            if value > t and i not in used_true and j not in used_pred:
                used_true.add(i)
                used_pred.add(j)
                tp += 1
        fp, fn = len(pred_ids) - tp, len(true_ids) - tp
        scores.append(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return float(np.mean(scores))


@st.composite
def small_labels(draw):
    """A truth and a prediction that mostly copies it, so partial matches are common."""
    shape = draw(st.tuples(st.integers(1, 12), st.integers(1, 12)))
    ids = st.integers(0, 4)
    true = draw(arrays(np.int32, shape, elements=ids, fill=st.nothing()))
    other = draw(arrays(np.int32, shape, elements=ids, fill=st.nothing()))
    flips = st.sampled_from([False, False, False, True])
    changed = draw(arrays(bool, shape, elements=flips, fill=st.nothing()))
    return true, np.where(changed, other, true)


def blocky(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Label image of up to ``n`` random rectangles (later ones cover earlier ones)."""
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, 6, size=2)
        labels[r : r + h, c : c + w] = k
    return labels


# --------------------------------------------------------------------------- definition


def test_thresholds():
    assert THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert not THRESHOLDS.flags.writeable


def test_identical_labels_score_one():
    labels = blocky(np.random.default_rng(0), (30, 30), 8)
    result = score_image(labels, labels)
    assert result.score == 1.0
    assert result.tp.tolist() == [result.n_true] * 10
    assert result.fp.sum() == result.fn.sum() == 0
    assert result.precision == result.recall == result.f1 == result.mean_matched_iou == 1.0


def test_hand_computed_partial_overlaps():
    true = np.zeros((10, 20), np.int32)
    pred = np.zeros((10, 20), np.int32)
    true[0:5, 0:2] = 1  # 10 pixels
    pred[0:3, 0:2] = 7  # 6 pixels inside: IoU 6/10 = 0.6
    true[0:4, 5:10] = 2  # 20 pixels
    pred[0:4, 6:10] = 3  # 16 pixels inside: IoU 0.8
    true[6:8, 12:14] = 4  # 4 pixels
    pred[6:8, 13:15] = 9  # 2 shared, union 6: IoU 1/3, never a match
    pred[9, 19] = 5  # a false positive everywhere
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    assert true_ids.tolist() == [1, 2, 4]
    assert pred_ids.tolist() == [3, 5, 7, 9]
    expected = np.zeros((3, 4))
    expected[0, 2], expected[1, 0], expected[2, 3] = 0.6, 0.8, 1 / 3
    np.testing.assert_allclose(iou, expected)

    result = score_image(true, pred, image_id="hand")
    # IoU 0.6 matches at 0.50 and 0.55 only (strictly greater); IoU 0.8 up to 0.75.
    assert result.tp.tolist() == [2, 2, 1, 1, 1, 1, 0, 0, 0, 0]
    assert result.fp.tolist() == (4 - result.tp).tolist()
    assert result.fn.tolist() == (3 - result.tp).tolist()
    per_t = [2 / 5, 2 / 5, 1 / 6, 1 / 6, 1 / 6, 1 / 6, 0, 0, 0, 0]
    np.testing.assert_allclose(result.per_threshold, per_t)
    assert result.score == pytest.approx(np.mean(per_t))
    assert result.ap50 == pytest.approx(2 / 5)
    assert result.precision == pytest.approx(2 / 4)
    assert result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(4 / 7)
    assert result.mean_matched_iou == pytest.approx(0.7)
    assert result.score == pytest.approx(reference_score(true, pred))
    text = str(result)
    assert "image hand" in text and " 0.55       2       2       1  0.4000" in text


def test_empty_truth_and_empty_prediction_score_one():
    empty = np.zeros((5, 5), np.int32)
    result = score_image(empty, empty)
    assert result.score == 1.0
    assert result.per_threshold.tolist() == [1.0] * 10
    assert result.precision == result.recall == result.f1 == 1.0
    assert np.isnan(result.mean_matched_iou)
    assert iou_matrix(empty, empty)[0].shape == (0, 0)


def test_predictions_without_truth_score_zero():
    empty = np.zeros((5, 5), np.int32)
    pred = empty.copy()
    pred[1:3, 1:3] = 1
    result = score_image(empty, pred)
    assert result.score == 0.0
    assert result.fp.tolist() == [1] * 10
    assert result.precision == result.f1 == 0.0
    assert iou_matrix(empty, pred)[0].shape == (0, 1)


def test_truth_without_predictions_scores_zero():
    empty = np.zeros((5, 5), np.int32)
    true = empty.copy()
    true[1:3, 1:3] = 4
    true[4, 4] = 2
    result = score_image(true, empty)
    assert result.score == 0.0
    assert result.fn.tolist() == [2] * 10
    assert result.recall == result.f1 == 0.0
    assert iou_matrix(true, empty)[0].shape == (2, 0)


def test_exact_threshold_is_not_a_match():
    true = np.zeros((1, 20), np.int32)
    pred = np.zeros((1, 20), np.int32)
    true[0, :20] = 1
    pred[0, :15] = 1  # IoU exactly 0.75
    assert score_image(true, pred).tp.tolist() == [1] * 5 + [0] * 5


def test_bool_arrays_are_one_object():
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert dsb_score(mask, mask.astype(np.uint8) * 3) == 1.0
    assert iou_matrix(mask, mask)[1].tolist() == [1]


# --------------------------------------------------------------------------- properties


@given(small_labels())
@settings(max_examples=100, deadline=None)
def test_matches_brute_force_reference(pair):
    true, pred = pair
    assert score_image(true, pred).score == pytest.approx(reference_score(true, pred))


@given(small_labels(), st.randoms(use_true_random=False))
@settings(max_examples=50, deadline=None)
def test_invariant_under_relabelling(pair, rnd):
    true, pred = pair
    new_ids = rnd.sample(range(1, 10**6), 4)  # distinct ids with large gaps

    def relabel(labels):
        lut = np.array([0, *new_ids], np.int64)
        return lut[labels]

    assert score_image(relabel(true), relabel(pred)).score == score_image(true, pred).score


def test_large_ids_take_the_sorting_path():
    rng = np.random.default_rng(3)
    true = blocky(rng, (20, 20), 6)
    pred = blocky(rng, (20, 20), 6)
    big = np.where(pred > 0, pred.astype(np.int64) + 2_000_000_000, 0)
    iou_small, _, _ = iou_matrix(true, pred)
    iou_big, _, pred_ids = iou_matrix(true, big)
    np.testing.assert_array_equal(iou_small, iou_big)
    assert pred_ids.min() > 2_000_000_000


def test_many_nuclei_take_the_sparse_path():
    rng = np.random.default_rng(4)
    true = blocky(rng, (60, 60), 400)
    pred = np.roll(true, 1, axis=1)
    pred[:, 0] = 0
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    assert true_ids.size * pred_ids.size > 65536  # more pairs than the dense histogram allows
    expected = np.zeros_like(iou)
    for a, i in enumerate(true_ids):
        for j in np.unique(pred[true == i]):
            if j:
                b = np.searchsorted(pred_ids, j)
                inter = ((true == i) & (pred == j)).sum()
                expected[a, b] = inter / ((true == i) | (pred == j)).sum()
    np.testing.assert_allclose(iou, expected)
    tp = (expected[:, :, None] > THRESHOLDS).sum(axis=(0, 1))
    assert score_image(true, pred).tp.tolist() == tp.tolist()


def test_iou_matrix_equals_pairwise_iou():
    rng = np.random.default_rng(5)
    true, pred = blocky(rng, (25, 25), 10), blocky(rng, (25, 25), 10)
    iou, true_ids, pred_ids = iou_matrix(true, pred)
    for a, i in enumerate(true_ids):
        for b, j in enumerate(pred_ids):
            inter = ((true == i) & (pred == j)).sum()
            union = ((true == i) | (pred == j)).sum()
            assert iou[a, b] == pytest.approx(inter / union)


# --------------------------------------------------------------------------- datasets


def test_dataset_score_pools_counts_and_averages_images():
    rng = np.random.default_rng(6)
    truths = {f"img{k}": blocky(rng, (20, 20), 5) for k in range(4)}
    preds = {key: np.roll(labels, k, axis=0) for k, (key, labels) in enumerate(truths.items())}
    preds["img3"] = np.zeros((20, 20), np.int32)
    result = score_dataset(truths, preds)
    images = [score_image(truths[key], preds[key], key) for key in truths]
    assert isinstance(result, DatasetScore)
    assert all(isinstance(image, ImageScore) for image in result.per_image)
    assert [image.image_id for image in result.per_image] == list(truths)
    assert result.score == pytest.approx(np.mean([image.score for image in images]))
    assert result.ap50 == pytest.approx(np.mean([image.ap50 for image in images]))
    assert result.tp.tolist() == np.sum([image.tp for image in images], axis=0).tolist()
    assert result.fn.tolist() == np.sum([image.fn for image in images], axis=0).tolist()
    tp = int(result.tp[0])
    assert result.precision == pytest.approx(tp / result.n_pred)
    assert result.recall == pytest.approx(tp / result.n_true)
    matched = np.concatenate([image.matched_iou for image in images])
    assert result.mean_matched_iou == pytest.approx(matched.mean())
    kinds = {"img0": "fluorescence", "img1": "histology", "img2": "histology", "img3": "histology"}
    by_kind = result.by_kind(kinds)
    assert list(by_kind) == ["fluorescence", "histology"]
    assert by_kind["fluorescence"] == pytest.approx(images[0].score)
    assert by_kind["histology"] == pytest.approx(np.mean([i.score for i in images[1:]]))
    table = result.table().splitlines()
    assert table[0].split() == ["t", "TP", "FP", "FN", "score"]
    assert len(table) == 11 and table[1].startswith(" 0.50")
    assert "4 images: score" in str(result)
    with pytest.raises(InputError, match="img3"):
        result.by_kind({"img0": "a", "img1": "a", "img2": "a"})


def test_score_dataset_requires_the_same_ids():
    a = np.ones((3, 3), np.int32)
    with pytest.raises(InputError, match=r"no prediction for 1 image\(s\): 'y'"):
        score_dataset({"x": a, "y": a}, {"x": a})
    with pytest.raises(InputError, match=r"not in truths: 'z'"):
        score_dataset({"x": a}, {"x": a, "z": a})
    with pytest.raises(InputError, match="empty"):
        score_dataset({}, {})
    with pytest.raises(InputError, match=r"image 'x'.*shape"):
        score_dataset({"x": a}, {"x": np.ones((3, 4), np.int32)})


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("true", "pred", "pattern"),
    [
        (np.zeros((3, 3, 1), int), np.zeros((3, 3, 1), int), "true must be a 2-D"),
        (np.zeros((3, 3), int), np.zeros(9, int), "pred must be a 2-D"),
        (np.zeros((3, 3), int), np.zeros((3, 4), int), r"true has shape \(3, 3\).*\(3, 4\)"),
        (np.zeros((3, 3)), np.zeros((3, 3), int), "true must have an integer dtype"),
        (np.zeros((3, 3), int), np.full((3, 3), np.nan), "pred contains NaN"),
        (-np.ones((3, 3), int), np.zeros((3, 3), int), "true has negative labels"),
    ],
)
def test_validation_names_the_argument(true, pred, pattern):
    with pytest.raises(InputError, match=pattern):
        score_image(true, pred)


def test_large_image_scores_fast():
    rng = np.random.default_rng(7)
    true = np.zeros((1000, 1000), np.int32)
    centres = rng.integers(0, 980, size=(500, 2))
    for k, (r, c) in enumerate(centres, start=1):
        true[r : r + 20, c : c + 20] = k
    pred = np.roll(true, 2, axis=1)
    score_image(true, pred)  # warm up
    start = time.perf_counter()
    result = score_image(true, pred)
    elapsed = time.perf_counter() - start
    assert result.n_true == len(np.unique(true)) - 1
    assert elapsed < 0.25  # typically ~15 ms; loose so a busy machine does not fail it


def test_pixel_accuracy_counts_foreground_calls_and_ignores_instances():
    true = np.zeros((20, 20), int)
    true[2:8, 2:8], true[2:8, 8:14] = 1, 2  # two touching nuclei, 72 of 400 pixels
    assert pixel_accuracy(true, true) == 1.0
    merged = (true > 0).astype(int)  # one object: every pixel right, no nucleus found
    assert pixel_accuracy(true, merged) == 1.0 and score_image(true, merged).score == 0.0
    # Predicting nothing at all is still right on the 82 % of pixels that are background.
    assert pixel_accuracy(true, np.zeros_like(true)) == pytest.approx(1 - 72 / 400)
    assert pixel_accuracy(true.astype(bool), true > 0) == 1.0
    with pytest.raises(InputError, match="shape"):
        pixel_accuracy(true, true[:10])
    assert pixel_accuracy(np.zeros((0, 3), int), np.zeros((0, 3), int)) == 1.0
