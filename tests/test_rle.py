import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nucleuseg.errors import CSVFormatError, InputError, MaskOverlapError, RLEError
from nucleuseg.rle import (
    RLEImage,
    decode,
    decode_labels,
    encode,
    encode_labels,
    labels_from_csv,
    read_rle_csv,
    write_solution,
    write_submission,
)

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))
label_values = st.sampled_from([0, 0, 1, 2, 5, 9, 1000])
# Each strategy mixes near-uniform arrays (hypothesis' default fill: empty and full masks, single
# pixels) with fully random ones (many short runs, nuclei touching each other and the edges).
masks = st.one_of(
    arrays(bool, shapes, elements=st.booleans()),
    arrays(bool, shapes, elements=st.booleans(), fill=st.nothing()),
)
# Few distinct ids with gaps, so nuclei are fragmented and the ids are not sequential.
label_images = st.one_of(
    arrays(np.int32, shapes, elements=label_values),
    arrays(np.int32, shapes, elements=label_values, fill=st.nothing()),
)


def brute_force_encode(mask: np.ndarray) -> str:
    """Kaggle's encoding written out pixel by pixel."""
    flat = mask.flatten(order="F")
    runs, i = [], 0
    while i < flat.size:
        if flat[i]:
            j = i
            while j < flat.size and flat[j]:
                j += 1
            runs += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(map(str, runs))


# --------------------------------------------------------------------------- encode / decode


def test_known_example_is_one_based_and_column_major():
    mask = np.array(
        [
            [0, 1, 0],
            [1, 1, 0],
            [0, 0, 1],
        ],
        bool,
    )
    # Column-major numbering: column 0 is pixels 1..3, column 1 is 4..6, column 2 is 7..9.
    assert encode(mask) == "2 1 4 2 9 1"
    assert np.array_equal(decode("2 1 4 2 9 1", (3, 3)), mask)


def test_runs_wrap_from_one_column_to_the_next():
    mask = np.zeros((3, 2), bool)
    mask[2, 0] = mask[0, 1] = True  # pixels 3 and 4: one run across the column break
    assert encode(mask) == "3 2"


def test_empty_full_and_single_pixel_masks():
    assert encode(np.zeros((4, 5), bool)) == ""
    assert encode(np.ones((4, 5), bool)) == "1 20"
    assert encode(np.ones((1, 1), bool)) == "1 1"
    assert not decode("", (4, 5)).any()
    assert not decode("  \n ", (4, 5)).any()
    assert decode("1 20", (4, 5)).all()


def test_decode_accepts_adjacent_runs():
    assert decode("1 2 3 2", (1, 5)).tolist() == [[True, True, True, True, False]]


def test_encode_accepts_zero_one_integers_and_rejects_label_images():
    assert encode(np.array([[0, 1], [1, 1]], np.uint8)) == "2 3"
    with pytest.raises(InputError, match="encode_labels"):
        encode(np.array([[0, 2]]))
    with pytest.raises(InputError, match="2-D"):
        encode(np.zeros(4, bool))


@given(masks)
@settings(max_examples=80, deadline=None)
def test_mask_round_trip(mask):
    rle = encode(mask)
    assert rle == brute_force_encode(mask)
    assert np.array_equal(decode(rle, mask.shape), mask)


@pytest.mark.parametrize(
    ("rle", "shape", "pattern"),
    [
        ("1 2 x 3", (5, 5), r"token 3 \('x'\) is not an integer"),
        ("1 2.5", (5, 5), r"token 2 \('2.5'\) is not an integer"),
        ("1 2 3", (5, 5), "3 numbers.*even"),
        ("0 2", (5, 5), r"run 1 \(start 0, length 2\).*at least 1"),
        ("1 2 -4 2", (5, 5), r"run 2 \(start -4, length 2\).*at least 1"),
        ("1 2 5 0", (5, 5), r"run 2 \(start 5, length 0\): a length must be at least 1"),
        ("10 2 3 2", (5, 5), r"run 2 \(start 3, length 2\) starts before run 1.*ascending"),
        ("1 5 4 2", (5, 5), r"run 2 \(start 4, length 2\) overlaps run 1.*ends at pixel 5"),
        ("3 2 3 1", (5, 5), r"run 2 \(start 3, length 1\) overlaps run 1"),
        (
            "1 2 50 3 100 20",
            (10, 10),
            r"run 3 \(start 100, length 20\) ends at pixel 119 beyond the 100 pixels "
            r"of a 10x10 image",
        ),
        ("1 " + "9" * 30, (5, 5), "token 2 .* too large"),
    ],
)
def test_malformed_rle_is_named(rle, shape, pattern):
    with pytest.raises(RLEError, match=pattern):
        decode(rle, shape)


