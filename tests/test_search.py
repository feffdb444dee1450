"""Hyperparameter search on Optuna: tiny trials on synthetic nuclei, shared storages, pruning."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_preset
from nucleuseg import cli
from nucleuseg.config import Preset, get_preset
from nucleuseg.data import make_synthetic
from nucleuseg.data.images import write_image
from nucleuseg.errors import ConfigError, DatasetError
from nucleuseg.history import EpochRecord

optuna = pytest.importorskip(
    "optuna", reason='the search needs optuna: pip install "nucleuseg[search]"'
)
pytest.importorskip("torch", reason="the trials train on the torch backend")

from nucleuseg.search import (  # noqa: E402
    DEFAULT_SPACE,
    SearchResult,
    base_params,
    check_space,
    epoch_reporter,
    make_pruner,
    open_storage,
    preset_from_space,
    search,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"network.base_filters": [2, 4], "training.learning_rate": ("log", 1e-4, 3e-3)}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(6, size=48, seed=3).split(0.34, seed=0)


@pytest.fixture
def tiny(tiny_preset):
    return tiny_preset


def _search(data, tiny, **options):
    fit, val = data
    options = {"trials": 2, "steps_per_trial": 2, "space": SPACE, "base": tiny, **options}
    return search(fit, val, "torch", progress=False, **options)


def test_import_nucleuseg_does_not_import_optuna():
    code = (
        "import sys, nucleuseg, nucleuseg.search, nucleuseg.cli; assert 'optuna' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_search_finds_a_preset_and_writes_its_results(data, tiny, tmp_path):
    result = _search(data, tiny)
    assert isinstance(result, SearchResult) and len(result.trials) == 2
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.best_score == max(t.value for t in result.trials)
    best = result.study.trials[result.best_trial]
    # The best preset is what the space drew, on the base, with its thresholds tuned.
    assert result.best.network.base_filters == best.params["network.base_filters"]
    assert result.best.training.learning_rate == best.params["training.learning_rate"]
    assert result.best.network.depth == tiny.network.depth
    assert result.best.training.steps_per_epoch == 2
    assert result.best.inference.to_dict() == best.user_attrs["inference"]
    for t in result.trials:
        assert len(t.epoch_scores) == 1 and t.backend == "torch" and t.seconds > 0
        assert 1e-4 <= t.params["training.learning_rate"] <= 3e-3

    written = write_results(result, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["best.json", "history.png", "importances.png", "trials.csv"]
    assert get_preset(str(tmp_path / "out" / "best.json")) == result.best
    rows = list(csv.DictReader(open(tmp_path / "out" / "trials.csv", newline="")))
    assert [int(r["number"]) for r in rows] == [0, 1]
    assert {r["state"] for r in rows} == {"COMPLETE"} and {r["backend"] for r in rows} == {"torch"}
    assert float(rows[0]["value"]) == pytest.approx(result.trials[0].value, abs=1e-6)
    assert rows[1]["network.base_filters"] in ("2", "4")
    assert len(rows[0]["epoch_scores"].split()) == 1
    assert (tmp_path / "out" / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_one_completed_trial_leaves_out_the_importances(data, tiny, tmp_path):
    result = _search(data, tiny, trials=1)
    names = sorted(p.name for p in write_results(result, tmp_path))
    assert names == ["best.json", "history.png", "trials.csv"]


def test_steps_per_trial_makes_epochs_of_the_base_steps(data, tiny):
    result = _search(data, tiny, trials=1, steps_per_trial=5)
    assert len(result.trials[0].epoch_scores) == 3  # 2 + 2 + 1 steps, one score per epoch


def test_minutes_per_trial_is_a_time_budget(data, tiny):
    patient = tiny.replace(training=tiny.training.replace(patience=10_000))
    result = _search(data, patient, trials=1, steps_per_trial=None, minutes_per_trial=0.001)
    trial = result.trials[0]
    # Without the budget (0.06 s) the trial would run 10 000 epochs.
    assert trial.state == "COMPLETE" and 1 <= len(trial.epoch_scores) < 100


def test_an_empty_validation_set_is_refused(data, tiny):
    fit, _ = data
    with pytest.raises(DatasetError, match="no validation images"):
        search(fit, make_synthetic(0, size=48), "torch", trials=1, steps_per_trial=1)


def test_a_function_space_is_honoured(data, tiny):
    drawn = []

    def space(trial):
        filters = trial.suggest_categorical("filters", [3, 5])
        drawn.append(filters)
        return tiny.replace(network=tiny.network.replace(base_filters=filters, depth=2))

    result = _search(data, tiny, space=space)
    assert [t.params["filters"] for t in result.trials] == drawn
    assert result.best.network.base_filters in (3, 5) and result.best.network.depth == 2


def test_a_space_that_returns_no_preset_is_refused(data, tiny):
    with pytest.raises(ConfigError, match="returned dict, not a Preset"):
        _search(data, tiny, space=lambda trial: {})


def test_the_base_preset_is_queued_once_as_the_study_reference(data, tiny, tmp_path):
    space = {"network.base_filters": [2, 4], "training.learning_rate": ("log", 1e-4, 3e-3)}
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _search(data, tiny, trials=2, space=space, storage=storage, study_name="ref")
    assert [t.base for t in first.trials] == [True, False]
    reference = first.trials[0]
    assert reference.params == {
        "network.base_filters": tiny.network.base_filters,
        "training.learning_rate": tiny.training.learning_rate,
    }
    assert first.base_trial == reference
    assert f"base preset (trial 0): score {reference.value:.4f}" in first.table()
    # A second worker (or a rerun) on the same study does not score the base again.
    again = _search(data, tiny, trials=1, space=space, storage=storage, study_name="ref")
    assert [t.base for t in again.trials] == [True, False, False]
    # Asked not to, or when the space cannot draw the base, no trial is the base.
    assert not any(t.base for t in _search(data, tiny, space=space, base_first=False).trials)
    outside = {"network.base_filters": [2, 8]}
    assert base_params(outside, tiny) is None
    assert not any(t.base for t in _search(data, tiny, space=outside).trials)
    written = write_results(first, tmp_path / "out")
    rows = list(csv.DictReader(open(written[1], newline="")))
    assert [r["base"] for r in rows] == ["yes", ""]


def test_base_params_names_the_choice_of_each_key():
    params = base_params(DEFAULT_SPACE, "default")
    default = get_preset("default")
    trial = optuna.trial.FixedTrial(params)
    assert preset_from_space(trial, DEFAULT_SPACE, "default") == default
    assert base_params({"training.crop": ("int", 32, 96)}, "default") is None  # crop 128


def test_a_dict_space_draws_every_key_and_tuple_choices():
    trial = optuna.trial.FixedTrial(
        {"network.depth": 3, "training.scale_range": "[0.8, 1.25]", "training.crop": 64}
    )
    space = {
        "network.depth": [3, 4],
        "training.scale_range": [(1.0, 1.0), (0.8, 1.25)],
        "training.crop": ("int", 32, 96),
    }
    preset = preset_from_space(trial, space, "default")
    assert preset.network.depth == 3 and preset.training.scale_range == (0.8, 1.25)
    assert preset.training.crop == 64
    assert preset.training.batch_size == get_preset("default").training.batch_size


def test_the_default_space_is_valid_and_draws_a_preset():
    check_space(DEFAULT_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        preset = preset_from_space(study.ask(), DEFAULT_SPACE)
        assert preset.training.crop % preset.network.multiple == 0
        assert preset.network.depth in (3, 4, 5)


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "non-empty dict"),
        ({"net.depth": [3]}, "section one of"),
        ({"network.width": [8]}, "UNetConfig has no field 'width'"),
        ({"network.depth": []}, "non-empty list of choices"),
        ({"network.depth": 3}, "non-empty list of choices"),
        ({"network.depth": [3, 9]}, "9 is not a valid depth"),
        ({"training.learning_rate": ("exp", 1e-4, 1e-2)}, "kind one of"),
        ({"training.learning_rate": ("log", 0, 1e-2)}, "low > 0 for log"),
        ({"training.learning_rate": ("log", 1e-2, 1e-4)}, "low < high"),
        ({"training.crop": ("int", 32.5, 64)}, "int range needs numbers"),
        ({"training.loss": ["bce", "focal"]}, "'focal' is not a valid loss"),
    ],
)
def test_a_bad_dict_space_is_refused_by_name(space, message):
    with pytest.raises(ConfigError, match=message):
        check_space(space)


class _Trial:
    """What epoch_reporter uses of an optuna trial; its pruner prunes below ``cutoff``."""

    def __init__(self, cutoff: float):
        self.cutoff, self.reported, self.user_attrs = cutoff, [], {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.reported[-1][1] < self.cutoff


def test_the_epoch_reporter_reports_and_prunes_a_poor_score():
    trial = _Trial(cutoff=0.3)
    report = epoch_reporter(trial)
    report(EpochRecord(1, 0.9, 0.5, 1e-3, 1.0))
    report(EpochRecord(2, 0.8, 0.6, 1e-3, 1.0))
    with pytest.raises(optuna.TrialPruned, match="epoch 3: validation score 0.1000"):
        report(EpochRecord(3, 0.7, 0.1, 1e-3, 1.0))
    assert trial.reported == [(1, 0.5), (2, 0.6), (3, 0.1)]
    assert trial.user_attrs["epoch_scores"] == [0.5, 0.6, 0.1]


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_pruned_trials_stop_after_their_first_epoch(data, tiny, tmp_path):
    result = _search(data, tiny, steps_per_trial=6, pruner=_AlwaysPrune())
    assert [t.state for t in result.trials] == ["PRUNED", "PRUNED"]
    assert all(len(t.epoch_scores) == 1 for t in result.trials)  # of 3 epochs
    assert result.best is None and result.best_score is None
    names = sorted(p.name for p in write_results(result, tmp_path))
    assert names == ["trials.csv"]


def test_the_median_pruner_waits_for_five_trials_and_the_second_epoch():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median"))
    for value in (0.5, 0.6, 0.7, 0.8, 0.9):
        trial = study.ask()
        for epoch in (1, 2):
            trial.report(value, epoch)
        study.tell(trial, value)
    poor = study.ask()
    poor.report(0.1, 1)
    assert not poor.should_prune()  # the first epoch is never judged
    poor.report(0.1, 2)
    assert poor.should_prune()
    fair = study.ask()
    fair.report(0.75, 1)
    fair.report(0.75, 2)
    assert not fair.should_prune()  # above the median of 0.7


@pytest.mark.parametrize("name", ["median", "hyperband", "none"])
def test_pruners_by_name(name):
    assert isinstance(make_pruner(name, epochs=4), optuna.pruners.BasePruner)


def test_bad_arguments_are_refused(data, tiny, tmp_path):
    with pytest.raises(ConfigError, match="pruner must be one of"):
        make_pruner("mean")
    with pytest.raises(ConfigError, match="exactly one of minutes_per_trial and steps_per_trial"):
        _search(data, tiny, minutes_per_trial=1.0)
    with pytest.raises(ConfigError, match="SQLAlchemy URL"):
        open_storage(tmp_path / "study.db")
    with pytest.raises(ConfigError, match="does not exist"):
        open_storage(tmp_path / "nowhere" / "study.log")
    with pytest.raises(ConfigError, match="cannot open it"):
        open_storage("nosuchdriver://x")


def test_a_rerun_continues_a_stored_study(data, tiny, tmp_path):
    for storage in (f"sqlite:///{tmp_path / 'study.db'}", str(tmp_path / "study.log")):
        first = _search(data, tiny, trials=1, storage=storage, study_name="again")
        again = _search(data, tiny, trials=2, storage=storage, study_name="again")
        assert len(first.trials) == 1
        assert [t.number for t in again.trials] == [0, 1, 2]
        assert again.trials[0] == first.trials[0]


WORKER = """
import sys
import nucleuseg as ns
from nucleuseg.search import search
storage, trials, minutes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
base = ns.config.get_preset(sys.argv[4])
fit, val = ns.data.make_synthetic(6, size=48, seed=3).split(0.34, seed=0)
space = {"network.base_filters": [2, 4], "training.learning_rate": ("log", 1e-4, 3e-3)}
budget = {"minutes_per_trial": minutes} if minutes else {"steps_per_trial": 2}
search(fit, val, "torch", trials=trials, space=space, base=base, storage=storage,
       study_name="shared", progress=False, heartbeat_seconds=1, **budget)
