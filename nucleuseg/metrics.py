"""The DSB 2018 score and the counts behind it.

Kaggle scored each image by average precision over IoU thresholds ``t = 0.50, 0.55, ..., 0.95``.
A predicted nucleus *matches* a true nucleus at ``t`` when their intersection over union is
strictly greater than ``t``. Because ``IoU > 0.5`` pairs each object with at most one other, the
matches are simply the pairs above ``t``, with no assignment to solve. Then

- ``TP(t)`` = matched pairs, ``FP(t)`` = predicted - TP, ``FN(t)`` = true - TP,
- ``score(t) = TP / (TP + FP + FN)``,
- the image score is the mean of ``score(t)`` over the ten thresholds, and the dataset score is the
  mean of the image scores.

An image with no nuclei in the truth *and* none predicted scores 1 at every threshold (nothing to
find and nothing wrongly found); no truth but some predictions scores 0, as does truth with no
predictions.

All IoUs of an image come from one joint histogram of the two label images, so scoring is a few
passes over the pixels whatever the number of nuclei.

Label images are ``(H, W)`` integer arrays, 0 for background and one positive id per nucleus; the
ids need not be sequential. A boolean array is read as labels 0/1, that is one object made of all
its ``True`` pixels.

Examples
--------
>>> import numpy as np
>>> true = np.array([[1, 1, 0, 0],
...                  [1, 1, 0, 2]])
>>> pred = np.array([[5, 5, 0, 0],
...                  [5, 0, 0, 0]])
>>> result = score_image(true, pred)
>>> result.tp.tolist()  # IoU 0.75 matches up to t = 0.70
[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
>>> round(result.score, 3)
0.25
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nucleuseg.errors import InputError
from nucleuseg.masks import check_labels

__all__ = [
    "THRESHOLDS",
    "DatasetScore",
    "ImageScore",
    "dsb_score",
    "iou_matrix",
    "pixel_accuracy",
    "score_dataset",
    "score_image",
]

THRESHOLDS: np.ndarray = np.round(0.5 + 0.05 * np.arange(10), 2)
"""The ten IoU thresholds of the DSB 2018 metric, 0.50 to 0.95."""
THRESHOLDS.setflags(write=False)


# --------------------------------------------------------------------------- IoU


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every true nucleus with every predicted nucleus.

    Parameters
    ----------
    true, pred : (H, W) integer arrays
        Label images of the same shape; 0 is background.

    Returns
    -------
    iou : numpy.ndarray
        ``(n_true, n_pred)`` float64; row ``i`` is ``true_ids[i]``, column ``j`` is
        ``pred_ids[j]``.
    true_ids, pred_ids : numpy.ndarray
        The nucleus ids present in each image, ascending.

    Raises
    ------
    InputError
        If an array is not a 2-D non-negative integer (or boolean) array, or the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> iou, true_ids, pred_ids = iou_matrix(np.array([[3, 3, 0, 4]]), np.array([[1, 0, 0, 4]]))
    >>> iou
    array([[0.5, 0. ],
           [0. , 1. ]])
    >>> true_ids.tolist(), pred_ids.tolist()
    ([3, 4], [1, 4])
    """
    overlaps = _overlaps(*_check_pair(true, pred))
    iou = np.zeros((overlaps.true_ids.size, overlaps.pred_ids.size))
    iou[overlaps.rows, overlaps.cols] = overlaps.iou
    return iou, overlaps.true_ids, overlaps.pred_ids


@dataclass(frozen=True)
class _Overlaps:
    """Sparse IoU: the pairs with a non-empty intersection."""

    true_ids: np.ndarray
    pred_ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    iou: np.ndarray


def _check_pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for name, array in (("true", true), ("pred", pred)):
        if isinstance(array, np.ndarray) and np.issubdtype(array.dtype, np.floating):
            if np.isnan(array).any():
                raise InputError(f"{name} contains NaN; a label image holds integer ids")
    true = check_labels(true, "true")
    pred = check_labels(pred, "pred")
    if true.shape != pred.shape:
        raise InputError(f"true has shape {true.shape} but pred has shape {pred.shape}")
    return true, pred


