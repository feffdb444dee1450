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

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleuseg._atomic import atomic_save
from nucleuseg.backends.base import check_weights
from nucleuseg.config import Preset, UNetConfig
from nucleuseg.errors import CheckpointError, ConfigError

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
    history: object  # nucleuseg.training.History
    seed: int


def _sniff(path: Path) -> None:
    """Raise CheckpointError unless ``path`` looks like a safetensors file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            raise CheckpointError(f"{path}: this is {what}")
    if size < 9:
        raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > min(size - 8, _MAX_HEADER) or head[8:9] != b"{":
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
    try:
        return Preset.from_json(metadata["preset"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: metadata has no preset") from exc
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid configuration: {exc}") from exc


def _json(path, metadata: dict[str, str], key: str):
    if key not in metadata:
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON") from exc


def _write(
    path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str]
) -> None:
    from safetensors.numpy import save_file

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise CheckpointError(f"{path}: folder {path.parent} does not exist")
    tensors = {k: np.array(v, dtype=np.float32, order="C") for k, v in tensors.items()}
    metadata = {"nucleuseg.format": str(FORMAT_VERSION), **metadata}
    atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_model(
    path: str | os.PathLike,
    weights: dict[str, np.ndarray],
    preset: Preset,
    backend: str,
    history: dict | None = None,
) -> None:
    """Write a model file (atomically).

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
    """
    check_weights(weights, preset.network, source="weights to save")
    metadata = {"preset": preset.to_json(), "backend": backend, "kind": "model"}
    if history is not None:
        metadata["history"] = json.dumps(history)
    _write(path, weights, metadata)


def load_model(path: str | os.PathLike) -> ModelFile:
    """Read and validate a model file.

    Raises
    ------
    CheckpointError
        If the file is missing, not safetensors (pickles and other formats are named), from a
        newer format version, or its weights do not match its configuration.
    """
    tensors, metadata = _read(path)
    if metadata.get("kind", "model") != "model":
        raise CheckpointError(f"{path}: a {metadata.get('kind')} file, not a model file")
    preset = _preset(path, metadata)
    check_weights(tensors, preset.network, source=str(path))
    return ModelFile(
        tensors, preset, metadata.get("backend", "?"), _json(path, metadata, "history")
    )


def write_training_state(
    path: str | os.PathLike,
    network,
    preset: Preset,
    history,
    best_weights: dict[str, np.ndarray],
    seed: int,
) -> None:
    """Write everything ``--resume`` needs (atomically)."""
    tensors = {f"weights/{k}": v for k, v in network.get_weights().items()}
    tensors.update({f"best/{k}": v for k, v in best_weights.items()})
    tensors.update({f"optim/{k}": v for k, v in network.get_optimizer_state().items()})
    metadata = {
        "preset": preset.to_json(),
        "kind": "training-state",
        "history": json.dumps(history.to_dict()),
        "seed": str(seed),
    }
    _write(path, tensors, metadata)


def read_training_state(path: str | os.PathLike, config: UNetConfig) -> TrainingState:
    """Read a training-state file and check it matches the network ``config``."""
    from nucleuseg.training import History

    tensors, metadata = _read(path)
    if metadata.get("kind") != "training-state":
        raise CheckpointError(f"{path}: not a training-state file")
    preset = _preset(path, metadata)
    if preset.network != config:
        raise CheckpointError(f"{path}: was written for a different network configuration")
    groups: dict[str, dict[str, np.ndarray]] = {"weights": {}, "best": {}, "optim": {}}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        if group not in groups:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
        groups[group][name] = value
    check_weights(groups["weights"], config, source=f"{path} (weights)")
    check_weights(groups["best"], config, source=f"{path} (best weights)")
    history = History.from_dict(_json(path, metadata, "history") or {})
    return TrainingState(
        groups["weights"],
        groups["best"],
        groups["optim"],
        preset,
        history,
        int(metadata.get("seed", 0)),
    )
