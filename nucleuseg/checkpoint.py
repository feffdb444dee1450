"""Model files: canonical weights + configuration in one safetensors file, never pickle.

A model file holds the canonical weights (:mod:`nucleuseg.backends.base`) as tensors and, in the
safetensors JSON metadata, the :class:`~nucleuseg.config.Preset`, the format version, the backend
that trained it and the training history. Loading one parses a JSON header and copies arrays: it
can never run code. Files in other formats (pickles, ``.pt``, ``.h5``, ``.keras``) are refused
with a message that says what they are.

Training-state files (for ``--resume``) use the same format with the optimizer state, the best
weights so far and the history added.

Every write goes to a temporary file that is renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleuseg._atomic import atomic_save
from nucleuseg.backends.base import check_weights
from nucleuseg.config import InferenceConfig, Preset, TrainingConfig, UNetConfig
from nucleuseg.errors import CheckpointError, ConfigError, clip
from nucleuseg.history import EpochRecord, History

FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024

_SIGNATURES = (
    (b"\x80", "a Python pickle (refused: loading a pickle can run arbitrary code)"),
    (
        b"PK\x03\x04",
        "a zip archive, such as a torch .pt or a .keras file (refused: may hold pickles)",
    ),
    (b"\x89HDF", "an HDF5 file, such as a Keras .h5 model (not supported: use safetensors)"),
)


@dataclass(frozen=True)
class ModelFile:
    """What a model file holds."""

    weights: dict[str, np.ndarray]
    preset: Preset
    backend: str
    history: dict | None


@dataclass(frozen=True)
class TrainingState:
    """What a training-state file holds."""

    weights: dict[str, np.ndarray]
    best_weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    preset: Preset
    history: History
    seed: int
    averaged_weights: dict[str, np.ndarray] | None = None
    averaged_step: int = 0


def _sniff(path: Path) -> None:
    """Raise CheckpointError unless ``path`` looks like a safetensors file."""
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a model file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if size >= 9:
        # A safetensors file: 8-byte little-endian header length, then a JSON object. Checked
        # before the signatures, since a header length can start with a pickle's 0x80 byte.
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= min(size - 8, _MAX_HEADER) and head[8:9] == b"{":
            return
        if head[8:9] == b"{" and size - 8 < header_len <= _MAX_HEADER:
            raise CheckpointError(
                f"{path}: truncated safetensors file (its header alone is {header_len} bytes, "
                f"the file {size})"
            )
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            raise CheckpointError(f"{path}: this is {what}")
    if size < 9:
        raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
    raise CheckpointError(f"{path}: not a safetensors file (no valid header)")


def _read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    _sniff(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    version = metadata.get("nucleuseg.format")
    if version is None:
        raise CheckpointError(f"{path}: a safetensors file, but not a nucleuseg model (no format)")
    try:
        version_number = int(version)
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad format version {version!r}") from exc
    if version_number > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer nucleuseg (format {version_number}, this version reads "
            f"up to {FORMAT_VERSION}); upgrade nucleuseg"
        )
    return tensors, metadata


def _preset(path, metadata: dict[str, str]) -> Preset:
    if "preset" not in metadata:
        raise CheckpointError(f"{path}: metadata has no preset")
    data = _json(path, metadata, "preset")
    _check_record(path, Preset, data, "preset")
    for section, cls in (
        ("network", UNetConfig),
        ("training", TrainingConfig),
        ("inference", InferenceConfig),
    ):
        if section in data:
            _check_record(path, cls, data[section], f"preset.{section}")
    try:
        return Preset.from_dict(data)
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: invalid configuration: {exc}") from None


def _check_record(path, cls: type, data: object, where: str) -> None:
    """Raise CheckpointError unless ``data`` is a JSON object whose known fields have the types
    the dataclass ``cls`` declares (unknown fields are left to ``cls`` itself)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {where} must be a JSON object, got {type(data).__name__}")
    for f in dataclasses.fields(cls):
        if f.name in data and not _fits(data[f.name], str(f.type)):
            shown = clip(repr(data[f.name]))
            raise CheckpointError(f"{path}: {where}.{f.name} is {shown}, expected {f.type}")


