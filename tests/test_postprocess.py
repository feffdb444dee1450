"""The post-processing registry: names the config accepts, functions to_instances calls, and the
parameters the tuner varies."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from nucleuseg import postprocess
from nucleuseg.config import InferenceConfig, Preset, get_preset
from nucleuseg.errors import ConfigError, InputError
from nucleuseg.postprocess import (
    PARAMETERS,
    components,
    get_postprocess,
    list_postprocessing,
    register_postprocess,
    to_instances,
    watershed_split,
)
from nucleuseg.tuning import tune_postprocessing


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """The built-in methods only, in a copy: methods registered here (or by doctests) do not
    leak into other tests."""
    builtin = {k: v for k, v in postprocess._METHODS.items() if k in ("components", "watershed")}
    monkeypatch.setattr(postprocess, "_METHODS", builtin)


def three_channels(seed: int = 0) -> np.ndarray:
    """Foreground, contour and touching probabilities of two touching squares, with noise."""
    fg = np.zeros((24, 32))
    fg[4:20, 3:15] = fg[5:19, 15:28] = 0.9
    touch = np.zeros_like(fg)
    touch[5:19, 14:16] = 0.8
    noise = np.random.default_rng(seed).uniform(0, 0.1, (*fg.shape, 3))
    return np.clip(np.stack([fg, np.zeros_like(fg), touch], -1) + noise, 0, 1).astype(np.float32)


def test_the_built_in_methods_are_registered_in_order():
    assert list_postprocessing()[:2] == ["components", "watershed"]
    assert get_postprocess("components").parameters == ("threshold", "min_size")
    watershed = get_postprocess("watershed")
    assert (watershed.channels, watershed.fallback, watershed.parameters) == (
        3,
        "components",
        PARAMETERS,
    )


def test_the_built_in_methods_behave_as_their_functions():
    probs = three_channels()
    config = InferenceConfig(postprocess="watershed", min_size=4)
    expected = watershed_split(probs, config.threshold, config.seed_threshold, config.min_size)
    assert np.array_equal(to_instances(probs, config), expected)
    assert to_instances(probs, config).max() == 2  # the touching squares are cut apart
    config = InferenceConfig(postprocess="components", threshold=0.6, min_size=4)
    labels = to_instances(probs, config)
    assert np.array_equal(labels, components(probs[..., 0], 0.6, 4))
    assert labels.dtype == np.int32 and labels.max() == 1  # merged into one


def test_watershed_on_one_channel_falls_back_to_components():
    fg = three_channels()[..., :1]
    watershed = to_instances(fg, InferenceConfig(postprocess="watershed", min_size=4))
    assert np.array_equal(watershed, components(fg[..., 0], 0.5, 4))
    assert np.array_equal(watershed, to_instances(fg, InferenceConfig(postprocess="components")))


def test_an_unknown_name_is_refused_with_the_registered_names():
    with pytest.raises(
        ConfigError,
        match=r"postprocess must be one of \('components', "
        r"'watershed'\).*got 'blobs'",
    ):
        InferenceConfig(postprocess="blobs")
    with pytest.raises(
        ConfigError,
        match=r"unknown post-processing method 'blobs'; registered: "
        r"\['components', 'watershed'\]",
    ):
        get_postprocess("blobs")
    with pytest.raises(ConfigError, match="got 'blobs'"):
        Preset.from_json(get_preset("default").to_json().replace('"watershed"', '"blobs"'))


def test_a_registered_method_is_accepted_called_and_tuned():
    calls = []

    @register_postprocess("largest", parameters=("min_size",))
    def largest(probs, config):
        calls.append(config.min_size)
        labels = components(probs[..., 0], config.threshold, config.min_size)
        sizes = np.bincount(labels.ravel())[1:]
        return (labels == sizes.argmax() + 1).astype(np.uint8) if sizes.size else labels

    assert "largest" in list_postprocessing()
    config = InferenceConfig(postprocess="largest", min_size=4)
    labels = to_instances(three_channels(), config)
    assert calls == [4]
    assert labels.dtype == np.int32 and labels.max() == 1
    # The whole foreground is one component, so "largest" keeps all of it.
    assert np.array_equal(labels > 0, three_channels()[..., 0] > 0.5)
    # A preset with the new method survives its JSON form (as in a model file).
    preset = get_preset("default").replace(inference=config)
    assert Preset.from_json(preset.to_json()).inference.postprocess == "largest"

    calls.clear()
    truth = (three_channels()[..., 0] > 0.5).astype(np.int32)
    result = tune_postprocessing(
        {"a": three_channels()},
        {"a": truth},
        base=config,
        thresholds=(0.3, 0.5),
        seed_thresholds=(0.2, 0.4, 0.6),
        min_sizes=(2, 4, 8),
    )
    # Only min_size varies: the method declared it alone.
    assert [c.min_size for c, _ in result.trials] == [2, 4, 8]
    assert {(c.threshold, c.seed_threshold) for c, _ in result.trials} == {(0.5, 0.5)}
    assert calls == [2, 4, 8]
    assert result.best_score == 1.0


def test_the_tuner_grid_follows_the_declared_parameters():
    probs = {"a": three_channels(), "b": three_channels(1)}
    truth = np.zeros((24, 32), np.int32)
    truth[4:20, 3:15], truth[5:19, 15:28] = 1, 2
    truths = {"a": truth, "b": truth}
    grid = {"thresholds": (0.4, 0.6), "seed_thresholds": (0.3, 0.5), "min_sizes": (4, 8)}
    watershed = tune_postprocessing(probs, truths, InferenceConfig(), **grid)
    expected = list(itertools.product((0.4, 0.6), (0.3, 0.5), (4, 8)))
    assert [(c.threshold, c.seed_threshold, c.min_size) for c, _ in watershed.trials] == expected
    assert watershed.best_score == 1.0
    base = InferenceConfig(postprocess="components", seed_threshold=0.45)
    merged = tune_postprocessing(probs, truths, base, **grid)
    assert [(c.threshold, c.seed_threshold, c.min_size) for c, _ in merged.trials] == [
        (0.4, 0.45, 4),
        (0.4, 0.45, 8),
        (0.6, 0.45, 4),
        (0.6, 0.45, 8),
    ]
    assert merged.best_score < watershed.best_score  # components merge the touching squares


def test_channels_and_fallback():
    @register_postprocess("two-channel", channels=2)
    def two(probs, config):
        return components(probs[..., 0] * probs[..., 1], config.threshold)

    with pytest.raises(InputError, match=r"'two-channel' needs 2 probability channels, got 1"):
        to_instances(np.full((4, 4), 0.9), InferenceConfig(postprocess="two-channel"))
    assert to_instances(np.full((4, 4, 2), 0.9), InferenceConfig(postprocess="two-channel")).max()

    register_postprocess("two-or-components", channels=2, fallback="components")(two)
    one = np.array([[0.9, 0.1, 0.9]])
    config = InferenceConfig(postprocess="two-or-components", min_size=0)
    assert np.array_equal(to_instances(one, config), [[1, 0, 2]])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": ""}, r"name must be a non-empty string"),
        ({"parameters": ("tile",)}, r"parameters must be distinct names from \('threshold'"),
        ({"parameters": ("threshold", "threshold")}, r"parameters must be distinct"),
        ({"channels": 0}, r"channels must be a positive int, got 0"),
        ({"fallback": "nowhere"}, r"fallback 'nowhere' is not registered; registered: \["),
        ({"fallback": "watershed", "channels": 3}, r"must need fewer than 3 channels, it needs 3"),
    ],
)
def test_bad_registrations_are_refused(options, message):
    options = {"name": "bad", **options}
    with pytest.raises(InputError, match=message):
        register_postprocess(**options)
    assert "bad" not in list_postprocessing()


def test_a_method_returning_no_label_image_is_an_error():
    register_postprocess("floats")(lambda probs, config: probs[..., 0])
    with pytest.raises(InputError, match=r"'floats' returned an array of shape \(4, 4\) and dtype"):
        to_instances(np.zeros((4, 4), np.float32), InferenceConfig(postprocess="floats"))
    register_postprocess("cropped")(lambda probs, config: np.zeros((2, 2), np.int32))
    with pytest.raises(InputError, match=r"expected an \(4, 4\) integer label image"):
        to_instances(np.zeros((4, 4), np.float32), InferenceConfig(postprocess="cropped"))


@pytest.mark.parametrize("first", ["nucleuseg.postprocess", "nucleuseg.config", "nucleuseg.tuning"])
def test_config_and_postprocess_import_in_either_order(first):
    code = (
        f"import {first}\n"
        "from nucleuseg.config import PRESETS\n"
        "from nucleuseg.postprocess import list_postprocessing\n"
        "print(PRESETS['seed'].inference.postprocess, list_postprocessing())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "components ['components', 'watershed']"
