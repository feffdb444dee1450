import json
import pickle
import struct

import numpy as np
import pytest

from nucleuseg.backends.base import init_weights
from nucleuseg.checkpoint import FORMAT_VERSION, load_model, save_model
from nucleuseg.errors import CheckpointError


def _save(path, preset, **changes):
    weights = init_weights(preset.network, 0)
    weights.update(changes)
    save_model(path, weights, preset, "torch")


def test_round_trip(tmp_path, tiny_preset):
    path = tmp_path / "m.safetensors"
    _save(path, tiny_preset)
    model = load_model(path)
    assert model.preset == tiny_preset and model.backend == "torch"
    ref = init_weights(tiny_preset.network, 0)
    assert all(np.array_equal(model.weights[k], ref[k]) for k in ref)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(self.target), "pwned"))


def test_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed.txt"
    payload = _Payload()
    payload.target = str(marker)
    for name in ("model.pt", "model.safetensors", "model.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(CheckpointError, match="pickle"):
            load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"PK\x03\x04rest-of-a-zip", "zip archive"),
        (b"\x89HDF\r\n\x1a\n....", "HDF5"),
        (b"", "too short"),
        (b"hello world, not a model", "not a safetensors"),
    ],
)
def test_other_formats_are_named(tmp_path, content, message):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such model file"):
        load_model(tmp_path / "absent.safetensors")


def _raw_safetensors(path, tensors, metadata):
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)


def test_plain_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "other.safetensors"
    _raw_safetensors(path, {"a": np.zeros(2, np.float32)}, {"x": "y"})
    with pytest.raises(CheckpointError, match="not a nucleuseg model"):
        load_model(path)


def test_newer_format_is_refused(tmp_path, tiny_preset):
    path = tmp_path / "new.safetensors"
    weights = init_weights(tiny_preset.network, 0)
    _raw_safetensors(
        path,
        weights,
        {"nucleuseg.format": str(FORMAT_VERSION + 1), "preset": tiny_preset.to_json()},
    )
    with pytest.raises(CheckpointError, match="newer nucleuseg"):
        load_model(path)


def test_missing_extra_misshapen_weights(tmp_path, tiny_preset):
    weights = init_weights(tiny_preset.network, 0)
    meta = {"nucleuseg.format": str(FORMAT_VERSION), "preset": tiny_preset.to_json()}
    cases = {
        "missing": {k: v for k, v in weights.items() if k != "head.bias"},
        "unexpected": {**weights, "extra.kernel": np.zeros(3, np.float32)},
        "misshapen": {**weights, "head.bias": np.zeros(7, np.float32)},
    }
    for word, tensors in cases.items():
        path = tmp_path / f"{word}.safetensors"
        _raw_safetensors(path, tensors, meta)
        with pytest.raises(CheckpointError, match=word):
            load_model(path)


def test_bad_config_in_metadata(tmp_path, tiny_preset):
    path = tmp_path / "cfg.safetensors"
    preset = json.loads(tiny_preset.to_json())
    preset["network"]["activation"] = "swish"
    _raw_safetensors(
        path,
        init_weights(tiny_preset.network, 0),
        {"nucleuseg.format": "1", "preset": json.dumps(preset)},
    )
    with pytest.raises(CheckpointError, match="activation"):
        load_model(path)


def test_truncated_safetensors(tmp_path, tiny_preset):
    path = tmp_path / "t.safetensors"
    _save(path, tiny_preset)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(path)
    # a header length pointing past the end of the file
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(CheckpointError, match="no valid header"):
        load_model(path)