def _fits(value: object, annotation: str) -> bool:
    """Whether a JSON value fits a field annotation such as ``int | None`` or
    ``tuple[float, ...]``; types this check does not know pass."""
    if "[" not in annotation and "|" in annotation:
        return any(_fits(value, part.strip()) for part in annotation.split("|"))
    if annotation == "None":
        return value is None
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if annotation == "str":
        return isinstance(value, str)
    if annotation.startswith(("tuple[", "list[")) and annotation.endswith("]"):
        if not isinstance(value, list):
            return False
        items = [part.strip() for part in annotation[annotation.index("[") + 1 : -1].split(",")]
        if annotation.startswith("list[") or items[-1] == "...":
            return all(_fits(v, items[0]) for v in value)
        if len(value) != len(items):
            return False
        return all(_fits(v, t) for v, t in zip(value, items, strict=True))
    return True


def _history(path, metadata: dict[str, str]) -> dict | None:
    """The training history of the metadata, checked to rebuild a History; ``None`` if absent."""
    data = _json(path, metadata, "history")
    if data is None:
        return None
    _check_record(path, History, data, "history")
    for k, epoch in enumerate(data.get("epochs", [])):
        _check_record(path, EpochRecord, epoch, f"history.epochs[{k}]")
    try:
        History.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: invalid training history: {exc}") from None
    return data


def _check_dtypes(path, tensors: dict[str, np.ndarray]) -> None:
    bad = [f"{k} ({v.dtype})" for k, v in tensors.items() if v.dtype.kind != "f"]
    if bad:
        raise CheckpointError(
            f"{path}: tensors must be floating point, got {', '.join(bad[:4])}"
            + (" ..." if len(bad) > 4 else "")
        )


def _json(path, metadata: dict[str, str], key: str):
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON") from exc


#: The dtypes a model file's weights may be stored in; they are always read back as float32.
DTYPES = ("float32", "float16")


