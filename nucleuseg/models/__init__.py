"""Pretrained models that ship inside the package, by name, each with its model card.

A shipped model is two files in this package's folder (installed with it as package data, so
nothing is downloaded at run time): ``<name>.safetensors``, an ordinary model file
(:mod:`nucleuseg.checkpoint`, weights stored as float16 or float32), and ``<name>.json``, its
*model card*: what the model is for and not for, the data, command, seed, machine and versions
that trained it, and its validation scores overall and per image kind. Anyone can retrain a
shipped model from its card.

:func:`list_models` lists them, :func:`pretrained` (or :meth:`Segmenter.pretrained
<nucleuseg.segmenter.Segmenter.pretrained>`) loads one into any backend, and every command of
``nucleuseg`` that takes a model file also takes a shipped model's name
(:func:`resolve_model`). Loading a shipped model checks its weights against the SHA-256 that its
card records.

The card is a JSON object with these fields (:func:`validate_card` checks them):

- ``name``, ``description``; ``kinds``: the image kinds it is for (``fluorescence``,
  ``brightfield``, ``histology``); ``native_diameter_px``: the typical nucleus diameter, in
  pixels, of its training images; ``not_for``: what it should not be used for; ``licence`` of
  the weights;
- ``training``: ``data``, ``data_licence``, ``command``, ``seed``, ``backend``,
  ``wall_minutes``, ``epochs``, ``best_epoch``, ``machine``, ``versions`` (``python``,
  ``numpy`` and the framework's);
- ``validation``: ``data``, ``split``, ``images``, ``command``, ``dsb_score``, ``ap50`` and
  ``per_kind`` (the DSB score of each image kind);
- ``weights`` (the file name), ``sha256`` (of that file) and ``dtype`` (``float16`` or
  ``float32``), which :func:`save_shipped` fills in.

Examples
--------
>>> from nucleuseg import models
>>> all(isinstance(info, models.ModelInfo) for info in models.list_models())
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nucleuseg import checkpoint
from nucleuseg._atomic import atomic_write
from nucleuseg.errors import CheckpointError, InputError, clip

if TYPE_CHECKING:
    from nucleuseg.segmenter import Segmenter

#: The folder of the shipped models: this package's own folder. Nothing else is searched.
DIRECTORY = Path(__file__).resolve().parent

#: The shipped model used where none is named: ``nucleuseg demo``, the napari widget's first
#: choice. The general model, for fluorescence, brightfield and H&E images.
DEFAULT_MODEL = "nuclei"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelInfo:
    """A shipped model, as its card describes it.

    Attributes
    ----------
    name : str
        What :func:`pretrained` and the command line take.
    description : str
        One line.
    kinds : tuple of str
        The image kinds it is for.
    scores : dict
        Validation scores from the card: ``"dsb_score"`` (the DSB score overall), ``"ap50"``
        (average precision at IoU 0.5) and the DSB score of each validated image kind, by kind.
    path : Path
        The weights file.
    card : dict
        The whole model card (:func:`card_markdown` renders it).
    """

    name: str
    description: str
    kinds: tuple[str, ...]
    scores: dict[str, float] = field(hash=False)
    path: Path
    card: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def dsb_score(self) -> float:
        """The validation DSB score that the card records."""
        return self.scores["dsb_score"]

    def verify(self) -> None:
        """Check the weights file against the SHA-256 of the card.

        Raises
        ------
        CheckpointError
            If the file is missing or its SHA-256 differs (a damaged or replaced file).
        """
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: weights of shipped model {self.name!r} missing")
        digest = _sha256(self.path)
        if digest != self.card["sha256"]:
            raise CheckpointError(
                f"{self.path}: SHA-256 {digest} differs from {self.card['sha256']} in the card "
                f"of shipped model {self.name!r}: the file is damaged or was replaced; reinstall "
                "nucleuseg"
            )


# -- the card --------------------------------------------------------------------------------


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _score(value: object) -> bool:
    return _number(value) and value <= 1


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(_text(v) for v in value)


# field -> (check, what it must be); a nested dict is a section of the card.
_SCHEMA: dict[str, Any] = {
    "name": (lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None, "a model name"),
    "description": (_text, "a non-empty string"),
    "kinds": (lambda v: _texts(v) and len(v) > 0, "a non-empty list of image kinds"),
    "native_diameter_px": (lambda v: _number(v) and v > 0, "a positive number of pixels"),
    "not_for": (_texts, "a list of strings"),
    "licence": (_text, "a non-empty string"),
    "training": {
        "data": (_text, "a non-empty string"),
        "data_licence": (_text, "a non-empty string"),
        "command": (_text, "a non-empty string"),
        "seed": (_integer, "an integer >= 0"),
        "backend": (_text, "a non-empty string"),
        "wall_minutes": (_number, "a number of minutes >= 0"),
        "epochs": (_integer, "an integer >= 0"),
        "best_epoch": (_integer, "an integer >= 0"),
        "machine": (_text, "a non-empty string"),
        "versions": (
            lambda v: (
                isinstance(v, dict)
                and all(_text(v.get(k)) for k in ("python", "numpy"))
                and len(v) >= 3
                and all(isinstance(k, str) and _text(x) for k, x in v.items())
            ),
            "an object of version strings: python, numpy and the framework's",
        ),
    },
    "validation": {
        "data": (_text, "a non-empty string"),
        "split": (_text, "a non-empty string"),
        "images": (lambda v: _integer(v) and v > 0, "a positive integer"),
        "command": (_text, "a non-empty string"),
        "dsb_score": (_score, "a score in [0, 1]"),
        "ap50": (_score, "a score in [0, 1]"),
        "per_kind": (
            lambda v: isinstance(v, dict) and all(_text(k) and _score(s) for k, s in v.items()),
            "an object of image kind -> score in [0, 1]",
        ),
    },
    "weights": (
        lambda v: isinstance(v, str) and v.endswith(".safetensors") and Path(v).name == v,
        "a .safetensors file name (no folder)",
    ),
    "sha256": (lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "64 lowercase hex digits"),
    "dtype": (lambda v: v in checkpoint.DTYPES, f"one of {', '.join(checkpoint.DTYPES)}"),
}


def validate_card(card: dict, source: str = "model card") -> None:
    """Check that a model card has every field, each of the right type.

    Parameters
    ----------
    card : dict
        The card, as read from its JSON file. Fields beyond those required are allowed.
    source : str
        Named in the error (the card's file, say).

    Raises
    ------
    CheckpointError
        Naming the first field that is missing or wrong, and what it must be.

    Examples
    --------
    >>> card = _example_card("tiny")
    >>> validate_card(card)
    >>> validate_card({**card, "kinds": []})
    Traceback (most recent call last):
    ...
    nucleuseg.errors.CheckpointError: model card: kinds is [], expected a non-empty list of image kinds
    >>> del card["training"]["seed"]
    >>> validate_card(card, source="tiny.json")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.CheckpointError: tiny.json: training.seed is missing (an integer >= 0)
    """
    _check_section(card, _SCHEMA, source, "")


def _check_section(data: object, schema: dict, source: str, where: str) -> None:
    if not isinstance(data, dict):
        shown = where.rstrip(".") or "the card"
        raise CheckpointError(f"{source}: {shown} must be a JSON object, got {type(data).__name__}")
    for key, rule in schema.items():
        if key not in data:
            what = "an object" if isinstance(rule, dict) else rule[1]
            raise CheckpointError(f"{source}: {where}{key} is missing ({what})")
        if isinstance(rule, dict):
            _check_section(data[key], rule, source, f"{where}{key}.")
            continue
        check, what = rule
        if not check(data[key]):
            shown = clip(json.dumps(data[key]) if _jsonable(data[key]) else repr(data[key]), 60)
            raise CheckpointError(f"{source}: {where}{key} is {shown}, expected {what}")


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _example_card(name: str) -> dict:
    """A complete card of placeholder values, for the examples of this module."""
    return {
        "name": name,
        "description": "an example",
        "kinds": ["fluorescence"],
        "native_diameter_px": 20,
        "not_for": ["anything real"],
        "licence": "CC0-1.0",
        "training": {
            "data": "synthetic",
            "data_licence": "CC0-1.0",
            "command": "nucleuseg demo",
            "seed": 0,
            "backend": "torch",
            "wall_minutes": 0.1,
            "epochs": 1,
            "best_epoch": 1,
            "machine": "any",
            "versions": {"python": "3.11", "numpy": "2.0", "torch": "2.13.0"},
        },
        "validation": {
            "data": "synthetic",
            "split": "none",
            "images": 1,
            "command": "nucleuseg evaluate",
            "dsb_score": 0.5,
            "ap50": 0.7,
            "per_kind": {"fluorescence": 0.5},
        },
        "weights": f"{name}.safetensors",
        "sha256": "0" * 64,
        "dtype": "float16",
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_card(path: Path) -> ModelInfo:
    """The :class:`ModelInfo` of the card file ``path`` (validated; the weights not hashed)."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read this model card ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: model card is not valid JSON ({exc})") from None
    validate_card(card, source=str(path))
    if card["name"] != path.stem:
        raise CheckpointError(f"{path}: the card names model {card['name']!r}, not {path.stem!r}")
    validation = card["validation"]
    scores = {"dsb_score": float(validation["dsb_score"]), "ap50": float(validation["ap50"])}
    scores.update({kind: float(s) for kind, s in sorted(validation["per_kind"].items())})
    return ModelInfo(
        name=card["name"],
        description=card["description"],
        kinds=tuple(card["kinds"]),
        scores=scores,
        path=path.parent / card["weights"],
        card=card,
    )