@pytest.mark.parametrize("shape", [(3,), (3, -1), (2.5, 3), "ab", None])
def test_decode_rejects_bad_shapes(shape):
    with pytest.raises(InputError, match="shape"):
        decode("1 1", shape)


# --------------------------------------------------------------------------- label images


def test_encode_labels_known_example_ordered_by_id():
    labels = np.array(
        [
            [0, 9, 9],
            [4, 9, 0],
            [4, 0, 4],
        ]
    )
    rles = encode_labels(labels)
    assert list(rles) == [4, 9]
    # Label 9 covers pixels 4, 5 and 7: the touching pixels 4 and 5 make one run.
    assert rles == {4: "2 2 9 1", 9: "4 2 7 1"}


def test_encode_labels_of_empty_image():
    assert encode_labels(np.zeros((3, 3), np.int32)) == {}


@given(label_images)
@settings(max_examples=80, deadline=None)
def test_label_round_trip(labels):
    rles = encode_labels(labels)
    ids = np.unique(labels[labels > 0])
    assert list(rles) == ids.tolist()
    for label_id, rle in rles.items():
        assert rle == encode(labels == label_id)
    decoded = decode_labels(list(rles.values()), labels.shape)
    # decode_labels numbers nuclei 1..N in the given order, i.e. by rank of the original id.
    expected = np.searchsorted(ids, labels) + 1
    expected[labels == 0] = 0
    assert decoded.dtype == np.int32
    assert np.array_equal(decoded, expected)


def test_decode_labels_overlap_policies():
    rles = ["1 3", "3 2"]  # pixel 3 in both
    with pytest.raises(MaskOverlapError, match="RLE 2 overlaps RLE 1 on 1 pixel"):
        decode_labels(rles, (2, 2))
    assert decode_labels(rles, (2, 2), overlap="first").T.ravel().tolist() == [1, 1, 1, 2]
    assert decode_labels(rles, (2, 2), overlap="last").T.ravel().tolist() == [1, 1, 2, 2]
    with pytest.raises(InputError, match="overlap"):
        decode_labels(rles, (2, 2), overlap="smallest")


def test_rle_overlap_policies_are_mask_policies_with_the_same_meanings():
    from typing import get_args

    from nucleuseg import masks, rle

    assert get_args(masks.MaskOverlapPolicy) == masks.OVERLAP_POLICIES
    policies = get_args(rle.RLEOverlapPolicy)
    assert set(policies) < set(masks.OVERLAP_POLICIES)
    a = np.array([[1, 1, 0], [0, 1, 0]], bool)
    b = np.array([[0, 1, 1], [0, 1, 1]], bool)
    for policy in policies:
        if policy == "error":
            with pytest.raises(MaskOverlapError):
                decode_labels([encode(a), encode(b)], a.shape, overlap=policy)
            with pytest.raises(MaskOverlapError):
                masks.merge_masks([a, b], overlap=policy)
            continue
        from_rles = decode_labels([encode(a), encode(b)], a.shape, overlap=policy)
        assert np.array_equal(from_rles, masks.merge_masks([a, b], overlap=policy))


def test_decode_labels_names_the_bad_encoding():
    with pytest.raises(RLEError, match="RLE 2: run 1"):
        decode_labels(["1 1", "0 1"], (2, 2))
    with pytest.raises(RLEError, match="RLE 2 is empty"):
        decode_labels(["1 1", ""], (2, 2))
    with pytest.raises(InputError, match="sequence of strings"):
        decode_labels("1 1", (2, 2))
    assert not decode_labels([], (2, 3)).any()


