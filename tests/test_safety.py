"""Safety: no code path can unpickle, and files users keep are never left half-written.

The first half scans the package source (its syntax tree, so comments and docstrings that
mention pickle do not count) for calls that can run code from a file, and for writes that bypass
:mod:`nucleuseg._atomic`. The second half makes writers fail midway and checks that the target
keeps its old content and no temporary file is left behind.
"""

from __future__ import annotations

import ast
import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

import nucleuseg
from nucleuseg import checkpoint, rle
from nucleuseg.backends.base import init_weights
from nucleuseg.config import get_preset
from nucleuseg.data.cache import SampleCache, cache_key
from nucleuseg.errors import CheckpointError

PACKAGE = Path(nucleuseg.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


# --------------------------------------------------------------------------- static scan


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, ``""`` otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _attribute(node: ast.AST) -> str:
    """The called name: ``save`` for ``x.y.save(...)`` and for ``f(a).save(...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
}


def unsafe_loads(source: str) -> list[str]:
    """Calls in ``source`` that can execute code from a file, as ``line: description``."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = getattr(node, "module", None) or ""
            for name in [module, *names]:
                if name.split(".")[0] in UNSAFE_MODULES:
                    problems.append(f"{node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = _attribute(node.func)
        if name.split(".")[0] in UNSAFE_MODULES:
            problems.append(f"{node.lineno}: calls {name}")
        if name in ("torch.load",) and not _is_true(_keyword(node, "weights_only")):
            problems.append(f"{node.lineno}: torch.load without weights_only=True")
        allow = _keyword(node, "allow_pickle")
        if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
            problems.append(f"{node.lineno}: {name or 'a call'} with allow_pickle not False")
        if short == "load_model" and "keras" in name:
            problems.append(f"{node.lineno}: {name} (Keras model files can hold code)")
        if name in ("eval", "exec"):
            problems.append(f"{node.lineno}: calls {name}")
    return problems


# Calls that write a file, with the position of their destination argument.
WRITERS = {
    "savefig": 0,
    "save_file": 1,
    "savez": 0,
    "savez_compressed": 0,
    "np.save": 0,
    "numpy.save": 0,
    "imwrite": 0,
    "imsave": 0,
    "to_csv": 0,
}
# Destinations that are a temporary path or file object handed out by nucleuseg._atomic, an
# in-memory buffer, or a private staging folder (``work``, a ``tempfile.TemporaryDirectory`` whose
# result is then moved into place atomically): the names the package uses for them. A path built
# from one of them (``work / "x.npy"``, ``Path(tmp)``) is as safe.
SAFE_DESTINATIONS = {"tmp", "handle", "buffer", "work"}


def _safe_destination(node) -> bool:
    if isinstance(node, ast.Name):
        return node.id in SAFE_DESTINATIONS
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _safe_destination(node.left)
    if isinstance(node, ast.Call) and _dotted(node.func) in ("Path", "pathlib.Path") and node.args:
        return _safe_destination(node.args[0])
    return False


def unsafe_writes(source: str) -> list[str]:
    """Writes in ``source`` that do not go through nucleuseg._atomic."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = _attribute(node.func)
        if short in ("write_text", "write_bytes") and not (
            isinstance(node.func, ast.Attribute) and _safe_destination(node.func.value)
        ):
            problems.append(f"{node.lineno}: {name} writes in place")
        if name in ("open", "io.open", "os.fdopen") or (short == "open" and name.endswith(".open")):
            mode = node.args[1] if len(node.args) > 1 else _keyword(node, "mode")
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
                if set(mode.value) & set("wax+"):
                    problems.append(f"{node.lineno}: {name}(..., {mode.value!r}) writes in place")
        position = WRITERS.get(name, WRITERS.get(short) if short != "save" else None)
        if position is not None:
            args = node.args
            target = args[position] if len(args) > position else None
            if not (target is not None and _safe_destination(target)):
                shown = ast.unparse(target) if target is not None else "?"
                problems.append(f"{node.lineno}: {name}({shown}) bypasses nucleuseg._atomic")
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_no_code_path_can_unpickle(path):
    assert unsafe_loads(path.read_text(encoding="utf-8")) == []


# nucleuseg/_atomic.py is the one module allowed to open files for writing.
WRITING_SOURCES = [p for p in SOURCES if p.name != "_atomic.py"]


@pytest.mark.parametrize(
    "path", WRITING_SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in WRITING_SOURCES]
)
def test_user_kept_files_are_written_atomically(path):
    assert unsafe_writes(path.read_text(encoding="utf-8")) == []


def test_the_scans_catch_what_they_look_for():
    bad_loads = """
import pickle
from joblib import load
x = pickle.loads(data)
m = torch.load(path)
m = torch.load(path, weights_only=False)
a = np.load(path, allow_pickle=True)
k = keras.models.load_model("m.h5")
eval(text)
"""
    assert len(unsafe_loads(bad_loads)) == 8
    good_loads = """
m = torch.load(path, weights_only=True)
a = np.load(path, allow_pickle=False)
b = np.load(path)
text = "pickle.load is never called"  # pickle.load(...)
"""
    assert unsafe_loads(good_loads) == []
    bad_writes = """
fig.savefig(path)
save_file(tensors, path)
np.savez(path, **arrays)
np.save(path, array)
tifffile.imwrite(path, image)
open(path, "w")
open(path, mode="wb")
Path(path).write_text("x")
"""
    assert len(unsafe_writes(bad_writes)) == 8
    good_writes = """
atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
atomic_save(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
np.savez(handle, **arrays)
tifffile.imwrite(buffer, image)
open(path, "rb")
seg.save(path)
"""
    assert unsafe_writes(good_writes) == []


# --------------------------------------------------------------------------- pickles never run


class _Payload:
    """Unpickling this writes a file: proof of code execution."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


def test_a_pickle_in_a_cache_entry_is_discarded_never_run(tmp_path):
    marker = tmp_path / "executed.txt"
    cache = SampleCache(tmp_path / "cache")
    key = cache_key([], extra="planted")
    cache.put(key, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int32), "fluorescence")
    path = cache.path(key)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["image"] = np.array([_Payload(marker)], dtype=object)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)  # np.savez pickles object arrays
    assert cache.get(key) is None
    assert not path.exists(), "the damaged entry must be deleted"
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth", ".pkl", ".ckpt", ".npy"])
def test_pickles_under_any_name_are_refused_never_run(tmp_path, suffix):
    marker = tmp_path / "executed.txt"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="pickle"):
        nucleuseg.Segmenter.load(path)
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.read_training_state(path, get_preset("default").network)
    assert not marker.exists(), "the pickle payload ran"


