"""The ``onnx`` backend and ONNX export: the same numbers as PyTorch, with no framework.

Parity is with the ``torch`` backend, the reference network: probabilities within 1e-4 and
identical labels for the ``seed`` and ``default`` presets' networks, batch norm, ReLU and
nearest upsampling, at reduced size (depth 3, 4 base filters) with random weights and running
statistics. Skips, naming the extra, where onnx or onnxruntime is missing (CI installs every
extra).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
    pytest.skip(
        'onnx backend: onnx and onnxruntime are not installed (pip install "nucleuseg[onnx]")',
        allow_module_level=True,
    )

import onnx
import onnxruntime

from conftest import backend_or_skip, random_weights
from nucleuseg import Segmenter, cli
from nucleuseg.backends import build_network, get_backend
from nucleuseg.backends.base import init_weights
from nucleuseg.backends.onnx_backend import OnnxNetwork, build_onnx_model, training_backends
from nucleuseg.checkpoint import load_model
from nucleuseg.config import get_preset
from nucleuseg.data import make_synthetic, synthetic_sample
from nucleuseg.errors import ConfigError, ExtraMissing, InputError, TrainingUnsupported
from nucleuseg.export import export_model, export_onnx
from nucleuseg.postprocess import to_instances

# name -> (preset, network changes)
NETWORKS = {
    "seed": ("seed", {}),
    "default": ("default", {}),
    "batchnorm": ("default", {"normalization": "batch"}),
    "relu-nearest": ("default", {"activation": "relu", "upsampling": "nearest"}),
    "seed-batchnorm-nearest": ("seed", {"normalization": "batch", "upsampling": "nearest"}),
}


def _preset(name: str):
    preset_name, changes = NETWORKS[name]
    preset = get_preset(preset_name)
    network = preset.network.replace(depth=3, base_filters=4, **changes)
    inference = preset.inference.replace(tile=64, overlap=16)
    training = preset.training.replace(crop=32, batch_size=2, steps_per_epoch=4)
    return preset.replace(network=network, inference=inference, training=training)


def _pair(name: str):
    """Torch and onnx segmenters of network ``name`` with the same random weights."""
    backend_or_skip("torch")
    preset = _preset(name)
    weights = random_weights(preset.network)
    pair = []
    for backend in ("torch", "onnx"):
        seg = Segmenter(backend, preset=preset, seed=0, device="cpu")
        seg.set_weights(weights)
        pair.append(seg)
    return pair


@pytest.mark.parametrize("name", list(NETWORKS))
def test_probabilities_loss_and_labels_match_torch(name):
    ref, seg = _pair(name)
    rng = np.random.default_rng(2)
    for shape in ((2, 32, 32), (1, 48, 80)):  # one network, several input sizes
        x = rng.random((*shape, 3), dtype=np.float32)
        assert np.abs(seg.network.predict(x) - ref.network.predict(x)).max() <= 1e-4
    y = (rng.random((2, 32, 32, seg.preset.network.out_channels)) > 0.7).astype(np.float32)
    x = rng.random((2, 32, 32, 3), dtype=np.float32)
    assert seg.network.loss(x, y) == pytest.approx(ref.network.loss(x, y), rel=1e-4)
    # whole images through the inference path: padding, tiles (tile 64), post-processing
    for i, size in enumerate((64, 100)):
        image = synthetic_sample(seed=i, size=size).image
        expected = ref.predict_proba(image)
        probs = seg.predict_proba(image)
        assert np.abs(probs - expected).max() <= 1e-4
        labels = to_instances(expected, seg.preset.inference)
        assert labels.max() > 0  # something to compare
        np.testing.assert_array_equal(seg.predict(image), labels)


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_full_size_preset_networks_match_torch(preset):
    """The presets' own networks (depth 5), from their initial weights: random weights as large
    as the reduced networks' make the activations of five levels explode, and then float32
    round-off alone parts any two backends (torch and flax too) by up to 1e-2."""
    backend_or_skip("torch")
    config = get_preset(preset).network
    x = np.random.default_rng(3).random((1, 64, 96, 3), dtype=np.float32)
    ref, net = (build_network(name, config, seed=5, device="cpu") for name in ("torch", "onnx"))
    assert np.abs(net.predict(x) - ref.predict(x)).max() <= 1e-4


def test_a_model_file_trained_with_torch_loads_into_onnx(tmp_path):
    backend_or_skip("torch")
    preset = _preset("default")
    data = make_synthetic(4, size=64, seed=0)
    ref = Segmenter("torch", preset=preset, seed=0, device="cpu")
    ref.fit(data, epochs=1, progress=False)
    path = tmp_path / "model.safetensors"
    ref.save(path)
    seg = Segmenter.load(path, backend="onnx")
    assert seg.backend == "onnx" and seg.preset == ref.preset
    for sample in make_synthetic(2, size=80, seed=5):
        np.testing.assert_array_equal(seg.predict(sample.image), ref.predict(sample.image))


def test_block_wise_prediction_matches_torch(tmp_path):
    """Images larger than memory: blocks predicted from several threads at once."""
    for module in ("dask", "zarr"):
        pytest.importorskip(module, reason='block-wise prediction: pip install "nucleuseg[large]"')
    import zarr

    ref, seg = _pair("default")
    image = synthetic_sample(5, size=192, kind="fluorescence").image
    results = [s.predict_blocks(image, tmp_path / s.backend, block=64, halo=48) for s in (ref, seg)]
    expected, labels = (zarr.open_array(r.labels, mode="r")[:] for r in results)
    assert results[0].nuclei > 0
    np.testing.assert_array_equal(labels, expected)


def test_export_writes_a_checked_file_that_onnxruntime_runs_to_the_same_output(tmp_path):
    preset = _preset("batchnorm")
    seg = Segmenter("onnx", preset=preset)
    seg.set_weights(random_weights(preset.network))
    from_segmenter = export_onnx(seg, tmp_path / "a.onnx")
    seg.save(tmp_path / "model.safetensors")
    from_file = export_model(tmp_path / "model.safetensors", tmp_path / "b.onnx", format="onnx")
    assert from_file.read_bytes() == from_segmenter.read_bytes()
    onnx.checker.check_model(str(from_file), full_check=True)
    session = onnxruntime.InferenceSession(str(from_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    x = np.random.default_rng(0).random((3, 48, 64, 3), dtype=np.float32)
    out = session.run(["probabilities"], {"image": x})[0]
    np.testing.assert_allclose(out, seg.network.predict(x), atol=1e-6)
    # the weights are in the file as canonical values (transposed to ONNX layouts)
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(from_file).graph.initializer}
    weights = seg.get_weights()
    np.testing.assert_array_equal(stored["enc1.norm1.var"], weights["enc1.norm1.var"])
    np.testing.assert_array_equal(
        stored["enc2.conv1.kernel"], weights["enc2.conv1.kernel"].transpose(3, 2, 0, 1)
    )


def test_export_on_the_command_line(tmp_path, capsys):
    preset = _preset("seed")
    seg = Segmenter("onnx", preset=preset)
    seg.set_weights(random_weights(preset.network))
    seg.save(tmp_path / "model.safetensors")
    out = tmp_path / "model.onnx"
    argv = ["export", str(tmp_path / "model.safetensors"), "--format", "onnx", "--out", str(out)]
    assert cli.main(argv) == 0
    assert str(out) in capsys.readouterr().out
    onnx.checker.check_model(str(out))
    assert out.read_bytes() == export_onnx(seg, tmp_path / "again.onnx").read_bytes()
    assert cli.main([*argv[:-1], str(tmp_path)]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err
    assert cli.main([*argv[:-1], str(tmp_path / "no" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_of_a_shipped_model_by_name(tmp_path, monkeypatch):
    from nucleuseg import checkpoint, models

    preset = _preset("seed")
    weights = random_weights(preset.network)
    checkpoint.save_model(tmp_path / "source.safetensors", weights, preset, "torch")
    card = {k: v for k, v in models._example_card("tiny").items() if k != "sha256"}
    models.save_shipped(tmp_path / "source.safetensors", "tiny", card, directory=tmp_path)
    monkeypatch.setattr(models, "DIRECTORY", tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # no file named "tiny" here
    out = tmp_path / "tiny.onnx"
    assert cli.main(["export", "tiny", "--out", str(out)]) == 0
    assert export_onnx("tiny", tmp_path / "again.onnx").read_bytes() == out.read_bytes()
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    shipped = models.get_model("tiny").path
    np.testing.assert_array_equal(stored["head.bias"], load_model(shipped).weights["head.bias"])


def test_export_refuses_a_bad_path_or_format_and_names_the_missing_extra(tmp_path, monkeypatch):
    seg = Segmenter("onnx", preset=_preset("seed"))
    with pytest.raises(InputError, match="is a folder"):
        export_onnx(seg, tmp_path)
    with pytest.raises(InputError, match="format 'tflite' is not an export format"):
        export_model(seg, tmp_path / "m.tflite", format="tflite")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ExtraMissing, match=r'pip install "nucleuseg\[onnx\]"'):
        export_onnx(seg, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_training_raises_an_error_naming_the_backends_that_train(tiny_preset, tmp_path):
    assert training_backends() == ["torch", "keras", "flax"]
    net = build_network("onnx", tiny_preset.network, 0)
    x = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(TrainingUnsupported, match=r"cannot train; .*\(torch, keras, flax\)"):
        net.train_step(x, x[..., :3], 1e-3)
    with pytest.raises(TrainingUnsupported, match="cannot resume training"):
        net.set_optimizer_state({"adam.step": np.asarray(1.0)})
    assert isinstance(TrainingUnsupported("x"), NotImplementedError)
    seg = Segmenter("onnx", preset=tiny_preset)
    with pytest.raises(TrainingUnsupported, match="backend='onnx'"):
        seg.fit(make_synthetic(2, size=48, seed=0), epochs=1, progress=False)
    assert net.get_optimizer_state().keys() == {"adam.step"}


def test_the_network_keeps_the_contract_and_runs_only_on_the_cpu(tiny_preset):
    config = tiny_preset.network
    net = get_backend("onnx")(config, 3)
    assert isinstance(net, OnnxNetwork) and net.device.kind == "cpu"
    weights = net.get_weights()
    for name, value in init_weights(config, 3).items():
        np.testing.assert_array_equal(weights[name], value)
    weights["head.bias"][:] = 5.0  # a copy: the network's own weights do not change
    assert not np.any(net.get_weights()["head.bias"])
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    before = net.predict(x)
    net.set_weights(weights)  # a new session with the new weights
    assert not np.allclose(net.predict(x), before)
    with pytest.raises(ConfigError, match="sees no GPU"):
        build_network("onnx", config, device="gpu")


def test_threads_share_one_session(tiny_preset, monkeypatch):
    """Block-wise prediction calls predict from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    net = build_network("onnx", tiny_preset.network, 0)
    built = []
    new_session = net._new_session
    monkeypatch.setattr(net, "_new_session", lambda: built.append(1) or new_session())
    xs = [np.random.default_rng(i).random((1, 32, 48, 3), dtype=np.float32) for i in range(6)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(net.predict, xs))
    assert built == [1]
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out, net.predict(x))


def test_one_graph_for_every_shape():
    config = _preset("default").network
    model = build_onnx_model(config, random_weights(config))
    onnx.checker.check_model(model)
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", config.out_channels]
    ops = {node.op_type for node in model.graph.node}
    assert {"Conv", "ConvTranspose", "MaxPool", "Concat", "Elu", "Sigmoid"} <= ops
    assert "Dropout" not in ops


def test_backends_lists_onnx_and_import_nucleuseg_imports_neither_package():
    code = (
        "import sys, nucleuseg; from nucleuseg.cli import main; main(['backends']); "
        "assert not {'onnx', 'onnxruntime'} & set(sys.modules), 'imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("onnx"))
    assert f"onnxruntime {onnxruntime.__version__}" in line and "(builtin)" in line
