"""Pretrained models by name: the registry, model cards, float16 weights, the command line and
fine-tuning from a model.

The registry is tested on tiny models written into a temporary folder that stands in for the
package's own (``nucleuseg.models.DIRECTORY`` is patched). The last test runs over the models that
really ship: each loads in every installed backend and gives the same labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import backend_or_skip, installed_backends, make_tiny_preset
from nucleuseg import checkpoint, cli, models
from nucleuseg.backends.base import init_weights
from nucleuseg.data import synthetic_sample
from nucleuseg.data.images import write_image
from nucleuseg.errors import CheckpointError, InputError

SHIPPED = models.list_models()


def card(name: str = "tiny") -> dict:
    """A complete card, less what save_shipped fills in."""
    return {
        "name": name,
        "description": "a tiny test model",
        "kinds": ["fluorescence", "histology"],
        "native_diameter_px": 12.5,
        "not_for": ["real images"],
        "licence": "CC0-1.0",
        "training": {
            "data": "synthetic nuclei",
            "data_licence": "CC0-1.0",
            "command": "nucleuseg train --data synthetic --out tiny.safetensors",
            "seed": 3,
            "backend": "torch",
            "wall_minutes": 0.5,
            "epochs": 2,
            "best_epoch": 1,
            "machine": "a test",
            "versions": {"python": "3.11", "numpy": "2.1", "torch": "2.13.0"},
        },
        "validation": {
            "data": "synthetic nuclei",
            "split": "val of --val-fraction 0.15 --seed 0",
            "images": 4,
            "command": "nucleuseg evaluate tiny --data synthetic",
            "dsb_score": 0.6123,
            "ap50": 0.8,
            "per_kind": {"fluorescence": 0.7, "histology": 0.45},
        },
    }


def model_file(path: Path, seed: int = 5, preset=None) -> Path:
    preset = preset or make_tiny_preset()
    checkpoint.save_model(path, init_weights(preset.network, seed), preset, "torch")
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A folder holding the shipped model "tiny" (initial weights of seed 5), patched in as the
    package's models folder; returns its ModelInfo."""
    folder = tmp_path / "models"
    folder.mkdir()
    source = model_file(tmp_path / "source.safetensors")
    info = models.save_shipped(source, "tiny", card(), directory=folder)
    monkeypatch.setattr(models, "DIRECTORY", folder)
    return info


