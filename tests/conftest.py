"""Shared fixtures. Tests build their own data; none reads the real DSB folder."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from nucleuseg.backends import builtin_backends

#: Built-in backend name -> the framework module it needs, from the registry.
FRAMEWORKS = {name: backend.framework for name, backend in builtin_backends().items()}


def backend_or_skip(name: str) -> str:
    """Skip the calling test, with the reason, when the backend's framework is missing."""
    backend = builtin_backends()[name]
    if importlib.util.find_spec(backend.framework) is None:
        pytest.skip(
            f"{name} backend: {backend.framework} is not installed "
            f'(pip install "nucleuseg[{backend.extra}]")'
        )
    return name


def installed_backends() -> list[str]:
    return [n for n, m in FRAMEWORKS.items() if importlib.util.find_spec(m) is not None]


#: The built-in backends that train (``"onnx"`` only predicts).
TRAINING = sorted(name for name, backend in builtin_backends().items() if backend.trains)


@pytest.fixture(params=TRAINING)
def backend(request) -> str:
    """Each built-in backend that trains in turn (skipped where its framework is missing)."""
    return backend_or_skip(request.param)


#: ``@every_backend`` on a test that does not train: ``backend`` is each built-in backend in
#: turn, the inference-only ones too (skipped where the framework is missing).
every_backend = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                importlib.util.find_spec(module) is None,
                reason=f"{name} backend: {module} is not installed "
                f'(pip install "nucleuseg[{builtin_backends()[name].extra}]")',
            ),
        )
        for name, module in sorted(FRAMEWORKS.items())
    ],
)


@pytest.fixture
def tiny_preset():
    """The default recipe on a network small enough for unit tests."""
    return make_tiny_preset()


def make_tiny_preset():
    """What the ``tiny_preset`` fixture gives, for helpers that run outside a test."""
    from nucleuseg.config import get_preset

    preset = get_preset("default")
    return preset.replace(
        name="tiny",
        network=preset.network.replace(depth=3, base_filters=4),
        training=preset.training.replace(crop=32, batch_size=2, steps_per_epoch=2),
        inference=preset.inference.replace(tile=64, overlap=16),
    )


@pytest.fixture
def two_nuclei() -> np.ndarray:
    labels = np.zeros((12, 16), np.int32)
    labels[2:8, 2:8] = 1
    labels[3:9, 8:14] = 2
    return labels


def random_weights(config, seed: int = 1) -> dict[str, np.ndarray]:
    """Weights away from the initial ones, with non-trivial batch-norm statistics."""
    from nucleuseg.backends.base import init_weights

    rng = np.random.default_rng(seed)
    weights = init_weights(config, 0)
    for name, value in weights.items():
        part = name.rsplit(".", 1)[-1]
        if part == "var":
            new = rng.uniform(0.5, 1.5, value.shape)
        elif part == "scale":
            new = 1.0 + 0.2 * rng.standard_normal(value.shape)
        else:  # kernels, biases and running means
            new = value + 0.1 * rng.standard_normal(value.shape)
        weights[name] = new.astype(np.float32)
    return weights
