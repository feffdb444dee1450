"""H&E tissue: the polarity decision from colour, the synthetic dense tissue, stain augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from nucleuseg.config import Preset, TrainingConfig
from nucleuseg.data import synthetic
from nucleuseg.data.synthetic import make_synthetic, synthetic_sample
from nucleuseg.errors import ConfigError, InputError
from nucleuseg.transforms import (
    MODALITIES,
    as_rgb,
    image_modality,
    normalization_stats,
    normalize,
    random_stain,
)

TISSUE_SEEDS = range(12)


def _median_gray(image: np.ndarray) -> float:
    """The scaled median gray level the brightness-only rule decided the polarity from."""
    stats = normalization_stats(as_rgb(image))
    return (float(np.median(image.astype(np.float64).mean(axis=2))) - stats.low) / (
        stats.high - stats.low
    )


def _lumen(sample) -> np.ndarray:
    """Near-white pixels that belong to no nucleus: the lumen of synthetic tissue."""
    return (sample.labels == 0) & (sample.image.min(axis=2) >= 215)


def _colour_fluorescence(seed: int, tint: tuple[float, float, float]) -> np.ndarray:
    """A synthetic fluorescence image shown in one colour (DAPI blue, GFP green) on black."""
    gray = synthetic_sample(seed, 128, "fluorescence").image[..., 0].astype(np.float64)
    return np.round(gray[..., None] * np.asarray(tint)).astype(np.uint8)


# --- the modality decision ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("fluorescence", "fluorescence"),
        ("brightfield", "brightfield"),
        ("histology", "histology"),
        ("tissue", "histology"),
    ],
)
def test_modality_of_synthetic_images(kind, expected):
    found = [image_modality(synthetic_sample(s, 128, kind).image) for s in range(20)]
    assert found.count(expected) >= 19, (kind, found)
    assert set(found) <= set(MODALITIES)


@pytest.mark.parametrize("tint", [(0.05, 0.25, 1.0), (0.1, 1.0, 0.2), (1.0, 0.1, 0.6)])
def test_colour_fluorescence_is_not_inverted(tint):
    for seed in range(10):
        image = _colour_fluorescence(seed, tint)
        assert image_modality(image) == "fluorescence", (seed, tint)
        assert not normalization_stats(image).invert


def test_confluent_colour_fluorescence_is_not_inverted():
    # Nuclei over most of the field, blue on a background with a faint blue tint: the image is
    # coloured throughout, but its darkest pixels are nearly black.
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 2] = 25
    image[2:50, 2:62] = (10, 40, 230)
    assert image_modality(image) == "fluorescence"
    assert not normalization_stats(image).invert


def test_dense_tissue_with_no_bright_background_is_inverted():
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = (215, 120, 185)  # strongly stained stroma
    image[4:60, 4:60] = (100, 55, 150)  # nuclei over three quarters of the field
    assert _median_gray(image) < 0.5  # no bright background
    assert image_modality(image) == "histology"
    assert normalization_stats(image).invert
    x = normalize(image).mean(axis=2)
    assert x[30, 30] > x[1, 1] + 0.3  # nuclei bright, stroma dark


def test_gray_images_keep_the_brightness_rule():
    dark = np.full((32, 32), 10, np.uint8)
    dark[8:16, 8:16] = 200
    assert image_modality(dark) == "fluorescence" and not normalization_stats(as_rgb(dark)).invert
    assert image_modality(255 - dark) == "brightfield"
    assert normalization_stats(as_rgb(255 - dark)).invert


def test_modality_rejects_what_is_not_an_image():
    with pytest.raises(InputError, match="image"):
        image_modality(np.zeros((4, 4, 2)))
    with pytest.raises(InputError, match="NaN"):
        image_modality(np.full((4, 4), np.nan))


# --- synthetic tissue and its normalisation -------------------------------------------------


def test_tissue_samples_are_dense_histology_with_exact_labels():
    for seed in TISSUE_SEEDS:
        s = synthetic_sample(seed, 128, "tissue")
        assert s.kind == "histology" and s.image.shape == (128, 128, 3)
        assert s.image.dtype == np.uint8 and s.labels.dtype == np.int32
        n = int(s.labels.max())
        assert np.array_equal(np.unique(s.labels), np.arange(n + 1))
        assert (s.labels > 0).mean() > 0.2, seed  # dense
        # a nucleus is one connected piece
        for region in ndimage.find_objects(s.labels):
            assert region is not None
    same = synthetic_sample(3, 96, "tissue")
    assert np.array_equal(same.image, synthetic_sample(3, 96, "tissue").image)


def test_tissue_nuclei_touch_and_lumen_holds_none():
    touching, lumen_images = 0, 0
    for seed in TISSUE_SEEDS:
        s = synthetic_sample(seed, 128, "tissue")
        a, b = s.labels[:, 1:], s.labels[:, :-1]
        touching += int(((a > 0) & (b > 0) & (a != b)).any())
        lumen = _lumen(s)
        if lumen.mean() > 0.02:
            lumen_images += 1
            # the lumen is white: pale in every channel, with no stain
            assert s.image[lumen].min() >= 215
    assert touching >= len(TISSUE_SEEDS) - 2
    assert lumen_images >= 4


def test_tissue_has_dark_nuclei_in_pink_stroma_and_often_no_bright_median():
    medians = []
    for seed in TISSUE_SEEDS:
        s = synthetic_sample(seed, 128, "tissue")
        image = s.image.astype(np.float64)
        stroma = (s.labels == 0) & ~_lumen(s)
        nuclei = s.labels > 0
        assert image[nuclei].mean() < image[stroma].mean() - 20, seed  # nuclei absorb more
        red, green, blue = (image[stroma][:, c].mean() for c in range(3))
        assert red > green + 20 and blue > green + 20, seed  # eosin pink
        medians.append(_median_gray(s.image))
    assert sum(m <= 0.5 for m in medians) >= 2, medians  # the brightness rule would not invert


def test_normalisation_makes_tissue_nuclei_bright_and_lumen_dark():
    for seed in TISSUE_SEEDS:
        s = synthetic_sample(seed, 128, "tissue")
        x = normalize(s.image).mean(axis=2)
        nuclei = ndimage.binary_erosion(s.labels > 0)
        lumen = _lumen(s)
        stroma = (s.labels == 0) & ~lumen & ~ndimage.binary_dilation(s.labels > 0, iterations=2)
        assert x[nuclei].mean() > x[stroma].mean() + 0.15, seed
        if lumen.mean() > 0.02:
            assert x[lumen].mean() < 0.2, seed
            assert x[nuclei].mean() > x[lumen].mean() + 0.4, seed


def test_make_synthetic_asks_for_tissue():
    ds = make_synthetic(6, size=48, seed=1, kinds=["tissue"])
    assert set(ds.kinds().values()) == {"histology"}
    first = ds[0]
    assert first.kind == "histology"
    direct = synthetic_sample(synthetic._child_seed(1, 0), 48, "tissue", image_id=first.image_id)
    assert np.array_equal(first.image, direct.image)
    assert np.array_equal(first.labels, direct.labels)
    mixed = make_synthetic(30, size=32, seed=0, kinds=["tissue", "fluorescence"])
    assert set(mixed.kinds().values()) == {"histology", "fluorescence"}
    # Tissue is drawn only when asked for: the default odds draw the DSB kinds.
    assert {synthetic._pick_kind(seed) for seed in range(300)} == set(synthetic.KINDS)
    with pytest.raises(InputError, match="tissue"):
        synthetic_sample(0, kind="h&e")


# --- stain augmentation ---------------------------------------------------------------------


def test_stain_jitter_keeps_shape_dtype_and_range_and_changes_colour():
    rng = np.random.default_rng(0)
    image = synthetic_sample(2, 64, "tissue").image
    outs = [random_stain(image, rng) for _ in range(5)]
    for out in outs:
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - image).mean() > 1.0
    ratios = [out[..., 0].mean() / max(out[..., 1].mean(), 1) for out in outs]
    assert max(ratios) - min(ratios) > 0.02  # the colour balance moves, not only brightness
    wide = (image.astype(np.uint16) * 257)[:8, :8]
    out16 = random_stain(wide, rng)
    assert out16.dtype == np.uint16 and (out16 != wide).any()
    floats = image[:8, :8].astype(np.float32) / 255
    out_f = random_stain(floats, rng)
    assert out_f.dtype == np.float32 and 0.0 <= out_f.min() and out_f.max() <= 1.0


def test_stain_jitter_leaves_gray_images_and_no_jitter_gives_the_image_back():
    rng = np.random.default_rng(1)
    gray = synthetic_sample(0, 32, "fluorescence").image
    state = rng.bit_generator.state
    assert random_stain(gray, rng) is gray and rng.bit_generator.state == state
    image = synthetic_sample(0, 32, "tissue").image
    assert np.array_equal(random_stain(image, rng, strength=0.0, shift=0.0), image)


def test_stain_augment_config_is_validated_saved_and_optional(tiny_preset):
    assert TrainingConfig().stain_augment is False
    with pytest.raises(ConfigError, match="stain_augment"):
        TrainingConfig(stain_augment="yes")
    on = tiny_preset.replace(training=tiny_preset.training.replace(stain_augment=True))
    assert Preset.from_json(on.to_json()).training.stain_augment is True
    old = json.loads(on.to_json())
    del old["training"]["stain_augment"]  # a preset written before the option existed
    assert Preset.from_dict(old).training.stain_augment is False


def test_old_model_files_load_without_stain_augment(tmp_path, tiny_preset):
    from safetensors.numpy import save_file

    from nucleuseg.backends.base import init_weights
    from nucleuseg.checkpoint import FORMAT_VERSION, load_model, save_model

    weights = init_weights(tiny_preset.network, 0)
    data = json.loads(tiny_preset.to_json())
    del data["training"]["stain_augment"]
    path = tmp_path / "old.safetensors"
    metadata = {
        "nucleuseg.format": str(FORMAT_VERSION),
        "preset": json.dumps(data),
        "backend": "torch",
        "kind": "model",
    }
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}, path, metadata)
    assert load_model(path).preset.training.stain_augment is False
    on = tiny_preset.replace(training=tiny_preset.training.replace(stain_augment=True))
    save_model(tmp_path / "new.safetensors", weights, on, "torch")
    assert load_model(tmp_path / "new.safetensors").preset.training.stain_augment is True


def test_training_examples_with_stain_augment(tiny_preset):
    from nucleuseg.training import make_example, prepare

    items = prepare(make_synthetic(2, size=48, seed=0, kinds=["tissue"]), progress=False)
    off = tiny_preset
    on = off.replace(training=off.training.replace(stain_augment=True))
    x_off, _ = make_example(items[0], off, np.random.default_rng(5))
    x_on, _ = make_example(items[0], on, np.random.default_rng(5))
    assert x_on.shape == x_off.shape and x_on.dtype == np.float32
    assert 0.0 <= x_on.min() and x_on.max() <= 1.0
    assert not np.array_equal(x_on, x_off)
    resized = on.replace(training=on.training.replace(resize=32))
    x, y = make_example(items[1], resized, np.random.default_rng(0))
    assert x.shape == (32, 32, 3) and y.shape[:2] == (32, 32)