"""


def _worker(tmp_path, storage, trials, minutes=0.0):
    preset = tmp_path / "tiny.json"
    if not preset.exists():
        preset.write_text(_tiny_json())
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, storage, str(trials), str(minutes), str(preset)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _tiny_json() -> str:
    return make_tiny_preset().to_json()


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study(tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "j.log")
    workers = [_worker(tmp_path, storage, 2), _worker(tmp_path, storage, 3)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    assert len(study.trials) == 5
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def test_a_killed_worker_leaves_a_failed_trial_and_the_study_goes_on(data, tiny, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = _worker(tmp_path, storage, 1, minutes=5.0)  # a trial far longer than the test
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name="shared", storage=storage).trials
            except Exception:  # the study (or the database) is not created yet
                trials = []
            if any(t.state.name == "RUNNING" for t in trials):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the worker never started a trial")
        time.sleep(1.0)  # mid-trial
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    time.sleep(4.0)  # past the grace period of two heartbeats (stored to the second)
    result = _search(
        data, tiny, trials=1, storage=storage, study_name="shared", heartbeat_seconds=1
    )
    assert [t.state for t in result.trials] == ["FAIL", "COMPLETE"]
    assert result.best_trial == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("study.db", "tiny.json")]


def _write_folder(root: Path, dataset) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for sample in dataset:
        write_image(root / "images" / f"{sample.image_id}.png", sample.image)
        write_image(root / "labels" / f"{sample.image_id}.png", sample.labels.astype(np.uint16))
    return root


def test_the_command_line_searches_and_train_takes_the_best_preset(tmp_path, capsys):
    folder = _write_folder(tmp_path / "data", make_synthetic(6, size=48, seed=3))
    (tmp_path / "tiny.json").write_text(_tiny_json())
    argv = ["search", "--data", str(folder), "--trials", "2", "--steps-per-trial", "2"]
    argv += ["--preset", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "out")]
    argv += ["--storage", f"sqlite:///{tmp_path / 'study.db'}", "--val-fraction", "0.34"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "searching 2 trials of 2 steps (torch, study nucleuseg)" in out
    assert f"wrote {tmp_path / 'out' / 'best.json'}" in out
    best = Preset.from_json((tmp_path / "out" / "best.json").read_text())
    assert best.name.startswith("nucleuseg-")

    model = tmp_path / "model.safetensors"
    argv = ["train", "--data", str(folder), "--preset", str(tmp_path / "out" / "best.json")]
    assert cli.main([*argv, "--epochs", "1", "--out", str(model), "--val-fraction", "0.34"]) == 0
    from nucleuseg import Segmenter

    assert Segmenter.load(model).preset == best


def test_the_command_line_refuses_a_bad_storage_before_reading_data(tmp_path, capsys):
    argv = ["search", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--storage", str(tmp_path / "study.txt")]) == 2
    assert "SQLAlchemy URL" in capsys.readouterr().err


def test_a_preset_file_is_validated_like_any_preset(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(_tiny_json())
    assert get_preset(path) == get_preset(str(path)) == Preset.from_json(_tiny_json())
    for text, message in [
        ("{", "not a valid preset: preset JSON is malformed"),
        ("[]", "must be an object"),
        (json.dumps({"name": "x"}), "incomplete preset"),
        (_tiny_json().replace('"depth": 3', '"depth": 1'), "depth must be between 2 and 7"),
        (json.dumps({"name": "x", "network": [], "training": {}, "inference": {}}), "not a valid"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as err:
            get_preset(str(path))
        assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="no such preset file"):
        get_preset(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("name", ["keras", "flax"])
def test_other_backends_search_too(data, tiny, name):
    from conftest import backend_or_skip

    backend_or_skip(name)
    fit, val = data
    result = search(
        fit, val, name, trials=1, steps_per_trial=1, space=SPACE, base=tiny, progress=False
    )
    assert result.trials[0].state == "COMPLETE" and result.trials[0].backend == name


def test_the_command_line_takes_a_space_file(tmp_path, capsys):
    folder = _write_folder(tmp_path / "data", make_synthetic(6, size=48, seed=3))
    (tmp_path / "tiny.json").write_text(_tiny_json())
    space = {
        "network.activation": ["relu"],
        "training.learning_rate": {"range": "log", "low": 1e-4, "high": 1e-3},
    }
    (tmp_path / "space.json").write_text(json.dumps(space))
    argv = ["search", "--data", str(folder), "--trials", "1", "--steps-per-trial", "2"]
    argv += ["--preset", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "out")]
    argv += ["--space", str(tmp_path / "space.json"), "--val-fraction", "0.34"]
    assert cli.main(argv) == 0
    best = Preset.from_json((tmp_path / "out" / "best.json").read_text())
    assert best.network.activation == "relu"
    assert 1e-4 <= best.training.learning_rate <= 1e-3
    with open(tmp_path / "out" / "trials.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert "training.learning_rate" in " ".join(header)
    assert "network.depth" not in " ".join(header)  # only the file's keys are searched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "JSON object"),
        ("{", "not valid JSON"),
        ('{"network.depth": {"range": "int", "low": 2}}', "exactly the keys"),
        ('{"network.depth": 3}', "list of choices or a range object"),
        ('{"network.width": [8]}', "no field 'width'"),
    ],
)
def test_a_bad_space_file_is_refused_before_reading_data(tmp_path, capsys, text, message):
    (tmp_path / "space.json").write_text(text)
    argv = ["search", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--space", str(tmp_path / "space.json")]) == 2
    assert message in capsys.readouterr().err
