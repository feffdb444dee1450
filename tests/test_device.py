"""One device spec for every backend: parsing, settling against the GPUs a framework sees,
each backend placing its network there, and ``--device`` on the command line."""

import numpy as np
import pytest

from conftest import every_backend
from nucleuseg.backends import build_network
from nucleuseg.backends.device import DeviceSpec, parse_device
from nucleuseg.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, DeviceSpec("auto")),
        ("auto", DeviceSpec("auto")),
        ("cpu", DeviceSpec("cpu")),
        (" CPU ", DeviceSpec("cpu")),
        ("gpu", DeviceSpec("gpu", 0)),
        ("gpu:2", DeviceSpec("gpu", 2)),
        ("cuda", DeviceSpec("gpu", 0)),
        ("cuda:1", DeviceSpec("gpu", 1)),
        (0, DeviceSpec("gpu", 0)),
        (3, DeviceSpec("gpu", 3)),
        (DeviceSpec("gpu", 4), DeviceSpec("gpu", 4)),
    ],
)
def test_device_specs_parse(spec, expected):
    assert parse_device(spec) == expected


@pytest.mark.parametrize(
    "spec", ["tpu", "", "gpu:", "gpu:-1", "gpu:x", "cuda:1:2", "cpu:1", "mps", -1, True, 1.5]
)
def test_bad_device_specs_name_the_argument(spec):
    with pytest.raises(ConfigError, match=r"^device "):
        parse_device(spec)


def test_device_specs_print_as_they_are_written():
    assert [str(parse_device(s)) for s in (None, "cpu", "cuda", "gpu:3", 2)] == [
        "auto",
        "cpu",
        "gpu:0",
        "gpu:3",
        "gpu:2",
    ]


def test_resolving_settles_auto_and_checks_the_gpus_seen():
    assert DeviceSpec().resolve(0, "jax") == DeviceSpec("cpu")
    assert DeviceSpec().resolve(2, "jax") == DeviceSpec("gpu", 0)
    assert DeviceSpec("cpu").resolve(2, "jax") == DeviceSpec("cpu")
    assert DeviceSpec("gpu", 1).resolve(2, "jax") == DeviceSpec("gpu", 1)
    with pytest.raises(ConfigError, match="'gpu:0': jax sees no GPU on this machine"):
        DeviceSpec("gpu").resolve(0, "jax")
    with pytest.raises(ConfigError, match=r"'gpu:2': jax sees 2 GPU\(s\), numbered 0 to 1"):
        DeviceSpec("gpu", 2).resolve(2, "jax")


def test_a_bad_device_is_refused_before_the_backend_is_imported(tiny_preset):
    with pytest.raises(ConfigError, match="device 'tpu' is not a device spec"):
        build_network("no-such-backend", tiny_preset.network, device="tpu")


def _placement(net) -> set[str]:
    """Where the framework itself says the network's weights are: ``{"cpu"}`` or GPU kinds."""
    kind = type(net).__name__
    if kind == "TorchNetwork":
        return {p.device.type for p in net.model.parameters()}
    if kind == "KerasNetwork":
        variables = [v.value for v in net.model.weights] + [net._step]
        return {v.device.split("device:")[-1].split(":")[0].lower() for v in variables}
    import jax

    leaves = jax.tree.leaves(net.variables)
    return {d.platform for leaf in leaves for d in leaf.devices()}


def test_every_backend_runs_on_the_cpu_when_asked(backend, tiny_preset):
    config = tiny_preset.network
    net = build_network(backend, config, seed=0, device="cpu")
    assert net.device == DeviceSpec("cpu")
    assert _placement(net) == {"cpu"}
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    auto = build_network(backend, config, seed=0)
    np.testing.assert_allclose(net.predict(x), auto.predict(x), atol=1e-5)
    y = np.zeros((1, 32, 32, config.out_channels), np.float32)
    assert np.isfinite(net.train_step(x, y, 1e-3))
    assert _placement(net) == {"cpu"}


@every_backend
def test_asking_for_a_gpu_the_framework_does_not_see_says_so(backend, tiny_preset):
    net = build_network(backend, tiny_preset.network, device="cpu")
    gpus = type(net)._visible_gpus()
    if gpus == 0:
        with pytest.raises(ConfigError, match="device 'gpu:0': .* sees no GPU on this machine"):
            build_network(backend, tiny_preset.network, device="gpu")
    else:
        on_gpu = build_network(backend, tiny_preset.network, device="gpu")
        assert on_gpu.device == DeviceSpec("gpu", 0) and "cpu" not in _placement(on_gpu)
    with pytest.raises(ConfigError, match=f"device 'gpu:{gpus}': "):
        build_network(backend, tiny_preset.network, device=gpus)


COMMANDS = {
    "train": ["train", "--data", "d", "--out", "m.safetensors"],
    "evaluate": ["evaluate", "m.safetensors", "--data", "d"],
    "tune": ["tune", "m.safetensors", "--data", "d"],
    "predict": ["predict", "m.safetensors", "a.png", "--out", "o"],
    "submit": ["submit", "m.safetensors", "--data", "d", "--out", "s.csv"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_that_run_a_network_take_a_device(command):
    from nucleuseg.cli import _parser

    parser = _parser()
    assert parser.parse_args([*COMMANDS[command], "--device", "cpu"]).device == "cpu"
    assert parser.parse_args([*COMMANDS[command], "--device", "1"]).device == 1
    assert parser.parse_args([*COMMANDS[command], "--device", "cuda:0"]).device == "cuda:0"
    assert parser.parse_args(COMMANDS[command]).device is None


def test_a_bad_device_option_is_a_usage_error(capsys):
    from nucleuseg.cli import _parser

    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["demo", "--device", "tpu"])
    assert exit_.value.code == 2
    assert "argument --device: device 'tpu' is not a device spec" in capsys.readouterr().err