# -- the registry ----------------------------------------------------------------------------


def _folder(directory: str | os.PathLike | None) -> Path:
    return DIRECTORY if directory is None else Path(directory)


def list_models(directory: str | os.PathLike | None = None) -> list[ModelInfo]:
    """The shipped models, sorted by name.

    Parameters
    ----------
    directory : path, optional
        Where to look; by default the package's own folder (:data:`DIRECTORY`).

    Raises
    ------
    CheckpointError
        If a card there is unreadable or incomplete.

    Examples
    --------
    >>> all(info.path.name == f"{info.name}.safetensors" for info in list_models())
    True
    """
    return [_read_card(path) for path in sorted(_folder(directory).glob("*.json"))]


def _names(directory: str | os.PathLike | None) -> str:
    names = sorted(path.stem for path in _folder(directory).glob("*.json"))
    return ", ".join(names) if names else "none"


def get_model(name: str, directory: str | os.PathLike | None = None) -> ModelInfo:
    """The shipped model ``name``.

    Raises
    ------
    InputError
        If no model of that name ships (the message lists those that do).
    CheckpointError
        If its card is unreadable or incomplete.

    Examples
    --------
    >>> get_model("no-such-model")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.InputError: no shipped model named 'no-such-model'; shipped models: ...
    """
    folder = _folder(directory)
    if not (
        isinstance(name, str) and _NAME.fullmatch(name) and (folder / f"{name}.json").is_file()
    ):
        raise InputError(
            f"no shipped model named {clip(repr(name))}; shipped models: {_names(directory)}"
        )
    return _read_card(folder / f"{name}.json")