# --------------------------------------------------------------------------- CSV


def test_submission_round_trip_with_empty_image(tmp_path):
    rng = np.random.default_rng(0)
    preds = {
        "img-b": rng.choice([0, 3, 7], size=(9, 11)).astype(np.int32),
        "img-a": np.zeros((5, 5), np.int32),
        "img-c": np.ones((2, 3), np.int32),
    }
    path = tmp_path / "submission.csv"
    write_submission(preds, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId,EncodedPixels"
    assert lines[1] == "img-a,"
    ids = [line.split(",")[0] for line in lines[1:]]
    assert ids == sorted(ids)
    table = read_rle_csv(path)
    assert list(table) == ["img-a", "img-b", "img-c"]
    assert table["img-a"] == RLEImage((), None)
    for image_id, labels in preds.items():
        ids = np.unique(labels[labels > 0])
        expected = np.where(labels > 0, np.searchsorted(ids, labels) + 1, 0)
        assert np.array_equal(labels_from_csv(table[image_id], labels.shape), expected)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_solution_round_trip_carries_the_shape(tmp_path):
    labels = {"x": np.array([[0, 2, 2], [5, 5, 0]], np.int32), "y": np.zeros((4, 1), np.int32)}
    path = tmp_path / "solution.csv"
    write_solution(labels, path)
    table = read_rle_csv(path)
    assert table["x"].shape == (2, 3)
    assert table["y"] == RLEImage((), (4, 1))
    assert np.array_equal(labels_from_csv(table["x"]), [[0, 1, 1], [2, 2, 0]])
    assert not labels_from_csv(table["y"]).any()


def test_write_rejects_bad_ids_and_labels(tmp_path):
    with pytest.raises(InputError, match="keys"):
        write_submission({"": np.zeros((2, 2), int)}, tmp_path / "s.csv")
    with pytest.raises(InputError, match=r"predictions\['a'\]"):
        write_submission({"a": -np.ones((2, 2), int)}, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_read_kaggle_solution_with_bom_crlf_and_usage(tmp_path):
    path = tmp_path / "stage1_solution.csv"
    text = (
        "ImageId,EncodedPixels,Height,Width,Usage\r\n"
        "a,1 2 7 1,3,3,Public\r\n"
        "a,5 1,3,3,Public\r\n"
        "b,,2,2,Private\r\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    table = read_rle_csv(path)
    assert table == {
        "a": RLEImage(("1 2 7 1", "5 1"), (3, 3)),
        "b": RLEImage((), (2, 2)),
    }
    assert labels_from_csv(table["a"]).tolist() == [[1, 0, 1], [1, 2, 0], [0, 0, 0]]


def test_read_columns_in_any_order_and_blank_lines(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("EncodedPixels,ImageId\n1 1,a\n\n3 2,a\n")
    assert read_rle_csv(path) == {"a": RLEImage(("1 1", "3 2"), None)}


def test_labels_from_csv_needs_a_shape():
    with pytest.raises(InputError, match="shape is required"):
        labels_from_csv(RLEImage(("1 1",), None))
    with pytest.raises(InputError, match="differs"):
        labels_from_csv(RLEImage(("1 1",), (2, 2)), (3, 3))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "empty; expected a header"),
        ("ImageId\na\n", r":1: missing column\(s\) EncodedPixels"),
        ("ImageId,EncodedPixels,Score\na,1 1,3\n", ":1: unknown column 'Score'"),
        ("ImageId,EncodedPixels,ImageId\na,1 1,a\n", ":1: column 'ImageId' appears twice"),
        ("ImageId,EncodedPixels,Height\na,1 1,3\n", ":1: column Height without Width"),
        (
            "ImageId,EncodedPixels\na,1 1\nb,1 1,extra\n",
            ":3: expected 2 fields like the header, got 3",
        ),
        ("ImageId,EncodedPixels\n,1 1\n", ":2: empty ImageId"),
        (
            "ImageId,EncodedPixels,Height,Width\na,1 1,0,3\n",
            ":2: Height must be a positive integer",
        ),
        ("ImageId,EncodedPixels,Height,Width\na,1 1,3,x\n", ":2: Width must be a positive integer"),
        (
            "ImageId,EncodedPixels,Height,Width\na,1 1,3,3\na,5 1,3,4\n",
            ":3: image 'a' has Height,Width 3,4 but 3,3 on line 2",
        ),
        (
            "ImageId,EncodedPixels\na,1 1\na,4 x\n",
            r":3: EncodedPixels of image 'a': token 2 \('x'\)",
        ),
        (
            "ImageId,EncodedPixels\na,5 2 1 1\n",
            ":2: EncodedPixels of image 'a': run 2 .* ascending",
        ),
        ("ImageId,EncodedPixels\na,1 5 3 1\n", ":2: EncodedPixels of image 'a': run 2 .* overlaps"),
        (
            "ImageId,EncodedPixels,Height,Width\na,8 3,3,3\n",
            ":2: EncodedPixels of image 'a': run 1 .* ends at pixel 10 beyond the 9 pixels",
        ),
        ('ImageId,EncodedPixels\n"a,1 1\n', "malformed CSV"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CSVFormatError, match=("bad.csv" if pattern[0] == ":" else "") + pattern):
        read_rle_csv(path)


def test_csv_that_is_not_utf8(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"ImageId,EncodedPixels\n\xff\xfe,1 1\n")
    with pytest.raises(CSVFormatError, match="UTF-8"):
        read_rle_csv(path)


def test_encode_labels_on_a_large_image_with_many_nuclei():
    """Thousands of touching and overlapping squares: one pass, then an exact round trip."""
    rng = np.random.default_rng(1)
    labels = np.zeros((1000, 1000), np.int32)
    centres = rng.integers(0, 990, size=(2000, 2))
    for k, (r, c) in enumerate(centres, start=1):
        labels[r : r + 8, c : c + 8] = k
    rles = encode_labels(labels)
    assert len(rles) == len(np.unique(labels)) - 1
    decoded = decode_labels(list(rles.values()), labels.shape)
    ids = np.array(list(rles))
    assert np.array_equal(decoded, np.where(labels > 0, np.searchsorted(ids, labels) + 1, 0))


@pytest.mark.parametrize("seed", range(6))
def test_encode_labels_matches_encode_of_each_mask(seed):
    """Random blobs, touching ones, runs wrapping from one column's bottom to the next's top,
    single rows and columns, and large ids: every nucleus as encode() gives it alone."""
    rng = np.random.default_rng(seed)
    shape = [(1, 9), (9, 1), (7, 5), (40, 33), (12, 10), (12, 10)][seed]
    labels = rng.integers(0, 4, shape) * rng.integers(0, 2, shape)
    if seed == 4:
        labels = labels * (2**29)  # ids up to the int32 limit
    if seed == 5:
        labels[-1, 0] = labels[0, 1] = 3  # a run wrapping into the next column
    rles = encode_labels(labels)
    ids = [int(i) for i in np.unique(labels) if i != 0]
    assert list(rles) == ids
    for i in ids:
        assert rles[i] == encode(labels == i)


def test_runs_are_ordered_by_label_then_position_beyond_32_bit_positions():
    from nucleuseg.rle import _by_label

    ids = np.array([5, 2, 5, 2])
    positions = np.array([2**33, 7, 3, 2**32 + 1])
    sorted_ids, sorted_positions = _by_label(ids, positions)
    assert sorted_ids.tolist() == [2, 2, 5, 5]
    assert sorted_positions.tolist() == [7, 2**32 + 1, 3, 2**33]
    small_ids, small_positions = _by_label(ids, positions % 100)  # the one-sort path
    assert small_ids.tolist() == [2, 2, 5, 5] and small_positions.tolist() == [7, 97, 3, 92]


def test_decimal_text_of_small_and_beyond_32_bit_numbers():
    from nucleuseg.rle import _decimal_text

    values = [0, 9, 10, 99, 100, 4294967295, 2**40, 7]
    text, ends = _decimal_text(np.array(values))
    assert text == " ".join(map(str, values)) + " "
    assert ends.tolist() == np.cumsum([len(str(v)) + 1 for v in values]).tolist()
    assert _decimal_text(np.array([], np.int64))[0] == ""
