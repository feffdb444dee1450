import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleuseg.errors import InputError, MaskOverlapError
from nucleuseg.masks import (
    boundaries,
    check_labels,
    make_targets,
    merge_masks,
    relabel_sequential,
    split_labels,
    touching,
)

label_images = arrays(
    np.int32,
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.integers(0, 6),
)


@given(label_images)
@settings(max_examples=60, deadline=None)
def test_split_then_merge_is_identity_up_to_relabelling(labels):
    masks = split_labels(labels)
    merged = merge_masks(list(masks), shape=labels.shape)
    assert np.array_equal(merged, relabel_sequential(labels))
    assert np.array_equal(split_labels(merged), masks)


@given(label_images)
@settings(max_examples=60, deadline=None)
def test_relabel_sequential_keeps_partition(labels):
    out = relabel_sequential(labels)
    ids = np.unique(out)
    assert ids[0] == 0 or labels.min() > 0
    assert set(ids[ids > 0]) == set(range(1, len(ids[ids > 0]) + 1))
    # same partition: pixels share a label before iff after
    flat_a, flat_b = labels.ravel(), out.ravel()
    pairs = {(a, b) for a, b in zip(flat_a, flat_b, strict=True)}
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})


def test_merge_overlap_policies():
    a = np.zeros((4, 4), bool)
    a[0:3, 0:3] = True
    b = np.zeros((4, 4), bool)
    b[2:4, 2:4] = True
    with pytest.raises(MaskOverlapError, match="mask 1 overlaps mask 0 on 1 pixels"):
        merge_masks([a, b])
    assert merge_masks([a, b], overlap="first")[2, 2] == 1
    assert merge_masks([a, b], overlap="last")[2, 2] == 2
    assert merge_masks([a, b], overlap="smallest")[2, 2] == 2
    assert merge_masks([a, b], overlap="largest")[2, 2] == 1
    with pytest.raises(InputError, match="overlap must be one of"):
        merge_masks([a], overlap="vote")


def test_merge_rejects_mixed_shapes_and_needs_shape_when_empty():
    with pytest.raises(InputError, match="one shape"):
        merge_masks([np.zeros((2, 2)), np.zeros((3, 2))])
    with pytest.raises(InputError, match="needs `shape`"):
        merge_masks([])
    assert merge_masks([], shape=(3, 4)).shape == (3, 4)


def test_check_labels_errors():
    with pytest.raises(InputError, match="2-D"):
        check_labels(np.zeros((2, 2, 2), int))
    with pytest.raises(InputError, match="integer dtype"):
        check_labels(np.zeros((2, 2), float))
    with pytest.raises(InputError, match="negative"):
        check_labels(np.array([[0, -1]]))


def test_boundaries_modes(two_nuclei):
    inner = boundaries(two_nuclei, "inner")
    outer = boundaries(two_nuclei, "outer")
    assert np.all(two_nuclei[inner] > 0)
    assert not np.any(inner & outer)
    assert np.all(two_nuclei[outer & ~inner] == 0)
    # the contact between nucleus 1 and 2 is on the inner boundary of both
    assert inner[4, 7] and inner[4, 8]


def test_touching_marks_only_contacts(two_nuclei):
    t = touching(two_nuclei, radius=1)
    assert t[4, 7] and t[4, 8]
    assert not t[2, 2]  # a corner far from nucleus 2
    single = (two_nuclei == 1).astype(np.int32)
    assert not touching(single).any()


def test_make_targets_channels(two_nuclei):
    targets = make_targets(two_nuclei)
    assert targets.shape == (*two_nuclei.shape, 3)
    assert np.array_equal(targets[..., 0] > 0, two_nuclei > 0)
    assert set(np.unique(targets)) <= {0.0, 1.0}
    assert make_targets(two_nuclei, channels=1).shape == (*two_nuclei.shape, 1)
    with pytest.raises(InputError):
        make_targets(two_nuclei, channels=2)
