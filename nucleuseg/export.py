"""Models as files other tools run: the U-Net as an ONNX graph, and bioimage.io model packages.

:func:`export_bioimageio` (from :mod:`nucleuseg.bioimageio`, extra ``bioimageio``) writes a
bioimage.io package: ONNX and TorchScript weights, test tensors, a cover, the model card and the
input normalisation in the spec's terms, for deepImageJ, ilastik and ``bioimageio.core``.

:func:`export_onnx` writes the graph that the ``"onnx"`` backend runs
(:func:`nucleuseg.backends.onnx_backend.build_onnx_model`), built from the canonical weights of a
:class:`~nucleuseg.Segmenter` or a model file, so any ONNX runtime (ONNX Runtime in C++, C#, Java
or JavaScript, OpenCV's DNN module, ...) predicts what nucleuseg predicts. It needs the ``onnx``
extra (``pip install "nucleuseg[onnx]"``) and no deep-learning framework.

The file holds the network only: input ``image``, a ``float32`` NHWC batch normalised as
:func:`nucleuseg.transforms.normalize` does it, height and width multiples of
``2 ** (depth - 1)``; output ``probabilities``, the sigmoid channels, NHWC. Normalisation, tiling
and the post-processing that turns probabilities into nuclei
(:func:`nucleuseg.postprocess.to_instances`) stay outside it.

Examples
--------
>>> import tempfile, pathlib
>>> import nucleuseg as ns
>>> seg = ns.Segmenter("onnx", preset="seed")
>>> path = export_onnx(seg, pathlib.Path(tempfile.mkdtemp()) / "nuclei.onnx")
>>> import onnxruntime, numpy as np
>>> session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
>>> session.run(None, {"image": np.zeros((1, 64, 64, 3), np.float32)})[0].shape
(1, 64, 64, 1)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nucleuseg import checkpoint
from nucleuseg._atomic import atomic_write
from nucleuseg._extras import require
from nucleuseg.errors import InputError

#: The formats :func:`export_model` writes.
FORMATS = ("onnx", "bioimageio")


def export_onnx(model: Any, path: str | os.PathLike) -> Path:
    """Write the U-Net of ``model`` to ``path`` as an ONNX model (see the module docstring).

    Parameters
    ----------
    model : Segmenter, str or os.PathLike
        A :class:`~nucleuseg.Segmenter` (on any backend: its canonical weights are exported), a
        model file (``.safetensors``, read without building any backend) or the name of a
        shipped model (:func:`nucleuseg.models.resolve_model`).
    path : str or os.PathLike
        The ``.onnx`` file to write (atomically); its folder must exist.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ExtraMissing
        If ``onnx`` or ``onnxruntime`` is not installed (names the ``onnx`` extra).
    InputError
        If ``path`` is a folder or its folder does not exist.
    CheckpointError
        If ``model`` is neither a nucleuseg model file nor a shipped model's name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import nucleuseg as ns
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> ns.Segmenter("onnx", preset="seed").save(folder / "nuclei.safetensors")
    >>> export_onnx(folder / "nuclei.safetensors", folder / "nuclei.onnx").stat().st_size > 1e6
    True
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"path {target}: is a folder; give a file name")
    if not target.parent.is_dir():
        raise InputError(f"path {target}: folder {target.parent} does not exist")
    require("onnxruntime", "onnx", "ONNX export")
    require("onnx", "onnx", "ONNX export")
    from nucleuseg.backends.onnx_backend import build_onnx_model

    if isinstance(model, str | os.PathLike):
        from nucleuseg.models import resolve_model

        loaded = checkpoint.load_model(resolve_model(model))
        config, weights = loaded.preset.network, loaded.weights
    else:
        config, weights = model.preset.network, model.get_weights()
    onnx_model = build_onnx_model(config, weights)
    with atomic_write(target, "wb") as handle:
        handle.write(onnx_model.SerializeToString())
    return target


def export_bioimageio(model: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip``); see
    :func:`nucleuseg.bioimageio.export_bioimageio` for ``options`` (``polarity``,
    ``torchscript``, ``test_size``).

    Examples
    --------
    >>> export_bioimageio("nuclei.safetensors", "out.zip", polarity="sideways")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.InputError: polarity must be one of ('bright', 'dark'), got 'sideways'
    """
    from nucleuseg.bioimageio import export_bioimageio as export

    return export(model, path, **options)


def export_model(model: Any, path: str | os.PathLike, format: str = "onnx", **options: Any) -> Path:
    """Write ``model`` to ``path`` in ``format`` (one of :data:`FORMATS`); what
    ``nucleuseg export`` calls. ``options`` go to :func:`export_bioimageio`.

    Examples
    --------
    >>> export_model("nuclei.safetensors", "out.zip", format="zip")
    Traceback (most recent call last):
    ...
    nucleuseg.errors.InputError: format 'zip' is not an export format; use one of ('onnx', 'bioimageio')
    """
    if format not in FORMATS:
        raise InputError(f"format {format!r} is not an export format; use one of {FORMATS}")
    if format == "bioimageio":
        return export_bioimageio(model, path, **options)
    if options:
        raise InputError(f"options {sorted(options)} are for the bioimageio format, not onnx")
    return export_onnx(model, path)