def _dense_index(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to 0..n (0 = background); return (ids of 1..n, dense index per pixel)."""
    top = int(flat.max()) if flat.size else 0
    if top <= 4 * flat.size + 65536:
        # Cheap path: a lookup table over the id range avoids sorting the pixels.
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(top + 1, np.intp)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids, lut[flat]
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] == 0:
        return ids[1:], inverse
    return ids, inverse + 1


def _overlaps(true: np.ndarray, pred: np.ndarray) -> _Overlaps:
    true_ids, t = _dense_index(true.ravel())
    pred_ids, p = _dense_index(pred.ravel())
    n_t, n_p = true_ids.size + 1, pred_ids.size + 1
    if n_t * n_p <= max(t.size, 1 << 16):
        joint = np.bincount(t * n_p + p, minlength=n_t * n_p).reshape(n_t, n_p)
        area_t, area_p = joint.sum(axis=1), joint.sum(axis=0)
        rows, cols = np.nonzero(joint[1:, 1:])
        inter = joint[1:, 1:][rows, cols]
    else:
        # Many nuclei: histogram only the pairs that actually meet.
        area_t = np.bincount(t, minlength=n_t)
        area_p = np.bincount(p, minlength=n_p)
        both = (t > 0) & (p > 0)
        keys, inter = np.unique(t[both] * n_p + p[both], return_counts=True)
        rows, cols = keys // n_p - 1, keys % n_p - 1
    union = area_t[rows + 1] + area_p[cols + 1] - inter
    return _Overlaps(true_ids, pred_ids, rows, cols, inter / union)


# --------------------------------------------------------------------------- results


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den else empty


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


# eq=False: the fields hold arrays, whose == is elementwise; results compare by identity.
class _RatesAt50:
    """Precision, recall and F1 at ``t = 0.5`` from ``tp``, ``fp``, ``fn``, ``n_true``, ``n_pred``.

    A score over no nuclei on either side counts as perfect (1.0), as the DSB score does.
    """

    @property
    def precision(self) -> float:
        """``TP / n_pred`` at ``t = 0.5`` (pooled over images for a dataset)."""
        return _ratio(self.tp[0], self.n_pred, 1.0 if self.n_true == 0 else 0.0)

    @property
    def recall(self) -> float:
        """``TP / n_true`` at ``t = 0.5`` (pooled over images for a dataset)."""
        return _ratio(self.tp[0], self.n_true, 1.0 if self.n_pred == 0 else 0.0)

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)`` at ``t = 0.5`` (pooled over images for a dataset)."""
        tp, fp, fn = self.tp[0], self.fp[0], self.fn[0]
        return _ratio(2 * tp, 2 * tp + fp + fn, 1.0)


@dataclass(frozen=True, eq=False)
class ImageScore(_RatesAt50):
    """The DSB score of one image and the counts behind it.

    Attributes
    ----------
    image_id : str or None
        The image's id, if known.
    thresholds : numpy.ndarray
        The IoU thresholds, normally :data:`THRESHOLDS`.
    tp, fp, fn : numpy.ndarray
        True positives, false positives and false negatives at each threshold.
    n_true, n_pred : int
        Number of true and predicted nuclei.
    matched_iou : numpy.ndarray
        IoU of every matched pair at ``t = 0.5`` (pairs with ``IoU > 0.5``).

    Notes
    -----
    Precision, recall and F1 are taken at ``t = 0.5``. When both images are empty they are 1, like
    the score; otherwise an empty denominator gives 0.
    """

    image_id: str | None
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_true: int
    n_pred: int
    matched_iou: np.ndarray

    @property
    def per_threshold(self) -> np.ndarray:
        """``TP / (TP + FP + FN)`` at each threshold (1 where truth and prediction are empty)."""
        den = self.tp + self.fp + self.fn
        return np.where(den > 0, self.tp / np.maximum(den, 1), 1.0)

    @property
    def score(self) -> float:
        """The DSB image score: the mean of :attr:`per_threshold`."""
        return float(self.per_threshold.mean())

    @property
    def ap50(self) -> float:
        """The score at ``t = 0.5``."""
        return float(self.per_threshold[0])

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the pairs matched at ``t = 0.5``; NaN when there are none."""
        return float(self.matched_iou.mean()) if self.matched_iou.size else float("nan")

    def __repr__(self) -> str:
        return (
            f"ImageScore(image_id={self.image_id!r}, score={self.score:.4f}, "
            f"n_true={self.n_true}, n_pred={self.n_pred})"
        )

    def __str__(self) -> str:
        name = "image" if self.image_id is None else f"image {self.image_id}"
        head = (
            f"{name}: score {self.score:.4f}, {self.n_true} true, {self.n_pred} predicted\n"
            f"at IoU>0.5: AP {self.ap50:.4f}, precision {self.precision:.4f}, "
            f"recall {self.recall:.4f}, F1 {self.f1:.4f}, "
            f"mean matched IoU {self.mean_matched_iou:.4f}"
        )
        return head + "\n" + _table(self.thresholds, self.tp, self.fp, self.fn, self.per_threshold)


@dataclass(frozen=True, eq=False)
class DatasetScore(_RatesAt50):
    """The DSB score of a set of images: the mean of the image scores, with pooled counts.

    Attributes
    ----------
    per_image : tuple of ImageScore
        One result per image, in the order scored.

    Notes
    -----
    :attr:`score` and :attr:`ap50` average the images, as Kaggle did. :attr:`tp`, :attr:`fp`,
    :attr:`fn`, :attr:`precision`, :attr:`recall`, :attr:`f1` and :attr:`mean_matched_iou` pool
    the nuclei of all images.
    """

    per_image: tuple[ImageScore, ...]

    @property
    def thresholds(self) -> np.ndarray:
        """The IoU thresholds."""
        return self.per_image[0].thresholds

    @property
    def per_threshold(self) -> np.ndarray:
        """Mean image score at each threshold."""
        return np.mean([image.per_threshold for image in self.per_image], axis=0)

    @property
    def score(self) -> float:
        """The DSB score: the mean of the image scores."""
        return float(np.mean([image.score for image in self.per_image]))

    @property
    def ap50(self) -> float:
        """Mean image score at ``t = 0.5``."""
        return float(self.per_threshold[0])

    @property
    def tp(self) -> np.ndarray:
        """True positives per threshold, summed over images."""
        return np.sum([image.tp for image in self.per_image], axis=0)

    @property
    def fp(self) -> np.ndarray:
        """False positives per threshold, summed over images."""
        return np.sum([image.fp for image in self.per_image], axis=0)

    @property
    def fn(self) -> np.ndarray:
        """False negatives per threshold, summed over images."""
        return np.sum([image.fn for image in self.per_image], axis=0)

    @property
    def n_true(self) -> int:
        """True nuclei in all images."""
        return sum(image.n_true for image in self.per_image)

    @property
    def n_pred(self) -> int:
        """Predicted nuclei in all images."""
        return sum(image.n_pred for image in self.per_image)

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of all pairs matched at ``t = 0.5``; NaN when there are none."""
        ious = np.concatenate([image.matched_iou for image in self.per_image])
        return float(ious.mean()) if ious.size else float("nan")

    def by_kind(self, kinds: Mapping[str, str]) -> dict[str, float]:
        """Mean image score per image kind.

        Parameters
        ----------
        kinds : mapping of str to str
            ``{image_id: kind}``; must cover every scored image.

        Returns
        -------
        dict of str to float
            Kinds in sorted order.

        Raises
        ------
        InputError
            If a scored image has no id or no kind.

        Examples
        --------
        >>> import numpy as np
        >>> a, z = np.ones((2, 2), int), np.zeros((2, 2), int)
        >>> result = score_dataset({"x": a, "y": a}, {"x": a, "y": z})
        >>> result.by_kind({"x": "fluorescence", "y": "histology"})
        {'fluorescence': 1.0, 'histology': 0.0}
        """
        missing = [image.image_id for image in self.per_image if image.image_id not in kinds]
        if missing:
            raise InputError(f"kinds has no entry for {len(missing)} image(s): {_few(missing)}")
        groups: dict[str, list[float]] = {}
        for image in self.per_image:
            groups.setdefault(kinds[image.image_id], []).append(image.score)
        return {kind: float(np.mean(groups[kind])) for kind in sorted(groups)}

    def table(self) -> str:
        """Per-threshold table: ``t``, pooled TP, FP, FN, and the mean image score at ``t``."""
        return _table(self.thresholds, self.tp, self.fp, self.fn, self.per_threshold)

    def __repr__(self) -> str:
        return f"DatasetScore(images={len(self.per_image)}, score={self.score:.4f})"

    def __str__(self) -> str:
        head = (
            f"{len(self.per_image)} images: score {self.score:.4f}, "
            f"{self.n_true} true, {self.n_pred} predicted nuclei\n"
            f"at IoU>0.5: AP {self.ap50:.4f}, precision {self.precision:.4f}, "
            f"recall {self.recall:.4f}, F1 {self.f1:.4f}, "
            f"mean matched IoU {self.mean_matched_iou:.4f}"
        )
        return head + "\n" + self.table()


def _table(thresholds, tp, fp, fn, scores) -> str:
    lines = [f"{'t':>5} {'TP':>7} {'FP':>7} {'FN':>7} {'score':>7}"]
    lines += [
        f"{t:5.2f} {a:7d} {b:7d} {c:7d} {s:7.4f}"
        for t, a, b, c, s in zip(
            thresholds.tolist(), tp.tolist(), fp.tolist(), fn.tolist(), scores.tolist(), strict=True
        )
    ]
    return "\n".join(lines)


def _few(items: list, limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- scoring


def score_image(true: np.ndarray, pred: np.ndarray, image_id: str | None = None) -> ImageScore:
    """Score one predicted label image against the truth.

    Parameters
    ----------
    true, pred : (H, W) integer arrays
        True and predicted label images of the same shape (0 = background, ids need not be
        sequential; a boolean array is one object).
    image_id : str, optional
        Carried into the result.

    Returns
    -------
    ImageScore

    Raises
    ------
    InputError
        If an array is not a 2-D non-negative integer (or boolean) array, or the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> true = np.zeros((4, 4), int)
    >>> true[:2, :2] = 1
    >>> score_image(true, true).score
    1.0
    >>> score_image(np.zeros((4, 4), int), np.zeros((4, 4), int)).score  # nothing to find
    1.0
    >>> print(score_image(true, np.zeros((4, 4), int)))  # doctest: +ELLIPSIS
    image: score 0.0000, 1 true, 0 predicted
    ...
     0.50       0       0       1  0.0000
    ...
    """
    overlaps = _overlaps(*_check_pair(true, pred))
    n_true, n_pred = int(overlaps.true_ids.size), int(overlaps.pred_ids.size)
    above = overlaps.iou[:, None] > THRESHOLDS[None, :]
    tp = above.sum(axis=0).astype(np.int64)
    return ImageScore(
        image_id=image_id,
        thresholds=THRESHOLDS,
        tp=_readonly(tp),
        fp=_readonly(n_pred - tp),
        fn=_readonly(n_true - tp),
        n_true=n_true,
        n_pred=n_pred,
        matched_iou=_readonly(overlaps.iou[overlaps.iou > THRESHOLDS[0]]),
    )


def score_dataset(
    truths: Mapping[str, np.ndarray], preds: Mapping[str, np.ndarray]
) -> DatasetScore:
    """Score predicted label images against the truth, image by image.

    Parameters
    ----------
    truths, preds : mapping of str to (H, W) integer array
        Label images keyed by image id; both must hold the same ids.

    Returns
    -------
    DatasetScore
        Images in the order of ``truths``.

    Raises
    ------
    InputError
        If ``truths`` or ``preds`` is not a mapping, the id sets differ (naming the missing
        ids), there are no images, or a pair of images is invalid (naming the image).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[1, 1, 0, 2]])
    >>> result = score_dataset({"a": a, "b": a}, {"a": a, "b": np.zeros_like(a)})
    >>> result.score, result.tp[0], result.fn[0]
    (0.5, np.int64(2), np.int64(2))
    """
    for name, mapping in (("truths", truths), ("preds", preds)):
        if not isinstance(mapping, Mapping):
            raise InputError(
                f"{name} must be a mapping of image id to label image, got {type(mapping).__name__}"
            )
    missing = [key for key in truths if key not in preds]
    extra = [key for key in preds if key not in truths]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction for {len(missing)} image(s): {_few(missing)}")
        if extra:
            parts.append(f"predictions for {len(extra)} image(s) not in truths: {_few(extra)}")
        raise InputError("truths and preds must have the same image ids; " + "; ".join(parts))
    if not truths:
        raise InputError("truths is empty: there are no images to score")
    results = []
    for image_id, true in truths.items():
        try:
            results.append(score_image(true, preds[image_id], image_id=image_id))
        except InputError as err:
            raise InputError(f"image {image_id!r}: {err}") from None
    return DatasetScore(tuple(results))


def dsb_score(true: np.ndarray, pred: np.ndarray) -> float:
    """The DSB 2018 score of one image: shortcut for ``score_image(true, pred).score``.

    Examples
    --------
    >>> import numpy as np
    >>> dsb_score(np.array([[1, 1, 0]]), np.array([[4, 4, 0]]))
    1.0
    """
    return score_image(true, pred).score


def pixel_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """The share of pixels whose foreground / background call is right.

    This is the measure the Keras notebooks of DSB 2018 trained and tuned with. It is given here to
    compare with, not to choose models by: it ignores where one nucleus ends and the next begins,
    so a prediction that merges every pair of touching nuclei loses almost nothing on it, and as
    most pixels are background, a network that finds few nuclei still scores high.

    Parameters
    ----------
    true, pred : ndarray
        Label images of one shape (or boolean masks); any positive id counts as foreground.

    Returns
    -------
    float
        ``mean((true > 0) == (pred > 0))``, 1.0 for an empty image.

    Examples
    --------
    >>> import numpy as np
    >>> true = np.array([[1, 1, 0, 2, 2, 0, 0, 0]])
    >>> merged = np.array([[1, 1, 1, 1, 1, 0, 0, 0]])   # two nuclei as one
    >>> pixel_accuracy(true, merged), dsb_score(true, merged)
    (0.875, 0.0)
    """
    true, pred = _check_pair(true, pred)
    return float(np.mean((true > 0) == (pred > 0))) if true.size else 1.0