def write_folders(root: Path, n: int = 4, size: int = 64) -> Path:
    """Synthetic samples as ``root/images/*.png`` and ``root/labels/*.png``."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(n):
        sample = synthetic_sample(seed=k, size=size, kind="fluorescence")
        write_image(root / "images" / f"s{k}.png", sample.image)
        write_image(root / "labels" / f"s{k}.png", sample.labels.astype(np.uint16))
    return root


# -- float16 model files ---------------------------------------------------------------------


def _stored_dtypes(path: Path) -> set[str]:
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}


def test_float16_file_is_half_the_size_and_reads_back_as_float32(tmp_path):
    preset = make_tiny_preset()
    weights = init_weights(preset.network, 1)
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    checkpoint.save_model(full, weights, preset, "torch")
    checkpoint.save_model(half, weights, preset, "torch", dtype="float16")
    assert _stored_dtypes(full) == {"F32"} and _stored_dtypes(half) == {"F16"}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = checkpoint.load_model(half)
    assert {w.dtype for w in loaded.weights.values()} == {np.dtype(np.float32)}
    for name, w in weights.items():
        np.testing.assert_allclose(loaded.weights[name], w, rtol=1e-3, atol=1e-4)
    assert loaded.preset == preset


def test_float16_probabilities_are_within_1e3_of_float32(tmp_path):
    from nucleuseg import Segmenter

    backend_or_skip("torch")
    preset = make_tiny_preset()
    seg = Segmenter("torch", preset=preset, seed=2)
    seg.fit(_in_memory_synthetic(4), epochs=1, progress=False)  # weights past their initial ones
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    checkpoint.save_model(full, seg.get_weights(), seg.preset, "torch")
    checkpoint.save_model(half, seg.get_weights(), seg.preset, "torch", dtype="float16")
    image = synthetic_sample(seed=9, size=96).image
    p32 = Segmenter.load(full).predict_proba(image)
    p16 = Segmenter.load(half).predict_proba(image)
    assert p32.shape == p16.shape
    assert float(np.abs(p32 - p16).max()) <= 1e-3


def _in_memory_synthetic(n: int):
    from nucleuseg.data import make_synthetic

    return make_synthetic(n, size=64, seed=0)


def test_float16_refuses_weights_out_of_its_range(tmp_path):
    preset = make_tiny_preset()
    weights = init_weights(preset.network, 0)
    name = next(iter(weights))
    weights[name] = weights[name] + 1e5
    with pytest.raises(CheckpointError, match=r"exceed the float16 range"):
        checkpoint.save_model(tmp_path / "m.safetensors", weights, preset, "t", dtype="float16")
    with pytest.raises(CheckpointError, match=r"dtype must be one of"):
        checkpoint.save_model(tmp_path / "m.safetensors", weights, preset, "t", dtype="int8")
    assert not list(tmp_path.iterdir())


# -- the registry ----------------------------------------------------------------------------


def test_the_registry_finds_a_shipped_model(shipped):
    folder = models.DIRECTORY
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.json", "tiny.safetensors"]
    assert shipped.path == folder / "tiny.safetensors"
    assert _stored_dtypes(shipped.path) == {"F16"}
    written = json.loads((folder / "tiny.json").read_text())
    assert written["weights"] == "tiny.safetensors" and written["dtype"] == "float16"
    assert len(written["sha256"]) == 64
    infos = models.list_models()
    assert [info.name for info in infos] == ["tiny"]
    info = infos[0]
    assert info == shipped == models.get_model("tiny")
    assert info.kinds == ("fluorescence", "histology")
    assert info.description == "a tiny test model"
    assert info.scores == {
        "dsb_score": 0.6123,
        "ap50": 0.8,
        "fluorescence": 0.7,
        "histology": 0.45,
    }
    assert info.dsb_score == 0.6123
    assert info.card["training"]["seed"] == 3
    assert models.resolve_model("tiny") == info.path
    assert models.is_shipped("tiny") and not models.is_shipped("other")
    loaded = checkpoint.load_model(models.resolve_model("tiny"))
    expected = init_weights(make_tiny_preset().network, 5)
    for name, w in expected.items():
        np.testing.assert_allclose(loaded.weights[name], w, rtol=1e-3, atol=1e-4)


def test_an_existing_path_wins_over_a_shipped_name(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_file(tmp_path / "tiny", seed=8)
    assert models.resolve_model("tiny") == Path("tiny")
    assert not models.is_shipped("tiny")
    other = model_file(tmp_path / "other.safetensors")
    assert models.resolve_model(other) == other
    assert models.resolve_model(str(other)) == other


def test_unknown_names_list_the_shipped_models(shipped):
    with pytest.raises(CheckpointError, match=r"^nope: no such model file, nor a shipped model "):
        models.resolve_model("nope")
    with pytest.raises(CheckpointError, match=r"\(shipped: tiny\)"):
        models.resolve_model("nope.safetensors")
    with pytest.raises(InputError, match=r"no shipped model named 'nope'; shipped models: tiny"):
        models.get_model("nope")
    with pytest.raises(InputError, match=r"no shipped model named '\.\./tiny'"):
        models.get_model("../tiny")


def test_an_empty_models_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "DIRECTORY", tmp_path)
    assert models.list_models() == []
    with pytest.raises(CheckpointError, match=r"shipped: none"):
        models.resolve_model("dsb2018")


def test_a_weights_file_that_differs_from_its_card_is_refused(shipped):
    model_file(shipped.path, seed=6)  # another model put in its place
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: SHA-256 [0-9a-f]{64} differs"):
        models.resolve_model("tiny")
    with pytest.raises(CheckpointError, match=r"SHA-256"):
        models.pretrained("tiny", backend="torch")
    shipped.path.unlink()
    with pytest.raises(CheckpointError, match=r"weights of shipped model 'tiny' missing"):
        models.resolve_model("tiny")


def test_the_card_is_rendered_for_people(shipped):
    text = models.card_markdown("tiny")
    assert text.startswith("# tiny\n\na tiny test model\n")
    for expected in (
        "fluorescence, histology images, nuclei about 12.5 pixels across",
        "Not for: real images",
        "tiny.safetensors (float16",
        "| all | 0.6123 |",
        "| histology | 0.4500 |",
        "AP at IoU 0.5: 0.8000",
        "nucleuseg evaluate tiny --data synthetic",
        "Backend torch, seed 3, 2 epochs (best 1), 0.5 minutes",
        "python 3.11, numpy 2.1, torch 2.13.0",
        "nucleuseg train --data synthetic --out tiny.safetensors",
        shipped.card["sha256"],
    ):
        assert expected in text
    assert "After training" not in text  # an optional field, absent from this card
    assert models.card_markdown(shipped) == text


def _rendered_with(tmp_path, section: str, key: str, value: str) -> str:
    """The Markdown of a shipped card with ``card[section][key] = value`` added."""
    extra = card()
    extra[section][key] = value
    source = model_file(tmp_path / "source.safetensors")
    return models.card_markdown(models.save_shipped(source, "tiny", extra, directory=tmp_path))


def test_the_card_shows_what_was_set_after_training(tmp_path):
    text = _rendered_with(tmp_path, "training", "post_training", "thresholds tuned on 3 images")
    assert text.endswith("After training: thresholds tuned on 3 images\n")


def test_the_card_lists_the_validation_findings_beside_the_table(tmp_path):
    text = _rendered_with(tmp_path, "validation", "synthetic_tissue", "0.5 on 3 tissue images")
    assert "\n\n- Synthetic tissue: 0.5 on 3 tissue images\n" in text
    assert "Per kind" not in text and "Dsb score" not in text  # the table's entries stay in it


# -- card validation -------------------------------------------------------------------------


def _complete() -> dict:
    return {**card(), "weights": "tiny.safetensors", "sha256": "a" * 64, "dtype": "float16"}


def _without(*path):
    def change(c):
        section = c
        for key in path[:-1]:
            section = section[key]
        del section[path[-1]]

    return change


def _set(value, *path):
    def change(c):
        section = c
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without("licence"), r"licence is missing \(a non-empty string\)"),
        (_without("training"), r"training is missing \(an object\)"),
        (_without("validation", "per_kind"), r"validation\.per_kind is missing"),
        (_set([], "kinds"), r"kinds is \[\], expected a non-empty list of image kinds"),
        (_set("fluorescence", "kinds"), r"kinds is \"fluorescence\", expected a non-empty list"),
        (_set(0, "native_diameter_px"), r"native_diameter_px is 0, expected a positive number"),
        (_set("many", "training", "seed"), r"training\.seed is \"many\", expected an integer"),
        (_set(True, "training", "epochs"), r"training\.epochs is true, expected an integer"),
        (_set(1.5, "validation", "dsb_score"), r"validation\.dsb_score is 1\.5, expected a score"),
        (_set({"x": 2}, "validation", "per_kind"), r"validation\.per_kind is \{\"x\": 2\}"),
        (
            _set({"python": "3.11", "numpy": "2"}, "training", "versions"),
            r"training\.versions is .*python, numpy and the framework's",
        ),
        (_set("XYZ", "sha256"), r"sha256 is \"XYZ\", expected 64 lowercase hex digits"),
        (_set("bfloat16", "dtype"), r"dtype is \"bfloat16\", expected one of float32, float16"),
        (_set("../x.safetensors", "weights"), r"weights is .*expected a \.safetensors file name"),
        (_set("no name!", "name"), r"name is \"no name!\", expected a model name"),
        (_set([], "training"), r"training must be a JSON object, got list"),
        (_set("", "description"), r"description is \"\", expected a non-empty string"),
    ],
)
def test_card_validation_names_the_field(change, message):
    models.validate_card(_complete())
    broken = _complete()
    change(broken)
    with pytest.raises(CheckpointError, match=r"^card\.json: " + message):
        models.validate_card(broken, source="card.json")


def test_a_card_is_checked_where_it_is_read(shipped):
    path = models.DIRECTORY / "tiny.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "name": "other"}))
    with pytest.raises(CheckpointError, match=r"tiny\.json: the card names model 'other'"):
        models.list_models()
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"tiny\.json: model card is not valid JSON"):
        models.get_model("tiny")
    del data["validation"]["ap50"]
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"tiny\.json: validation\.ap50 is missing"):
        models.get_model("tiny")


def test_save_shipped_writes_nothing_for_an_incomplete_card(tmp_path):
    source = model_file(tmp_path / "source.safetensors")
    folder = tmp_path / "models"
    folder.mkdir()
    incomplete = card()
    del incomplete["not_for"]
    with pytest.raises(CheckpointError, match=r"card of 'tiny': not_for is missing"):
        models.save_shipped(source, "tiny", incomplete, directory=folder)
    with pytest.raises(InputError, match=r"name 'x/y' is not a model name"):
        models.save_shipped(source, "x/y", card(), directory=folder)
    with pytest.raises(InputError, match=r"differs from the card's name 'tiny'"):
        models.save_shipped(source, "other", card(), directory=folder)
    assert not list(folder.iterdir())
    info = models.save_shipped(source, "tiny32", card("tiny32"), directory=folder, dtype="float32")
    assert _stored_dtypes(info.path) == {"F32"} and info.card["dtype"] == "float32"


# -- pretrained and fine-tuning --------------------------------------------------------------


def test_pretrained_loads_the_shipped_weights_into_a_backend(shipped, backend):
    from nucleuseg import Segmenter

    seg = Segmenter.pretrained("tiny", backend=backend)
    assert seg.backend == backend
    assert seg.preset == make_tiny_preset()
    expected = init_weights(make_tiny_preset().network, 5)
    for name, w in seg.get_weights().items():
        np.testing.assert_allclose(w, expected[name], rtol=1e-3, atol=1e-4)


def test_pretrained_defaults_to_the_first_installed_backend(shipped):
    from nucleuseg.backends import default_backend

    assert models.pretrained("tiny").backend == default_backend()


def test_fit_on_a_pretrained_model_starts_from_its_weights(shipped, monkeypatch):
    from nucleuseg import Segmenter, training

    backend_or_skip("torch")
    seen = {}
    original = training.train

    def spy(network, *args, **kwargs):
        seen["weights"] = network.get_weights()
        return original(network, *args, **kwargs)

    monkeypatch.setattr("nucleuseg.segmenter.train", spy)
    seg = Segmenter.pretrained("tiny", backend="torch")
    seg.fit(_in_memory_synthetic(2), epochs=1, progress=False)
    expected = checkpoint.load_model(shipped.path).weights
    assert seen["weights"].keys() == expected.keys()
    for name, w in expected.items():
        np.testing.assert_array_equal(seen["weights"][name], w)
    moved = seg.get_weights()
    assert any(not np.array_equal(moved[n], expected[n]) for n in expected)


# -- the command line ------------------------------------------------------------------------


def test_cli_lists_the_shipped_models_and_prints_a_card(shipped, capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "kinds", "DSB", "score", "description"]
    assert out[1].split() == [
        "tiny",
        "fluorescence,",
        "histology",
        "0.6123",
        "a",
        "tiny",
        "test",
        "model",
    ]
    assert cli.main(["models", "tiny"]) == 0
    assert capsys.readouterr().out == models.card_markdown("tiny")
    assert cli.main(["models", "nope"]) == 2
    assert "no shipped model named 'nope'; shipped models: tiny" in capsys.readouterr().err


def test_cli_models_with_none_shipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "DIRECTORY", tmp_path)
    assert cli.main(["models"]) == 0
    assert capsys.readouterr().out == "no shipped models\n"


def test_commands_take_a_shipped_name(shipped, tmp_path, capsys):
    backend_or_skip("torch")
    data = write_folders(tmp_path / "data")
    assert cli.main(["evaluate", "tiny", "--data", str(data), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "4 images" in out and "DSB score" in out
    assert (
        cli.main(["predict", "tiny", str(data / "images" / "s0.png"), "--out", str(tmp_path / "p")])
        == 0
    )
    assert list((tmp_path / "p").iterdir())
    capsys.readouterr()
    assert cli.main(["submit", "tiny", "--data", str(data), "--out", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().startswith("ImageId,EncodedPixels")
    assert cli.main(["evaluate", "nope", "--data", str(data)]) == 2
    assert (
        "nope: no such model file, nor a shipped model (shipped: tiny)" in capsys.readouterr().err
    )


def test_tune_never_writes_into_the_shipped_models(shipped, tmp_path, capsys):
    backend_or_skip("torch")
    data = write_folders(tmp_path / "data", n=7)
    before = shipped.path.read_bytes()
    assert cli.main(["tune", "tiny", "--data", str(data)]) == 2
    assert (
        "tiny is a shipped model, which tune never changes: give --out" in capsys.readouterr().err
    )
    inside = str(models.DIRECTORY / "tuned.safetensors")
    assert cli.main(["tune", "tiny", "--data", str(data), "--out", inside]) == 2
    assert "in the folder of the shipped models" in capsys.readouterr().err
    out = tmp_path / "tuned.safetensors"
    assert cli.main(["tune", "tiny", "--data", str(data), "--out", str(out)]) == 0
    assert checkpoint.load_model(out).preset.network == make_tiny_preset().network
    assert shipped.path.read_bytes() == before
    assert sorted(p.name for p in models.DIRECTORY.iterdir()) == ["tiny.json", "tiny.safetensors"]


def _train_spy(monkeypatch) -> dict:
    """Record the weights a Segmenter holds when fit begins."""
    from nucleuseg.segmenter import Segmenter

    seen = {}
    original = Segmenter.fit

    def fit(self, *args, **kwargs):
        seen["weights"] = self.get_weights()
        seen["preset"] = self.preset
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "fit", fit)
    return seen


def test_train_init_starts_from_the_model(shipped, tmp_path, monkeypatch, capsys):
    backend_or_skip("torch")
    seen = _train_spy(monkeypatch)
    data = write_folders(tmp_path / "data")
    out = tmp_path / "tuned.safetensors"
    args = ["train", "--init", "tiny", "--data", str(data), "--out", str(out), "--epochs", "1"]
    assert cli.main(args) == 0
    assert "(torch, tiny, from tiny)" in capsys.readouterr().out
    shipped_weights = checkpoint.load_model(shipped.path).weights
    for name, w in shipped_weights.items():
        np.testing.assert_array_equal(seen["weights"][name], w)
    assert seen["preset"] == make_tiny_preset()
    written = checkpoint.load_model(out)
    assert written.preset == make_tiny_preset()
    assert any(not np.array_equal(written.weights[n], w) for n, w in shipped_weights.items())


def test_train_init_takes_the_recipe_of_a_preset_with_the_same_network(
    shipped, tmp_path, monkeypatch
):
    backend_or_skip("torch")
    seen = _train_spy(monkeypatch)
    tiny = make_tiny_preset()
    recipe = tiny.replace(
        name="gentle",
        training=tiny.training.replace(learning_rate=1e-4, steps_per_epoch=1),
        inference=tiny.inference.replace(threshold=0.3),
    )
    preset_file = tmp_path / "gentle.json"
    preset_file.write_text(recipe.to_json())
    data = write_folders(tmp_path / "data")
    model = model_file(tmp_path / "start.safetensors", seed=7)  # a file works as well as a name
    out = tmp_path / "tuned.safetensors"
    args = ["train", "--init", str(model), "--preset", str(preset_file), "--data", str(data)]
    assert cli.main([*args, "--out", str(out), "--epochs", "1"]) == 0
    # the recipe of the preset; the network and inference settings of the model
    assert seen["preset"] == tiny.replace(training=recipe.training)
    for name, w in init_weights(tiny.network, 7).items():
        np.testing.assert_array_equal(seen["weights"][name], w)


def test_train_init_with_a_target_radius_predicts_auto_scaled(shipped, tmp_path, monkeypatch):
    backend_or_skip("torch")
    seen = _train_spy(monkeypatch)
    tiny = make_tiny_preset()
    recipe = tiny.replace(training=tiny.training.replace(target_radius=6.0, steps_per_epoch=1))
    preset_file = tmp_path / "scaled.json"
    preset_file.write_text(recipe.to_json())
    data = write_folders(tmp_path / "data")
    out = tmp_path / "scaled.safetensors"
    args = ["train", "--init", "tiny", "--preset", str(preset_file), "--data", str(data)]
    assert cli.main([*args, "--out", str(out), "--epochs", "1"]) == 0
    inference = tiny.inference.replace(auto_scale=True, target_radius=6.0)
    assert seen["preset"] == tiny.replace(training=recipe.training, inference=inference)
    assert checkpoint.load_model(out).preset.inference == inference


def test_train_init_refuses_a_preset_of_another_network(shipped, tmp_path, capsys):
    data = write_folders(tmp_path / "data")
    out = tmp_path / "m.safetensors"
    args = ["train", "--init", "tiny", "--preset", "seed", "--data", str(data), "--out", str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--preset seed: its network differs from that of --init tiny (depth 5 vs 3" in err
    assert "leave out --preset" in err
    assert not out.exists()
    assert cli.main(["train", "--init", "nope", "--data", str(data), "--out", str(out)]) == 2
    assert "nope: no such model file, nor a shipped model" in capsys.readouterr().err


# -- the models that ship --------------------------------------------------------------------


def test_the_owner_s_model_is_listed_once_it_ships():
    if (models.DIRECTORY / f"{models.DEFAULT_MODEL}.json").exists():
        assert models.DEFAULT_MODEL in [info.name for info in SHIPPED]
    assert all(info.path.parent == models.DIRECTORY for info in SHIPPED)


def test_the_default_model_ships_and_is_for_every_kind():
    info = models.get_model(models.DEFAULT_MODEL)
    assert set(info.kinds) == {"fluorescence", "brightfield", "histology"}
    assert cli._parser().parse_args(["demo"]).model == models.DEFAULT_MODEL


def test_nuclei_says_how_it_was_made_and_shares_he_s_network_and_settings():
    # nuclei = 0.7 x dsb2018 + 0.3 x he; he kept dsb2018's network and inference settings, and an
    # average keeps its first model's: the three must agree
    card = models.get_model("nuclei").card
    assert "average dsb2018.safetensors he --weights 0.7 0.3" in card["training"]["command"]
    nuclei = checkpoint.load_model(models.resolve_model("nuclei"))
    he = checkpoint.load_model(models.resolve_model("he"))
    assert nuclei.preset.network == he.preset.network
    assert nuclei.preset.inference == he.preset.inference
    assert nuclei.preset.inference.auto_scale and nuclei.preset.inference.target_radius == 9.0


# Each shipped model; while none ships, one case that checks the folder holds no card either.
@pytest.mark.parametrize(
    "info", SHIPPED or [None], ids=lambda info: info.name if info else "none-shipped"
)
def test_every_shipped_model_gives_the_same_labels_in_every_installed_backend(info):
    from nucleuseg import Segmenter

    if info is None:
        assert not list(models.DIRECTORY.glob("*.json"))
        return
    info.verify()
    assert info.card["dtype"] in checkpoint.DTYPES
    image = synthetic_sample(seed=11, size=160, kind="fluorescence").image
    results = {}
    for backend in installed_backends():
        seg = Segmenter.pretrained(info.name, backend=backend, device="cpu")
        results[backend] = (seg.predict_proba(image), seg.predict(image))
    assert results, "no backend installed"
    first_probs, first_labels = next(iter(results.values()))
    assert first_labels.max() > 0, f"{info.name} finds no nuclei in a synthetic image"
    for backend, (probs, labels) in results.items():
        assert float(np.abs(probs - first_probs).max()) <= 1e-4, backend
        np.testing.assert_array_equal(labels, first_labels, err_msg=backend)
