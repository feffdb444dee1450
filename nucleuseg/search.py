"""Hyperparameter search on Optuna: the network and training recipe that score best.

:func:`search` runs trials, each of which builds a :class:`~nucleuseg.config.Preset` from a
search space, trains it with :meth:`Segmenter.fit <nucleuseg.Segmenter.fit>` on any backend
under a per-trial budget (minutes or optimizer steps), reports the validation DSB score of every
epoch to Optuna (so that a median or Hyperband pruner stops unpromising trials early), then
chooses that trial's post-processing thresholds with :meth:`Segmenter.tune
<nucleuseg.Segmenter.tune>` and returns the tuned validation score. Optuna's TPE sampler chooses
the next trial from the scores so far.

A study lives in memory, or in a storage that many processes share: an SQLAlchemy URL
(``sqlite:///study.db``, ``postgresql://...``) or an Optuna journal file (a path ending in
``.log`` or ``.jsonl``). Any number of workers, on one machine or many, running the same search
against one storage share its trials, and running it again continues the study.

:func:`write_results` writes the best preset as JSON (which ``nucleuseg train --preset best.json``
and :func:`nucleuseg.config.get_preset` read), a CSV of every trial and two figures.

Optuna is an optional dependency (``pip install "nucleuseg[search]"``), imported only when a
search runs.

Examples
--------
>>> import nucleuseg as ns
>>> from nucleuseg.search import search
>>> fit_set, val_set = ns.data.make_synthetic(8, size=64, seed=0).split(0.25)
>>> space = {"training.learning_rate": ("log", 1e-4, 3e-3), "network.base_filters": [4, 8]}
>>> result = search(fit_set, val_set, "torch", trials=2, steps_per_trial=2, space=space,
...                 base="default", progress=False)  # doctest: +SKIP
>>> result.best.network.base_filters in (4, 8)  # doctest: +SKIP
True
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nucleuseg._atomic import atomic_write
from nucleuseg._extras import require
from nucleuseg.config import InferenceConfig, Preset, TrainingConfig, UNetConfig, get_preset
from nucleuseg.data.base import Dataset, in_memory
from nucleuseg.errors import ConfigError, DatasetError
from nucleuseg.history import EpochRecord

if TYPE_CHECKING:  # pragma: no cover
    import optuna

logger = logging.getLogger(__name__)

#: The pruners :func:`search` accepts by name.
PRUNERS = ("median", "hyperband", "none")

#: A storage path with one of these suffixes is an Optuna journal file.
JOURNAL_SUFFIXES = (".log", ".jsonl")

#: The kinds of range in a declarative space: ``("log", low, high)`` and so on.
RANGE_KINDS = ("log", "float", "int")

_SECTIONS: dict[str, type] = {
    "network": UNetConfig,
    "training": TrainingConfig,
    "inference": InferenceConfig,
}

#: The space searched by default: the network and the recipe, sized for a CPU (a trial of a few
#: minutes on two cores still takes useful steps). A list is a choice among its items, a tuple
#: ``(kind, low, high)`` a range; a dropout tuple gives the rate of each level from the top (the
#: last one repeats for deeper levels).
DEFAULT_SPACE: dict[str, Any] = {
    "network.depth": [3, 4, 5],
    "network.base_filters": [8, 16, 32],
    "network.dropout": [(0.0,), (0.0, 0.0, 0.1, 0.1, 0.2), (0.0, 0.1, 0.2, 0.3)],
    "network.activation": ["relu", "elu"],
    "network.normalization": ["none", "batch"],
    "network.upsampling": ["transpose", "nearest"],
    "training.learning_rate": ("log", 1e-4, 3e-3),
    "training.batch_size": [4, 8, 16],
    "training.crop": [64, 96, 128],
    "training.scale_range": [(1.0, 1.0), (0.8, 1.25), (0.7, 1.4), (0.5, 2.0)],
    "training.loss": ["bce", "bce_dice"],
    "training.schedule": ["constant", "cosine"],
}

Space = Callable[["optuna.Trial"], Preset] | Mapping[str, Any]


def _optuna():
    """The optuna module, or ExtraMissing naming the extra."""
    return require("optuna", "search", "hyperparameter search")


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study: what was tried, how it scored, how long it took."""

    number: int
    state: str
    params: dict[str, Any]
    epoch_scores: tuple[float, ...]
    value: float | None
    seconds: float | None
    backend: str | None
    base: bool = False  #: the base preset itself, queued by ``search(base_first=True)``


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search: the best preset, its score, the study and every trial.

    ``best`` and ``best_score`` are ``None`` while no trial of the study has completed (all
    pruned, failed or still running). ``best.inference`` holds the post-processing thresholds
    tuned on that trial's validation probabilities.
    """

    best: Preset | None
    best_score: float | None
    best_trial: int | None
    study: optuna.Study
    trials: tuple[TrialRecord, ...]

    @classmethod
    def from_study(cls, study: optuna.Study) -> SearchResult:
        """Read the result of a study (one loaded from a shared storage, for instance)."""
        optuna = _optuna()
        records = tuple(_record(t) for t in study.get_trials(deepcopy=False))
        complete = [
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if "preset" in t.user_attrs
        ]
        if not complete:
            return cls(None, None, None, study, records)
        best = max(complete, key=lambda t: (t.value, -t.number))
        return cls(
            Preset.from_json(best.user_attrs["preset"]), best.value, best.number, study, records
        )

    @property
    def base_trial(self) -> TrialRecord | None:
        """The trial of the base preset itself (see ``search(base_first=...)``), if any."""
        return next((t for t in self.trials if t.base), None)

    def table(self) -> str:
        """One line per trial, in order: state, tuned score, seconds, epoch scores.

        The base preset's own trial is marked ``base``; the last lines name the best trial and
        how far it is above the base trial.
        """
        lines = ["trial  state     score    seconds  epoch scores"]
        for t in self.trials:
            value = "   -  " if t.value is None else f"{t.value:.4f}"
            seconds = "    -" if t.seconds is None else f"{t.seconds:7.0f}"
            scores = " ".join(f"{s:.3f}" for s in t.epoch_scores)
            mark = "  (base)" if t.base else ""
            lines.append(f"{t.number:5d}  {t.state:<8}  {value}  {seconds}  {scores}{mark}")
        if self.best is not None:
            lines.append(f"best trial {self.best_trial}: score {self.best_score:.4f}")
            base = self.base_trial
            if base is not None and base.value is not None:
                lines.append(
                    f"base preset (trial {base.number}): score {base.value:.4f}, "
                    f"best - base = {self.best_score - base.value:+.4f}"
                )
        return "\n".join(lines)


def _record(trial) -> TrialRecord:
    seconds = trial.user_attrs.get("seconds")
    if seconds is None and trial.duration is not None:
        seconds = trial.duration.total_seconds()
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        epoch_scores=tuple(float(s) for s in trial.user_attrs.get("epoch_scores", ())),
        value=None if trial.value is None else float(trial.value),
        seconds=None if seconds is None else float(seconds),
        backend=trial.user_attrs.get("backend"),
        base="base" in trial.user_attrs,
    )


# -- search spaces -----------------------------------------------------------------------------


def _is_range(spec: Any) -> bool:
    return isinstance(spec, tuple) and len(spec) > 0 and isinstance(spec[0], str)


def check_space(space: Mapping[str, Any], base: Preset | str = "default") -> None:
    """Raise :class:`~nucleuseg.errors.ConfigError` unless ``space`` is a valid declarative space.

    Keys are ``"section.field"`` with ``section`` one of ``network``, ``training``,
    ``inference`` and ``field`` one of that config's fields. A value is a non-empty list of
    choices, or a tuple ``("log" | "float" | "int", low, high)``; each choice and each end of
    a range must be a valid value of the field (checked on ``base``).

    Examples
    --------
    >>> check_space({"network.base_filters": [8, 16], "training.learning_rate": ("log", 1e-4, 1e-2)})
    >>> check_space({"network.width": [8]})
    Traceback (most recent call last):
    ...
    nucleuseg.errors.ConfigError: space key 'network.width': UNetConfig has no field 'width'; ...
    """
    base = get_preset(base)
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("space must be a non-empty dict of 'section.field' -> choices or range")
    for key, spec in space.items():
        section, _, name = str(key).partition(".")
        if section not in _SECTIONS:
            raise ConfigError(
                f"space key {key!r}: must be 'section.field' with section one of {list(_SECTIONS)}"
            )
        config = getattr(base, section)
        names = [f.name for f in fields(_SECTIONS[section])]
        if name not in names:
            raise ConfigError(
                f"space key {key!r}: {_SECTIONS[section].__name__} has no field {name!r}; "
                f"its fields are {names}"
            )
        if _is_range(spec):
            if len(spec) != 3 or spec[0] not in RANGE_KINDS:
                raise ConfigError(
                    f"space key {key!r}: a range is (kind, low, high) with kind one of "
                    f"{RANGE_KINDS}, got {spec!r}"
                )
            kind, low, high = spec
            numbers = (int,) if kind == "int" else (int, float)
            if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
                raise ConfigError(f"space key {key!r}: {kind} range needs numbers, got {spec!r}")
            if not low < high or (kind == "log" and low <= 0):
                raise ConfigError(
                    f"space key {key!r}: a range needs low < high (and low > 0 for log), "
                    f"got {spec!r}"
                )
            values: Sequence[Any] = (low, high)
        elif isinstance(spec, list) and spec:
            values = spec
        else:
            raise ConfigError(
                f"space key {key!r}: give a non-empty list of choices or a tuple (kind, low, high) "
                f"with kind one of {RANGE_KINDS}, got {spec!r}"
            )
        for value in values:
            try:
                config.replace(**{name: value})
            except (ConfigError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"space key {key!r}: {value!r} is not a valid {name}: {exc}"
                ) from None


def _plain(spec: Sequence[Any]) -> bool:
    """Whether Optuna can take a list of choices as it is (no tuples or lists among them)."""
    return all(v is None or isinstance(v, bool | int | float | str) for v in spec)


def _label(choice: Any) -> Any:
    """A choice as Optuna stores it when the choices are not all plain: its JSON text."""
    return json.dumps(list(choice) if isinstance(choice, tuple | list) else choice)


def _suggest(trial, key: str, spec: Any) -> Any:
    """The value a trial draws for one entry of a declarative space."""
    if _is_range(spec):
        kind, low, high = spec
        if kind == "int":
            return trial.suggest_int(key, low, high)
        return trial.suggest_float(key, float(low), float(high), log=kind == "log")
    if _plain(spec):
        return trial.suggest_categorical(key, list(spec))
    # Optuna's choices are plain values: tuples (dropout rates, scale ranges) go by their JSON text.
    labels = {_label(v): v for v in spec}
    return labels[trial.suggest_categorical(key, list(labels))]


def read_space(path: str | os.PathLike, base: Preset | str = "default") -> dict[str, Any]:
    """Read a declarative search space from a JSON file (``nucleuseg search --space FILE``).

    The file is one object of ``"section.field"`` keys, as :data:`DEFAULT_SPACE`. A value is a
    list of choices (a choice that is itself a list, such as dropout rates or a scale range,
    becomes a tuple), or a range written as an object
    ``{"range": "log" | "float" | "int", "low": ..., "high": ...}``. The space is checked
    with :func:`check_space` against ``base``.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not JSON, or is not a valid space.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "space.json"
    >>> _ = path.write_text('{"network.base_filters": [8, 16], '
    ...                     '"training.learning_rate": {"range": "log", "low": 1e-4, "high": 1e-2}, '
    ...                     '"training.scale_range": [[1, 1], [0.7, 1.4]]}')
    >>> space = read_space(path)
    >>> space["training.learning_rate"], space["training.scale_range"]
    (('log', 0.0001, 0.01), [(1, 1), (0.7, 1.4)])
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--space {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--space {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--space {path}: must be a JSON object of 'section.field' entries")
    space: dict[str, Any] = {}
    for key, spec in data.items():
        if isinstance(spec, dict):
            if set(spec) != {"range", "low", "high"}:
                raise ConfigError(
                    f"--space {path}: {key!r}: a range is an object with exactly the keys "
                    f"range, low and high, got {sorted(spec)}"
                )
            space[key] = (spec["range"], spec["low"], spec["high"])
        elif isinstance(spec, list):
            space[key] = [tuple(v) if isinstance(v, list) else v for v in spec]
        else:
            raise ConfigError(
                f"--space {path}: {key!r}: give a list of choices or a range object, got {spec!r}"
            )
    try:
        check_space(space, base)
    except ConfigError as exc:
        raise ConfigError(f"--space {path}: {exc}") from None
    return space


def base_params(space: Mapping[str, Any], base: Preset | str = "default") -> dict[str, Any] | None:
    """The trial parameters under which ``space`` draws ``base`` itself, or ``None``.

    :func:`search` queues these as the first trial of a new study, so that every study scores its
    base preset under the same budget as the trials it is compared with. ``None`` when a value of
    ``base`` is not one of the space's choices or lies outside its range.

    Examples
    --------
    >>> base_params({"network.base_filters": [8, 16], "training.learning_rate": ("log", 1e-4, 1e-2)})
    {'network.base_filters': 16, 'training.learning_rate': 0.001}
    >>> base_params({"network.base_filters": [8, 32]}) is None
    True
    >>> base_params({"training.scale_range": [(1, 1), (0.7, 1.4)]})
    {'training.scale_range': '[0.7, 1.4]'}
    >>> fixed = get_preset("default")
    >>> fixed = fixed.replace(training=fixed.training.replace(scale_range=(1.0, 1.0)))
    >>> base_params({"training.scale_range": [(1, 1), (0.7, 1.4)]}, fixed)
    {'training.scale_range': '[1, 1]'}
    """
    base = get_preset(base)
    params: dict[str, Any] = {}
    for key, spec in space.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(base, section), name)
        if _is_range(spec):
            kind, low, high = spec
            if not low <= value <= high:
                return None
            params[key] = int(value) if kind == "int" else float(value)
        elif _plain(spec):
            if value not in spec:
                return None
            params[key] = value
        else:
            # Matched by value, stored as Optuna stores that choice: (1, 1) matches (1.0, 1.0).
            same = [v for v in spec if isinstance(v, tuple | list) and list(v) == list(value)]
            if not same:
                return None
            params[key] = _label(same[0])
    return params


def preset_from_space(trial, space: Mapping[str, Any], base: Preset | str = "default") -> Preset:
    """The preset a trial draws from a declarative ``space`` (see :func:`check_space`).

    Fields the space leaves out keep their value in ``base``.

    Examples
    --------
    >>> import optuna
    >>> trial = optuna.trial.FixedTrial({"network.base_filters": 8})
    >>> preset_from_space(trial, {"network.base_filters": [8, 16]}).network.base_filters
    8
    """
    base = get_preset(base)
    changes: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for key, spec in space.items():
        section, _, name = key.partition(".")
        changes[section][name] = _suggest(trial, key, spec)
    return base.replace(
        **{
            section: getattr(base, section).replace(**values)
            for section, values in changes.items()
            if values
        }
    )


# -- pruning -----------------------------------------------------------------------------------


def epoch_reporter(trial) -> Callable[[EpochRecord], None]:
    """An ``on_epoch`` callback for :meth:`Segmenter.fit <nucleuseg.Segmenter.fit>` that
    reports each epoch's validation score to an Optuna trial and prunes it when told.

    The scores so far are kept in the trial's user attribute ``"epoch_scores"``; when the
    study's pruner says so, :class:`optuna.TrialPruned` is raised (it propagates out of
    ``fit``, and Optuna records the trial as pruned).

    Examples
    --------
    >>> class Trial:  # stands for an optuna trial whose pruner always prunes
    ...     user_attrs = {}
    ...     def set_user_attr(self, key, value): self.user_attrs[key] = value
    ...     def report(self, value, step): pass
    ...     def should_prune(self): return True
    >>> report = epoch_reporter(Trial())
    >>> report(EpochRecord(1, loss=0.7, score=0.05, learning_rate=1e-3, seconds=1.0))
    Traceback (most recent call last):
    ...
    optuna.exceptions.TrialPruned: epoch 1: validation score 0.0500
    """
    optuna = _optuna()
    scores: list[float] = []

    def report(record: EpochRecord) -> None:
        score = 0.0 if record.score is None else float(record.score)
        scores.append(score)
        trial.set_user_attr("epoch_scores", list(scores))
        trial.report(score, record.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {record.epoch}: validation score {score:.4f}")

    return report


def make_pruner(pruner: str | Any, epochs: int | None = None) -> optuna.pruners.BasePruner:
    """An Optuna pruner by name: ``"median"``, ``"hyperband"`` or ``"none"`` (an Optuna pruner
    object is returned unchanged).

    ``median`` prunes a trial whose score at an epoch is below the median of earlier trials at
    that epoch, once 5 trials have finished and from the second epoch on. ``hyperband`` runs
    successive halving brackets over epochs (``epochs``, when known, is the most a trial runs).

    Examples
    --------
    >>> type(make_pruner("hyperband", epochs=8)).__name__
    'HyperbandPruner'
    >>> make_pruner("mean")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.ConfigError: pruner must be one of ('median', 'hyperband', 'none') or an optuna pruner, got 'mean'
    """
    optuna = _optuna()
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":
        # Epochs are reported as steps 1, 2, ...: a warm-up of 2 first prunes at epoch 2.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs or "auto")
    if pruner in ("none", None):
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner must be one of {PRUNERS} or an optuna pruner, got {pruner!r}")


# -- storage -----------------------------------------------------------------------------------


def open_storage(
    storage: str | os.PathLike | None, heartbeat_seconds: int = 60
) -> optuna.storages.BaseStorage | None:
    """The Optuna storage for ``storage``: ``None`` (in memory), an SQLAlchemy URL, or a journal
    file path ending in ``.log`` or ``.jsonl``.

    An RDB storage (any URL) gets Optuna's heartbeat: a running trial whose worker stops beating
    for ``2 * heartbeat_seconds`` (it was killed) is marked failed by the next worker that
    starts a trial. A journal file has no heartbeat: a killed worker's trial stays ``RUNNING``
    and never counts as a result. An Optuna storage object is returned unchanged.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> type(open_storage(folder / "study.log")).__name__
    'JournalStorage'
    >>> type(open_storage(f"sqlite:///{folder / 'study.db'}")).__name__
    'RDBStorage'
    >>> open_storage(None) is None  # in memory
    True
    """
    optuna = _optuna()
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    text = os.fspath(storage)
    if "://" in text:
        kwargs = {}
        if text.startswith("sqlite"):
            # Workers wait for each other's writes rather than failing with "database is locked".
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        from sqlalchemy.exc import IntegrityError, OperationalError

        # Workers started together race to create the tables of a new database: the loser
        # finds a table or the schema version already there, and tries again to find them.
        rng = np.random.default_rng()
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # the heartbeat is marked experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        text, heartbeat_interval=heartbeat_seconds, **kwargs
                    )
            except (IntegrityError, OperationalError) as exc:
                if attempt == 4:
                    raise ConfigError(f"storage {text!r}: cannot open it ({exc})") from None
                time.sleep(rng.uniform(0.2, 1.0))
            except Exception as exc:  # a bad URL, a missing driver: SQLAlchemy's errors vary
                raise ConfigError(f"storage {text!r}: cannot open it ({exc})") from None
    if Path(text).suffix.lower() in JOURNAL_SUFFIXES:
        from optuna.storages.journal import JournalFileBackend

        if not Path(text).parent.is_dir():
            raise ConfigError(f"storage {text}: folder {Path(text).parent} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(text))
    raise ConfigError(
        f"storage {text!r}: give an SQLAlchemy URL (sqlite:///study.db) or a journal file "
        f"ending in {' or '.join(JOURNAL_SUFFIXES)}"
    )


# -- the search --------------------------------------------------------------------------------


def search(
    train_set: Dataset,
    validation: Dataset,
    backend: str = "torch",
    trials: int = 20,
    minutes_per_trial: float | None = None,
    steps_per_trial: int | None = None,
    space: Space | None = None,
    base: Preset | str = "default",
    study_name: str = "nucleuseg",
    storage: str | os.PathLike | None = None,
    pruner: str | Any = "median",
    seed: int = 0,
    device: str | int | None = None,
    progress: bool = True,
    heartbeat_seconds: int = 60,
    base_first: bool = True,
) -> SearchResult:
    """Search the network and training recipe that score best on ``validation``.

    Each of ``trials`` trials draws a preset from ``space``, trains it on ``train_set`` with
    ``backend`` under the per-trial budget, reports the validation DSB score of every epoch
    (pruning unpromising trials), tunes the post-processing thresholds on its validation
    probabilities and scores with them. Every trial trains with the same ``seed``.

    Parameters
    ----------
    train_set, validation : Dataset
        Labelled images to train on and to score with.
    backend : str
        Any registered backend (``"torch"``, ``"keras"``, ``"flax"``, ...).
    trials : int
        Trials this call runs (other workers on the same storage add theirs).
    minutes_per_trial : float, optional
        Training time of a trial (its epochs are ``base.training.steps_per_epoch`` steps).
    steps_per_trial : int, optional
        Optimizer steps of a trial instead (epochs of ``min(steps_per_epoch, steps)`` steps).
        Give exactly one of ``minutes_per_trial`` and ``steps_per_trial``.
    space : callable or dict, optional
        ``trial -> Preset`` (an Optuna trial in, any preset out), or a declarative dict such as
        ``{"network.base_filters": [8, 16, 32], "training.learning_rate": ("log", 1e-4, 3e-3)}``
        (see :func:`check_space`) whose fields override ``base``. Default
        :data:`DEFAULT_SPACE`.
    base : Preset or str
        The preset whose fields a declarative space leaves alone (a name, a ``.json`` file or a
        :class:`Preset`).
    study_name : str
        The study's name in the storage; an existing study of that name is continued.
    storage : str or path, optional
        ``None`` (in memory), an SQLAlchemy URL (``sqlite:///study.db``) or an Optuna journal
        file (``study.log``, ``study.jsonl``); see :func:`open_storage`.
    pruner : {"median", "hyperband", "none"} or optuna pruner
        See :func:`make_pruner`.
    seed : int
        Seeds the sampler (with a storage, mixed with the process id so that workers draw
        different trials) and the training of every trial.
    device : str or int, optional
        As for :class:`~nucleuseg.Segmenter`.
    progress : bool
        Show the progress bars of each trial's training; the line of each finished trial goes to
        the ``nucleuseg.search`` logger (``INFO``).
    heartbeat_seconds : int
        Heartbeat of an RDB storage (see :func:`open_storage`).
    base_first : bool
        With a declarative space that can draw ``base`` (see :func:`base_params`), queue
        ``base`` as a trial of the study unless the study holds it already, so the search is
        judged against the base preset trained under the same budget.

    Returns
    -------
    SearchResult
        The best preset of the whole study (its post-processing tuned), its score and every
        trial.

    Raises
    ------
    ExtraMissing
        If optuna is not installed (``pip install "nucleuseg[search]"``).
    ConfigError
        If the budget, space, pruner or storage is not valid.
    DatasetError
        If ``validation`` is empty.
    """
    optuna = _optuna()
    from nucleuseg.segmenter import Segmenter

    if (minutes_per_trial is None) == (steps_per_trial is None):
        raise ConfigError("give exactly one of minutes_per_trial and steps_per_trial")
    if minutes_per_trial is not None and not minutes_per_trial > 0:
        raise ConfigError(f"minutes_per_trial must be positive, got {minutes_per_trial}")
    if steps_per_trial is not None and steps_per_trial < 1:
        raise ConfigError(f"steps_per_trial must be at least 1, got {steps_per_trial}")
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    base = get_preset(base)
    space = DEFAULT_SPACE if space is None else space
    if callable(space):
        draw = space
    else:
        check_space(space, base)

        def draw(trial) -> Preset:
            return preset_from_space(trial, space, base)

    if not len(validation):
        raise DatasetError(f"{validation.name}: no validation images to score the trials on")
    # Read once, used by every trial.
    train_set = in_memory(list(train_set), train_set.name)
    validation = in_memory(list(validation), validation.name)

    epochs = None
    if steps_per_trial is not None:
        epochs = math.ceil(steps_per_trial / min(base.training.steps_per_epoch, steps_per_trial))
    stored = open_storage(storage, heartbeat_seconds)
    sampler_seed = seed
    if stored is not None:
        sampler_seed = int(np.random.SeedSequence([seed, os.getpid()]).generate_state(1)[0])

    def objective(trial) -> float:
        preset = draw(trial)
        if not isinstance(preset, Preset):
            raise ConfigError(f"the search space returned {type(preset).__name__}, not a Preset")
        preset = preset.replace(name=f"{study_name}-{trial.number}")
        run_epochs = 10_000
        if steps_per_trial is not None:
            steps = min(preset.training.steps_per_epoch, steps_per_trial)
            preset = preset.replace(training=preset.training.replace(steps_per_epoch=steps))
            run_epochs = math.ceil(steps_per_trial / steps)
        trial.set_user_attr("backend", backend)
        began = time.perf_counter()
        try:
            segmenter = Segmenter(backend, preset=preset, seed=seed, device=device)
            segmenter.fit(
                train_set,
                validation=validation,
                epochs=run_epochs,
                max_minutes=minutes_per_trial,
                progress=progress,
                on_epoch=epoch_reporter(trial),
            )
            tuned = segmenter.tune(validation, progress=False)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - began)
        trial.set_user_attr("inference", tuned.best.to_dict())
        trial.set_user_attr("preset", segmenter.preset.to_json())
        return tuned.best_score

    def log_trial(study, trial) -> None:
        value = "" if trial.value is None else f": score {trial.value:.4f}"
        logger.info(f"trial {trial.number} {trial.state.name.lower()}{value}")

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial, ours
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=stored,
            sampler=optuna.samplers.TPESampler(seed=sampler_seed),
            pruner=make_pruner(pruner, epochs),
            direction="maximize",
            load_if_exists=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            reference = None if callable(space) or not base_first else base_params(space, base)
            if reference is not None:
                study.enqueue_trial(reference, user_attrs={"base": base.name}, skip_if_exists=True)
            study.optimize(objective, n_trials=trials, callbacks=[log_trial])
    finally:
        optuna.logging.set_verbosity(verbosity)
    return SearchResult.from_study(study)


# -- writing results ---------------------------------------------------------------------------


def write_results(result: SearchResult, folder: str | os.PathLike) -> list[Path]:
    """Write a search's results into ``folder`` (made if missing) and return the paths written.

    - ``best.json``: the best preset (:meth:`Preset.to_json`), for ``nucleuseg train --preset``
      and :func:`~nucleuseg.config.get_preset`; left out while no trial has completed;
    - ``trials.csv``: one row per trial: number, state, value (tuned DSB score), seconds,
      backend, ``yes`` for the base preset's own trial, the validation score of each epoch
      (space-separated) and one column per parameter;
    - ``history.png``: Optuna's optimisation history;
    - ``importances.png``: Optuna's parameter importances, once two trials have completed.

    Examples
    --------
    >>> import optuna, tempfile
    >>> from nucleuseg.config import get_preset
    >>> study = optuna.create_study(direction="maximize")
    >>> study.add_trial(optuna.trial.create_trial(
    ...     value=0.5, user_attrs={"preset": get_preset("default").to_json()}))
    >>> result = SearchResult.from_study(study)
    >>> result.best_score, result.best.name
    (0.5, 'default')
    >>> [path.name for path in write_results(result, tempfile.mkdtemp())]
    ['best.json', 'trials.csv', 'history.png']
    """
    optuna = _optuna()
    from nucleuseg import viz

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if result.best is not None:
        with atomic_write(out / "best.json", "w") as handle:
            handle.write(json.dumps(result.best.to_dict(), indent=2, sort_keys=True) + "\n")
        written.append(out / "best.json")
    params = sorted({name for t in result.trials for name in t.params})
    with atomic_write(out / "trials.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["number", "state", "value", "seconds", "backend", "base", "epoch_scores"]
        writer.writerow([*header, *params])
        for t in result.trials:
            writer.writerow(
                [
                    t.number,
                    t.state,
                    "" if t.value is None else f"{t.value:.6f}",
                    "" if t.seconds is None else f"{t.seconds:.1f}",
                    t.backend or "",
                    "yes" if t.base else "",
                    " ".join(f"{s:.6f}" for s in t.epoch_scores),
                    *(t.params.get(name, "") for name in params),
                ]
            )
    written.append(out / "trials.csv")
    complete = sum(t.state == "COMPLETE" for t in result.trials)
    figures = [("history.png", optuna.visualization.matplotlib.plot_optimization_history, 1)]
    figures.append(("importances.png", optuna.visualization.matplotlib.plot_param_importances, 2))
    import matplotlib.pyplot as plt

    for name, plot, needed in figures:
        if complete < needed:
            logger.info(f"{name} left out: {complete} completed trials, it needs {needed}")
            continue
        try:
            with warnings.catch_warnings():
                # Experimental API; few trials make importances warn that they are all equal.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                axes = plot(result.study)
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            logger.info(f"{name} left out: {exc}")
            continue
        if name == "history.png":
            axes.set_ylabel("validation DSB score (tuned)")
        figure = axes.figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        written.append(viz.save_figure(figure, out / name))
        plt.close(figure)
    return written