def resolve_model(
    name_or_path: str | os.PathLike, directory: str | os.PathLike | None = None
) -> Path:
    """The model file that a name or a path stands for.

    An existing path wins (returned as it is); otherwise a shipped model's name gives its
    weights file, checked against the SHA-256 of its card.

    Raises
    ------
    CheckpointError
        If ``name_or_path`` is neither an existing file nor a shipped model's name (the message
        lists the shipped models), or a shipped model's weights fail their check.

    Examples
    --------
    >>> resolve_model("missing.safetensors")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.CheckpointError: missing.safetensors: no such model file, nor a shipped model (shipped: ...)
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    text = os.fspath(name_or_path)
    if _NAME.fullmatch(text) and (_folder(directory) / f"{text}.json").is_file():
        info = get_model(text, directory)
        info.verify()
        return info.path
    raise CheckpointError(
        f"{text}: no such model file, nor a shipped model (shipped: {_names(directory)})"
    )


def is_shipped(name_or_path: str | os.PathLike, directory: str | os.PathLike | None = None) -> bool:
    """Whether :func:`resolve_model` takes ``name_or_path`` as a shipped model's name.

    Examples
    --------
    >>> is_shipped("my-model.safetensors")
    False
    """
    text = os.fspath(name_or_path)
    return (
        not Path(text).exists()
        and _NAME.fullmatch(text) is not None
        and (_folder(directory) / f"{text}.json").is_file()
    )


def pretrained(name: str, backend: str | None = None, device: str | int | None = None) -> Segmenter:
    """A :class:`~nucleuseg.segmenter.Segmenter` holding the shipped model ``name``.

    Parameters
    ----------
    name : str
        A shipped model (:func:`list_models`); a model file's path works too.
    backend : str, optional
        The backend to run it on; by default the first installed
        (:func:`nucleuseg.backends.default_backend`). The weights are the same in every backend.
    device : str or int, optional
        As for :class:`~nucleuseg.segmenter.Segmenter`.

    Raises
    ------
    CheckpointError
        If there is no such model, or its weights fail their SHA-256 check.
    BackendUnavailable
        If the backend is not installed.

    Examples
    --------
    >>> seg = pretrained("nuclei")  # doctest: +SKIP
    >>> labels = seg.predict(image)  # doctest: +SKIP
    >>> pretrained("no-such-model")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.CheckpointError: no-such-model: no such model file, nor a shipped model (shipped: ...)
    """
    from nucleuseg.backends import default_backend
    from nucleuseg.segmenter import Segmenter

    path = resolve_model(name)
    return Segmenter.load(path, backend=backend or default_backend(), device=device)


# -- rendering and shipping ------------------------------------------------------------------


_VALIDATION_TABLE = ("data", "split", "images", "command", "dsb_score", "ap50", "per_kind")
"""The validation entries of a card that :func:`card_markdown` sets out in its table; the others
(free-text findings such as ``synthetic_tissue``) follow as a list."""


def card_markdown(name_or_info: str | ModelInfo) -> str:
    """The model card rendered as Markdown, for people (``nucleuseg models NAME`` prints it).

    Examples
    --------
    >>> import tempfile
    >>> from nucleuseg.backends.base import init_weights
    >>> from nucleuseg.config import get_preset
    >>> folder = tempfile.mkdtemp()
    >>> preset = get_preset("seed").replace(network=get_preset("seed").network.replace(depth=2))
    >>> checkpoint.save_model(f"{folder}/m.safetensors", init_weights(preset.network, 0), preset, "torch")
    >>> card = {k: v for k, v in _example_card("tiny").items() if k not in ("sha256", "dtype")}
    >>> info = save_shipped(f"{folder}/m.safetensors", "tiny", card, directory=folder)
    >>> print(card_markdown(info).splitlines()[0])
    # tiny
    """
    info = name_or_info if isinstance(name_or_info, ModelInfo) else get_model(name_or_info)
    card, training, validation = info.card, info.card["training"], info.card["validation"]
    size = f", {info.path.stat().st_size / 1e6:.1f} MB" if info.path.is_file() else ""
    versions = ", ".join(f"{k} {v}" for k, v in training["versions"].items())
    findings = [
        f"- {key.replace('_', ' ').capitalize()}: {value}"
        for key, value in validation.items()
        if key not in _VALIDATION_TABLE
    ]
    lines = [
        f"# {info.name}",
        "",
        card["description"],
        "",
        f"- For: {', '.join(card['kinds'])} images, nuclei about "
        f"{card['native_diameter_px']:g} pixels across",
        f"- Not for: {'; '.join(card['not_for']) or '-'}",
        f"- Weights: {card['weights']} ({card['dtype']}{size}), licence {card['licence']}",
        f"- SHA-256: {card['sha256']}",
        "",
        "## Validation",
        "",
        f"{validation['images']} images: {validation['split']} of {validation['data']}",
        "",
        "| images | DSB score |",
        "|---|---|",
        f"| all | {validation['dsb_score']:.4f} |",
        *(f"| {kind} | {score:.4f} |" for kind, score in sorted(validation["per_kind"].items())),
        "",
        f"AP at IoU 0.5: {validation['ap50']:.4f}",
        *(["", *findings] if findings else []),
        "",
        f"    {validation['command']}",
        "",
        "## Training",
        "",
        f"- Data: {training['data']} (licence {training['data_licence']})",
        f"- Backend {training['backend']}, seed {training['seed']}, {training['epochs']} epochs "
        f"(best {training['best_epoch']}), {training['wall_minutes']:g} minutes",
        f"- Machine: {training['machine']}",
        f"- Versions: {versions}",
        "",
        f"    {training['command']}",
    ]
    if training.get("post_training"):
        lines += ["", f"After training: {training['post_training']}"]
    return "\n".join(lines) + "\n"


def save_shipped(
    model_file: str | os.PathLike,
    name: str,
    card: dict,
    directory: str | os.PathLike | None = None,
    dtype: str = "float16",
) -> ModelInfo:
    """Make a model file a shipped model: ``<name>.safetensors`` and ``<name>.json``.

    Writes the weights (as ``dtype``) and the card, with ``name``, ``weights``, ``sha256`` and
    ``dtype`` filled in; the card is validated before anything is written.

    Parameters
    ----------
    model_file : path
        A model file (:func:`nucleuseg.checkpoint.save_model`); its preset and history are kept.
    name : str
        The model's name: letters, digits, ``-`` and ``_``.
    card : dict
        Every other field of the card (see the module's description).
    directory : path, optional
        Where to write; by default the package's own folder (:data:`DIRECTORY`).
    dtype : {"float16", "float32"}
        How the weights are stored.

    Returns
    -------
    ModelInfo
        The model as :func:`get_model` now finds it.

    Raises
    ------
    CheckpointError
        If the model file is invalid, or the card incomplete (nothing is written then).
    InputError
        If ``name`` is not a valid model name or differs from the card's.

    Examples
    --------
    See :func:`card_markdown`.
    """
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise InputError(
            f"name {clip(repr(name))} is not a model name (letters, digits, - and _, "
            "starting with a letter or digit)"
        )
    if card.get("name", name) != name:
        raise InputError(f"name {name!r} differs from the card's name {card['name']!r}")
    folder = _folder(directory)
    weights = folder / f"{name}.safetensors"
    card = {**card, "name": name, "weights": weights.name, "dtype": dtype}
    validate_card({**card, "sha256": "0" * 64}, source=f"card of {name!r}")
    model = checkpoint.load_model(model_file)
    checkpoint.save_model(
        weights, model.weights, model.preset, model.backend, model.history, dtype=dtype
    )
    card["sha256"] = _sha256(weights)
    target = folder / f"{name}.json"
    with atomic_write(target, "w") as handle:
        handle.write(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return _read_card(target)


__all__ = [
    "DEFAULT_MODEL",
    "DIRECTORY",
    "ModelInfo",
    "card_markdown",
    "get_model",
    "is_shipped",
    "list_models",
    "pretrained",
    "resolve_model",
    "save_shipped",
    "validate_card",
]