def _write(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    metadata: dict[str, str],
    dtype: str = "float32",
) -> None:
    from safetensors.numpy import save_file

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise CheckpointError(f"{path}: folder {path.parent} does not exist")
    if dtype not in DTYPES:
        raise CheckpointError(f"{path}: dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "float16":
        limit = float(np.finfo(np.float16).max)
        big = [k for k, v in tensors.items() if np.size(v) and float(np.max(np.abs(v))) > limit]
        if big:
            raise CheckpointError(
                f"{path}: weights {big[:4]} exceed the float16 range (+-{limit:g}); "
                "save them as float32"
            )
    tensors = {k: np.array(v, dtype=dtype, order="C") for k, v in tensors.items()}
    metadata = {"nucleuseg.format": str(FORMAT_VERSION), **metadata}
    atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_model(
    path: str | os.PathLike,
    weights: dict[str, np.ndarray],
    preset: Preset,
    backend: str,
    history: dict | None = None,
    dtype: str = "float32",
) -> None:
    """Write a model file (atomically).

    Parameters
    ----------
    path : path
        The ``.safetensors`` file to write; its folder must exist.
    weights : dict
        Canonical weights (:mod:`nucleuseg.backends.base`) matching ``preset.network``.
    preset : Preset
        Stored in the metadata with the backend name and the ``history``.
    backend : str
        The backend that trained the weights (the default of :meth:`Segmenter.load`).
    history : dict, optional
        :meth:`History.to_dict <nucleuseg.history.History.to_dict>` of the training run.
    dtype : {"float32", "float16"}
        How the tensors are stored. ``"float16"`` halves the file (the pretrained models ship
        so); :func:`load_model` reads either back as ``float32``.

    Raises
    ------
    CheckpointError
        If the weights do not fit the network, ``dtype`` is not one of :data:`DTYPES`, or a
        weight lies outside the float16 range when ``dtype="float16"``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from nucleuseg.config import get_preset
    >>> from nucleuseg.backends.base import init_weights
    >>> preset = get_preset("seed").replace(network=get_preset("seed").network.replace(depth=2))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> save_model(path, init_weights(preset.network, 0), preset, "torch")
    >>> load_model(path).preset.network.depth
    2
    >>> save_model(path, init_weights(preset.network, 0), preset, "torch", dtype="float16")
    >>> load_model(path).weights["enc1.conv1.kernel"].dtype
    dtype('float32')
    """
    check_weights(weights, preset.network, source="weights to save")
    metadata = {"preset": preset.to_json(), "backend": backend, "kind": "model"}
    if history is not None:
        metadata["history"] = json.dumps(history)
    _write(path, weights, metadata, dtype=dtype)


def load_model(path: str | os.PathLike) -> ModelFile:
    """Read and validate a model file.

    The weights come back as ``float32`` whatever dtype the file stores (float32 or float16).

    Raises
    ------
    CheckpointError
        If the file is missing, not safetensors (pickles and other formats are named), from a
        newer format version, its configuration or history is malformed, or its weights do not
        match its configuration (names, shapes, floating-point dtype, finite values).
    """
    tensors, metadata = _read(path)
    if metadata.get("kind", "model") != "model":
        raise CheckpointError(f"{path}: a {metadata.get('kind')} file, not a model file")
    preset = _preset(path, metadata)
    check_weights(tensors, preset.network, source=str(path))
    _check_dtypes(path, tensors)
    tensors = {k: v.astype(np.float32, copy=False) for k, v in tensors.items()}
    return ModelFile(tensors, preset, metadata.get("backend", "?"), _history(path, metadata))


def write_training_state(
    path: str | os.PathLike,
    network,
    preset: Preset,
    history: History,
    best_weights: dict[str, np.ndarray],
    seed: int,
    averaged_weights: dict[str, np.ndarray] | None = None,
    averaged_step: int = 0,
) -> None:
    """Write everything ``--resume`` needs (atomically): with ``averaged_weights``, the moving
    average of the weights (``TrainingConfig.ema_decay``) last updated at ``averaged_step``."""
    tensors = {f"weights/{k}": v for k, v in network.get_weights().items()}
    tensors.update({f"best/{k}": v for k, v in best_weights.items()})
    tensors.update({f"optim/{k}": v for k, v in network.get_optimizer_state().items()})
    metadata = {
        "preset": preset.to_json(),
        "kind": "training-state",
        "history": json.dumps(history.to_dict()),
        "seed": str(seed),
    }
    if averaged_weights is not None:
        tensors.update({f"ema/{k}": v for k, v in averaged_weights.items()})
        metadata["ema_step"] = str(int(averaged_step))
    _write(path, tensors, metadata)


def read_training_state(path: str | os.PathLike, config: UNetConfig) -> TrainingState:
    """Read a training-state file and check it matches the network ``config``."""
    tensors, metadata = _read(path)
    _check_dtypes(path, tensors)
    if metadata.get("kind") != "training-state":
        raise CheckpointError(f"{path}: not a training-state file")
    preset = _preset(path, metadata)
    if preset.network != config:
        raise CheckpointError(f"{path}: was written for a different network configuration")
    groups: dict[str, dict[str, np.ndarray]] = {"weights": {}, "best": {}, "optim": {}, "ema": {}}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        if group not in groups:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
        groups[group][name] = value
    check_weights(groups["weights"], config, source=f"{path} (weights)")
    check_weights(groups["best"], config, source=f"{path} (best weights)")
    if groups["ema"]:
        check_weights(groups["ema"], config, source=f"{path} (averaged weights)")
    history = History.from_dict(_history(path, metadata) or {})
    seed, ema_step = _count(path, metadata, "seed"), _count(path, metadata, "ema_step")
    return TrainingState(
        groups["weights"],
        groups["best"],
        groups["optim"],
        preset,
        history,
        seed,
        groups["ema"] or None,
        ema_step,
    )


def _count(path, metadata: dict[str, str], key: str) -> int:
    """The non-negative integer in ``metadata[key]`` (0 when absent)."""
    text = metadata.get(key, "0")
    if not (text.isascii() and text.isdigit() and len(text) < 20):
        raise CheckpointError(f"{path}: metadata {key!r} is {text[:40]!r}, not an integer")
    return int(text)