# --------------------------------------------------------------------------- nothing lost

OLD = b"previous content, kept\n"


class _WriteFailed(OSError):
    """A write that fails midway (a full disk)."""


def _only(folder: Path, name: str) -> None:
    """``folder`` holds ``name`` with its old content and nothing else (no temporary file)."""
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert (folder / name).read_bytes() == OLD


def test_a_failing_submission_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "submission.csv"
    target.write_bytes(OLD)
    real_writer = csv.writer

    class HalfWriter:
        def __init__(self, handle, **kwargs):
            self.inner = real_writer(handle, **kwargs)

        def writerow(self, row):
            self.inner.writerow(row)

        def writerows(self, rows):
            rows = list(rows)
            self.inner.writerows(rows[: len(rows) // 2])
            raise _WriteFailed("No space left on device")

    monkeypatch.setattr(rle.csv, "writer", HalfWriter)
    labels = np.zeros((8, 8), np.int32)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 2
    with pytest.raises(_WriteFailed):
        rle.write_submission({"a": labels, "b": labels}, target)
    _only(tmp_path, "submission.csv")
    with pytest.raises(_WriteFailed):
        rle.write_solution({"a": labels}, target)
    _only(tmp_path, "submission.csv")


def test_an_interrupted_submission_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "submission.csv"
    target.write_bytes(OLD)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rle, "encode_labels", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rle.write_submission({"a": np.ones((4, 4), np.int32)}, target)
    _only(tmp_path, "submission.csv")


def test_a_failing_figure_write_keeps_the_old_file(tmp_path):
    pytest.importorskip("matplotlib")
    from nucleuseg import viz
    from nucleuseg.training import EpochRecord, History

    history = History(epochs=[EpochRecord(1, 0.5, 0.3, 1e-3, 1.0)])
    fig = viz.plot_history(history)
    target = tmp_path / "training.png"
    target.write_bytes(OLD)
    real = fig.savefig

    def half_then_fail(path, **kwargs):
        real(path, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise _WriteFailed("No space left on device")

    fig.savefig = half_then_fail
    with pytest.raises(_WriteFailed):
        viz.save_figure(fig, target)
    _only(tmp_path, "training.png")
    fig.savefig = real
    viz.save_figure(fig, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training.png"]


def test_a_failing_model_write_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.numpy

    preset = get_preset("default")
    preset = preset.replace(network=preset.network.replace(depth=2, base_filters=2))
    target = tmp_path / "model.safetensors"
    target.write_bytes(OLD)
    real = safetensors.numpy.save_file

    def half_then_fail(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        Path(path).write_bytes(Path(path).read_bytes()[:64])
        raise _WriteFailed("No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_then_fail)
    with pytest.raises(_WriteFailed):
        checkpoint.save_model(target, init_weights(preset.network, 0), preset, "torch")
    _only(tmp_path, "model.safetensors")


def test_a_failing_cache_write_leaves_no_entry_and_no_temporary(tmp_path, monkeypatch):
    cache = SampleCache(tmp_path / "cache")
    key = cache_key([], extra="x")
    real = np.savez

    def half_then_fail(handle, **arrays):
        real(handle, **arrays)
        handle.truncate(50)
        raise _WriteFailed("No space left on device")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.warns(RuntimeWarning, match="cannot write the sample cache"):
        cache.put(key, np.zeros((4, 4, 3), np.uint8), None, "fluorescence")
    assert list((tmp_path / "cache" / "samples").iterdir()) == []
    assert cache.get(key) is None
