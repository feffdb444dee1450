"""Per-nucleus measurements (nucleuseg.measure) against scikit-image's regionprops."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops

import nucleuseg
from nucleuseg.data import synthetic_sample
from nucleuseg.errors import ExtraMissing, InputError
from nucleuseg.measurements import COLUMNS, SHAPE_COLUMNS, measure


@pytest.fixture(scope="module")
def sample():
    return synthetic_sample(seed=1, size=128)  # 36 nuclei


def test_the_function_is_exported():
    assert nucleuseg.measure is measure


def test_columns_equal_regionprops_on_a_synthetic_label_image(sample):
    labels = sample.labels
    image = sample.image[..., 0].astype(np.uint16) * 200  # one channel, 16-bit range
    table = measure(labels, image)
    assert list(table) == list(COLUMNS)
    regions = regionprops(labels, intensity_image=image)
    assert len(regions) > 5
    assert all(len(column) == len(regions) for column in table.values())
    for i, region in enumerate(regions):
        assert table["label"][i] == region.label
        assert table["centroid_y"][i] == pytest.approx(region.centroid[0])
        assert table["centroid_x"][i] == pytest.approx(region.centroid[1])
        assert table["area"][i] == region.area
        assert table["perimeter"][i] == pytest.approx(region.perimeter)
        assert table["equivalent_diameter"][i] == pytest.approx(region.equivalent_diameter_area)
        assert table["eccentricity"][i] == pytest.approx(region.eccentricity)
        assert table["solidity"][i] == pytest.approx(region.solidity)
        bbox = (table[k][i] for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"))
        assert tuple(bbox) == region.bbox
        assert table["mean_intensity"][i] == pytest.approx(region.intensity_mean)
    # Integrated intensity is the sum over each nucleus, computed independently here.
    ids = table["label"]
    sums = ndi.sum_labels(image.astype(np.float64), labels, ids)
    np.testing.assert_allclose(table["integrated_intensity"], sums, rtol=1e-9)
    assert table["label"].dtype == np.int64 and table["bbox_x1"].dtype == np.int64
    assert table["area"].dtype == np.float64


def test_shape_columns_only_without_an_image(two_nuclei):
    table = measure(two_nuclei)
    assert list(table) == list(SHAPE_COLUMNS)
    assert table["area"].tolist() == [36.0, 36.0]


def test_multi_channel_intensity_is_the_gray_mean(two_nuclei):
    rgb = np.zeros((*two_nuclei.shape, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90
    table = measure(two_nuclei, rgb)
    assert table["mean_intensity"].tolist() == [60.0, 60.0]
    assert table["integrated_intensity"].tolist() == [60.0 * 36, 60.0 * 36]
    one = measure(two_nuclei, rgb[..., 2])
    assert one["mean_intensity"].tolist() == [90.0, 90.0]


def test_gaps_in_labels_and_empty_images():
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 7
    labels[5:9, 5:9] = 2
    assert measure(labels)["label"].tolist() == [2, 7]
    empty = measure(np.zeros((5, 5), np.uint16), np.ones((5, 5)))
    assert list(empty) == list(COLUMNS)
    assert all(column.size == 0 for column in empty.values())


@pytest.mark.parametrize(
    ("labels", "image", "message"),
    [
        (np.zeros((4, 4, 2), np.int32), None, r"labels must be a 2-D label image"),
        (np.zeros((4, 4), np.float32), None, r"labels must have an integer dtype"),
        (np.full((4, 4), -1), None, r"negative labels"),
        (
            np.zeros((4, 4), np.int32),
            np.zeros((4, 5)),
            r"image must be .* \(4, 4\), got .*\(4, 5\)",
        ),
        (np.zeros((4, 4), np.int32), np.zeros((4, 4), bool), r"image must be an integer or float"),
        (np.zeros((4, 4), np.int32), np.full((4, 4), np.nan), r"image contains NaN"),
    ],
)
def test_bad_input_names_the_argument(labels, image, message):
    with pytest.raises(InputError, match=message):
        measure(labels, image)


def test_data_frame(two_nuclei):
    pandas = pytest.importorskip("pandas", reason='as_frame needs "nucleuseg[pandas]"')
    frame = measure(two_nuclei, np.ones(two_nuclei.shape), as_frame=True)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["label"].tolist() == [1, 2]


def test_data_frame_without_pandas_names_the_extra(two_nuclei, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ExtraMissing, match=r'pip install "nucleuseg\[pandas\]"'):
        measure(two_nuclei, as_frame=True)


def test_import_nucleuseg_imports_no_pandas():
    code = "import sys, nucleuseg, nucleuseg.measurements; assert 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
