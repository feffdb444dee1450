"""pytest configuration for doctests: backend modules are collected only where their framework is,
the search module only where optuna is, the large-image module only where dask and zarr are, the
export module only where onnx and ONNX Runtime are, the bioimage.io module only where
bioimageio.spec, onnx and ONNX Runtime are."""

import importlib.util

from nucleuseg.backends import builtin_backends

collect_ignore = [
    backend.module.replace(".", "/") + ".py"
    for backend in builtin_backends().values()
    if importlib.util.find_spec(backend.framework) is None
]
if importlib.util.find_spec("optuna") is None:
    collect_ignore.append("nucleuseg/search.py")
if any(importlib.util.find_spec(m) is None for m in ("dask", "zarr")):
    collect_ignore.append("nucleuseg/large.py")
if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
    collect_ignore.append("nucleuseg/export.py")
if any(importlib.util.find_spec(m) is None for m in ("bioimageio", "onnx", "onnxruntime")):
    collect_ignore.append("nucleuseg/bioimageio.py")
